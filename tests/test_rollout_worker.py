"""`rollout.placement: worker`: the generator in its own process, running ahead within the sync
window. Everything runs for real: a spawned worker process, safetensors snapshots in /dev/shm,
the tiny policy. The colocated run is the reference: the worker must give the same rollouts and
the same final weights, after running ahead, after being SIGKILLed and after a resume.
"""

import json
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.train import checkpoint as ckpt
from harness.config import INF, load_run_config
from harness.errors import ConfigError
from harness.rollout import placement, worker_client
from harness.rollout.schedule import (
    GeneratorScheduleError,
    check_generator_version,
    scheduled_version,
    step_seed,
    window_end,
)
from harness.rollout.snapshots import ROOT_PREFIX, SnapshotStore, read_snapshot, remove_orphans
from harness.tracking import MemoryTracker
from harness.train.trainer import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
# sync_every 5 over 6 steps: one window of five steps generated ahead, then a sync.
COMMON = [
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=32",
    "validation.prompts=4",
    "validation.every=100",
    "checkpoint.every=100",
    "train.lr=1e-3",
    "sync_every=5",
    "train.steps=6",
]


def recorded_run(out_dir: Path, *overrides, tracker=None, resume=False):
    """Train, recording what every step received from its rollout source (a spy, not a stand-in)."""
    cfg = load_run_config(TINY, [*COMMON, f"output_dir={out_dir}", *overrides])
    received = []

    def spy(original):
        def rollouts(self, step):
            produced = original(self, step)
            received.append(
                {
                    "step": step,
                    "version": produced.version,
                    "tokens": [[r.token_ids for r in group] for group in produced.groups],
                    "requested_until": getattr(self, "next_step", None),
                    "outstanding": len(getattr(self, "requests", ())),
                }
            )
            return produced

        return rollouts

    tracker = tracker or MemoryTracker()
    with pytest.MonkeyPatch.context() as patch:
        for cls in (placement.ColocatedRollouts, worker_client.WorkerRollouts):
            patch.setattr(cls, "rollouts", spy(cls.rollouts))
        result = train(cfg, tracker=tracker, resume=resume, progress=False)
    return tracker, result, received


def final_weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.list_checkpoints(result.output_dir)[-1][1] / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def series(tracker, key):
    return [value for step, value in tracker.series(key) if step > 0]


@pytest.fixture(scope="module")
def colocated(tiny_assets, tmp_path_factory):
    return recorded_run(tmp_path_factory.mktemp("colocated") / "run")


# -- the schedule ------------------------------------------------------------------------


def test_schedule_assigns_one_snapshot_per_window_and_the_check_raises_on_any_other():
    assert [scheduled_version(t, 5) for t in range(11)] == [0] * 5 + [1] * 5 + [2]
    assert [scheduled_version(t, INF) for t in (0, 7, 1000)] == [0, 0, 0]
    assert [scheduled_version(t, 1) for t in range(4)] == [0, 1, 2, 3]
    assert [window_end(t, 5, 12) for t in (0, 4, 5, 9, 10)] == [5, 5, 10, 10, 12]
    assert window_end(3, INF, 40) == 40 and window_end(3, 1, 40) == 4  # online: never ahead
    check_generator_version(7, 1, 5)
    with pytest.raises(GeneratorScheduleError, match="step 6: .*version 0.*assigns version 1"):
        check_generator_version(5, 0, 5)  # the first step of window 1 generated before its snapshot
    with pytest.raises(GeneratorScheduleError):
        check_generator_version(4, 1, 5)  # a step of window 0 generated from the next snapshot
    with pytest.raises(GeneratorScheduleError):
        check_generator_version(9, 1, INF)  # offline never leaves the seed
    assert step_seed(0, 3) == step_seed(0, 3) != step_seed(0, 4) != step_seed(1, 4)


def test_placement_keys_are_validated_before_any_work():
    with pytest.raises(ConfigError, match=r"rollout.placement.*nowhere"):
        load_run_config(TINY, ["rollout.placement=nowhere"])
    with pytest.raises(ConfigError, match=r"rollout.worker_device.*cuda:1.*replaced by `rollout.devices`"):
        load_run_config(TINY, ["rollout.placement=worker", "rollout.worker_device=cuda:1"])
    for bad, expected in (
        ("rollout.devices=gpu0", "CUDA device ids"),
        ("rollout.devices=[1,GPU-]", "CUDA device ids"),
        ("rollout.devices=[1,1]", "once"),
        ("rollout.devices=-1", "CUDA device ids"),
        ("rollout.devices=[]", "non-empty"),
    ):
        with pytest.raises(ConfigError, match=rf"rollout.devices.*{expected}"):
            load_run_config(TINY, ["rollout.placement=worker", "rollout.backend=vllm", bad])
    with pytest.raises(ConfigError, match=r"rollout.devices.*need `rollout.placement=worker`"):
        load_run_config(TINY, ["rollout.devices=1"])
    with pytest.raises(ConfigError, match=r"hf backend runs on one device"):
        load_run_config(TINY, ["rollout.placement=worker", "rollout.devices=6,7"])
    with pytest.raises(ConfigError, match=r"tensor_parallel_size` = 4 is more than the 2 GPU"):
        load_run_config(
            TINY,
            [
                "rollout.placement=worker",
                "rollout.backend=vllm",
                "rollout.devices=6,7",
                "rollout.vllm.tensor_parallel_size=4",
            ],
        )
    with pytest.raises(ConfigError, match=r"rollout.queue_depth"):
        load_run_config(TINY, ["rollout.queue_depth=0"])
    cfg = load_run_config(TINY, ["rollout.placement=worker", "rollout.devices=1", "rollout.queue_depth=2"])
    assert (cfg.rollout.placement, cfg.rollout.devices, cfg.rollout.queue_depth) == ("worker", [1], 2)
    assert load_run_config(TINY).rollout.placement == "colocated"


def test_generator_devices_come_from_the_key_else_the_launcher_and_set_the_tensor_parallel_size(monkeypatch):
    from harness.rollout import generator_options

    vllm_worker = ["rollout.placement=worker", "rollout.backend=vllm"]
    monkeypatch.delenv("HARNESS_GENERATOR_DEVICES", raising=False)
    assert generator_options(load_run_config(TINY, vllm_worker))["tensor_parallel_size"] == 1
    assert generator_options(load_run_config(TINY, [*vllm_worker, "rollout.devices=6,7"]))["tensor_parallel_size"] == 2
    monkeypatch.setenv("HARNESS_GENERATOR_DEVICES", "4,5,6")  # as the submitit launcher exports them
    assert generator_options(load_run_config(TINY, vllm_worker))["tensor_parallel_size"] == 3
    assert (
        generator_options(load_run_config(TINY, [*vllm_worker, "rollout.vllm.tensor_parallel_size=1"]))[
            "tensor_parallel_size"
        ]
        == 1
    )  # an explicit size wins
    assert generator_options(load_run_config(TINY, ["rollout.backend=vllm"]))["tensor_parallel_size"] == 1  # colocated
    monkeypatch.setenv("HARNESS_GENERATOR_DEVICES", "4,x")
    with pytest.raises(ConfigError, match=r"HARNESS_GENERATOR_DEVICES = '4,x'.*CUDA device ids"):
        generator_options(load_run_config(TINY, vllm_worker))


def test_a_worker_started_with_devices_sees_exactly_those_devices(tiny_assets, monkeypatch):
    """The real spawned worker's environment (/proc/<pid>/environ), checked without CUDA: the worker
    then fails to build on cuda:0, which is expected here and stopped by close()."""
    from harness.models import load_policy

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # the trainer's own view: the worker must not inherit it
    monkeypatch.setenv("HARNESS_GENERATOR_DEVICES", "2")  # the key wins over the launcher's export
    cfg = load_run_config(
        TINY, ["rollout.placement=worker", "rollout.backend=hf", "rollout.devices=3", "model.device=cpu"]
    )
    model, tokenizer = load_policy(tiny_assets.policy_dir)
    client = worker_client.WorkerRollouts(cfg, model, tokenizer, plan=None)
    try:
        pid = client.handles["process"].pid
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")  # read at once: it is still importing
        assert [e for e in environ if e.startswith(b"CUDA_VISIBLE_DEVICES=")] == [b"CUDA_VISIBLE_DEVICES=3"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # the trainer's environment is left as it was
        assert client.spec.device == "cuda:0"  # the first (only) device of its own set
        with client.inbox.cond:  # and the worker itself reports what it sees
            client.inbox.cond.wait_for(lambda: client.inbox.visible_devices or client.inbox.eof, timeout=120)
        assert client.inbox.visible_devices == "3"
    finally:
        client.close()


def test_validation_goes_before_the_steps_the_worker_queued_ahead(tiny_assets):
    """Offline (sync_every inf), the worker has three steps queued when validation asks it to sample:
    the sample is served next, so at most the step already being generated comes back before it.
    In order (as before), all three steps came first while the trainer sat waiting."""
    from harness.chat import chat_prompt
    from harness.models import load_policy
    from harness.rollout import SamplingParams
    from harness.rollout.schedule import StepPlan
    from harness.tasks import TaskMixture, task_pools

    overrides = ["rollout.placement=worker", "sync_every=inf", "rollout.queue_depth=3", "train.steps=10"]
    overrides += ["train.prompts_per_step=16", "train.samples_per_prompt=8", "train.max_new_tokens=64"]
    cfg = load_run_config(TINY, overrides)
    model, tokenizer = load_policy(tiny_assets.policy_dir)
    sampling = SamplingParams(n=8, max_new_tokens=64)
    mixture = TaskMixture(task_pools(cfg.task_mix, cfg.data, "train"), 0.5, cfg.seed)
    plan = StepPlan(mixture, 16, sampling, cfg.seed, lambda text: chat_prompt(tokenizer, text))
    client = worker_client.WorkerRollouts(cfg, model, tokenizer, plan)
    try:
        client.start(0)  # steps 0, 1 and 2 requested at once
        assert sorted(client.requests) == [0, 1, 2]
        groups = client.sample_with(model.state_dict(), ["2 + 3 ="], SamplingParams(n=1, max_new_tokens=4, seed=1))
        with client.inbox.cond:
            delivered = sorted(key for key in client.inbox.results if isinstance(key, int))
        assert len(groups) == 1 and len(delivered) <= 1, delivered
        assert [client.rollouts(step).step for step in range(3)] == [0, 1, 2]  # the steps still all come
    finally:
        client.close()


# -- weight transport --------------------------------------------------------------------


def test_snapshots_are_whole_versioned_folders_with_tied_weights_apart(tiny_assets, tmp_path):
    from harness.models import load_policy

    model, tokenizer = load_policy(tiny_assets.policy_dir)
    state = model.state_dict()
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied: one storage, two names
    store = SnapshotStore(tmp_path, model.config, tokenizer)
    for serial in range(4):
        path = store.write(serial, {k: v + serial for k, v in state.items()})
    assert sorted(p.name for p in store.root.iterdir()) == ["snapshot_000002", "snapshot_000003"]  # two kept, no temp
    serial, weights = read_snapshot(path)
    assert serial == 3 and set(weights) == set(state)
    assert torch.equal(weights["lm_head.weight"], state["model.embed_tokens.weight"] + 3)
    assert (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()
    orphan = tmp_path / f"{ROOT_PREFIX}999999999-x"  # a root whose process is gone
    orphan.mkdir()
    remove_orphans(tmp_path)
    assert not orphan.exists() and store.root.exists()
    store.close()
    assert not store.root.exists()


# -- the worker in training --------------------------------------------------------------


def test_worker_running_ahead_gives_the_colocated_rollouts_and_weights(colocated, tmp_path):
    tracker, result, received = recorded_run(tmp_path / "worker", "rollout.placement=worker")
    reference_tracker, reference_result, reference = colocated
    assert [r["tokens"] for r in received] == [r["tokens"] for r in reference]
    assert_same_weights(final_weights(result), final_weights(reference_result))
    assert series(tracker, "train/generator_version") == [0, 0, 0, 0, 0, 1]
    assert series(tracker, "train/generator_version") == series(reference_tracker, "train/generator_version")
    assert series(tracker, "train/loss") == series(reference_tracker, "train/loss")
    # It ran ahead: at the first step the whole window (steps 1-5) was requested, never step 6.
    assert [r["requested_until"] for r in received] == [5, 5, 5, 5, 5, 6]
    assert all(value >= 0 for value in series(tracker, "time/generate_wait_s"))
    # colocated: the trainer waits for exactly the generation
    assert series(reference_tracker, "time/generate_wait_s") == series(reference_tracker, "time/generate_s")
    assert not list(Path("/dev/shm").glob(f"{ROOT_PREFIX}{os.getpid()}-*"))  # snapshots removed at the end


class KillWorkerAt(MemoryTracker):
    """SIGKILLs the real worker process right after a given step is logged."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step
        self.killed: list[int] = []

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, step)
        if step == self.step and "train/loss" in metrics and not self.killed:
            workers = [p for p in multiprocessing.active_children() if p.name == worker_client.WORKER_NAME]
            assert len(workers) == 1
            os.kill(workers[0].pid, signal.SIGKILL)
            self.killed.append(workers[0].pid)


def test_a_killed_worker_is_restarted_from_the_last_snapshot_and_the_run_is_unchanged(colocated, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="harness.rollout")
    tracker = KillWorkerAt(step=1)  # mid-window: steps 2-5 are requested, the worker is generating them
    tracker, result, received = recorded_run(tmp_path / "killed", "rollout.placement=worker", tracker=tracker)
    assert tracker.killed
    assert f"rollout worker pid {tracker.killed[0]} died (killed by SIGKILL)" in caplog.text
    assert re.search(r"requesting steps \d", caplog.text)  # in-flight steps were asked for again
    _, reference_result, reference = colocated
    assert [r["tokens"] for r in received] == [r["tokens"] for r in reference]
    assert_same_weights(final_weights(result), final_weights(reference_result))
    assert series(tracker, "train/generator_version") == [0, 0, 0, 0, 0, 1]


class StopWorkerAt(KillWorkerAt):
    """SIGSTOPs the real worker process (alive, but it never answers again) after a given step."""

    def log_metrics(self, metrics, step=None):
        MemoryTracker.log_metrics(self, metrics, step)
        if step == self.step and "train/loss" in metrics and not self.killed:
            workers = [p for p in multiprocessing.active_children() if p.name == worker_client.WORKER_NAME]
            os.kill(workers[0].pid, signal.SIGSTOP)
            self.killed.append(workers[0].pid)


def test_a_hung_worker_is_killed_after_the_timeout_and_the_run_is_unchanged(colocated, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="harness.rollout")
    # Stopped after step 1, while steps 2-5 are requested: alive, silent. Without the timeout: wait forever.
    tracker = StopWorkerAt(step=1)
    tracker, result, received = recorded_run(
        tmp_path / "hung", "rollout.placement=worker", "rollout.worker_timeout_s=3", tracker=tracker
    )
    assert tracker.killed
    assert f"rollout worker pid {tracker.killed[0]} has not delivered step" in caplog.text
    assert f"rollout worker pid {tracker.killed[0]} died (hung: no rollouts for step" in caplog.text
    _, reference_result, reference = colocated
    assert [r["tokens"] for r in received] == [r["tokens"] for r in reference]
    assert_same_weights(final_weights(result), final_weights(reference_result))


def test_running_past_the_sync_boundary_is_caught(tiny_assets, tmp_path, monkeypatch):
    # A scheduler bug that lets the worker generate the next window from the old snapshot.
    monkeypatch.setattr(worker_client, "window_end", lambda step, sync_every, total: total)
    cfg = load_run_config(
        TINY, [*COMMON, "sync_every=2", "train.steps=3", "rollout.placement=worker", f"output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(GeneratorScheduleError, match="step 3: its rollouts came from generator version 0"):
        train(cfg, tracker=MemoryTracker(), progress=False)
    assert not [p for p in multiprocessing.active_children() if p.name == worker_client.WORKER_NAME]


def test_offline_runs_every_step_ahead_within_the_queue_depth(tiny_assets, tmp_path):
    tracker, _, received = recorded_run(
        tmp_path / "offline", "rollout.placement=worker", "sync_every=inf", "train.steps=4", "rollout.queue_depth=2"
    )
    assert [r["requested_until"] for r in received] == [3, 4, 4, 4]
    assert max(r["outstanding"] for r in received) <= 2  # memory stays flat
    assert series(tracker, "train/generator_version") == [0, 0, 0, 0]


def test_resume_with_worker_placement_is_exact(colocated, tmp_path):
    split = tmp_path / "split"
    recorded_run(split, "rollout.placement=worker", "train.steps=3", "checkpoint.every=3")  # "killed" after step 3
    tracker, result, received = recorded_run(split, "rollout.placement=worker", "checkpoint.every=3", resume=True)
    assert [step for step, _ in tracker.series("train/loss")] == [4, 5, 6]
    assert series(tracker, "train/generator_version") == [0, 0, 1]
    _, reference_result, reference = colocated
    assert [r["tokens"] for r in received] == [r["tokens"] for r in reference[3:]]
    assert_same_weights(final_weights(result), final_weights(reference_result))


# -- harness bench comparison mode -------------------------------------------------------


def test_bench_compares_sync_intervals_and_ends_with_one_json_list(tiny_assets, tmp_path):
    small = [
        "train.prompts_per_step=2",
        "train.samples_per_prompt=2",
        "train.max_new_tokens=16",
        "validation.prompts=2",
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "bench",
            str(TINY),
            "--sync-every",
            "1,inf",
            "rollout.placement=worker",
            *small,
            "--steps",
            "2",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [row["sync_every"] for row in rows] == [1, "inf"]
    for row in rows:
        assert {"sync_every", "per_step_s", "wall_s", "generate_wait_s", "speedup"} <= set(row)
        assert row["placement"] == "worker" and row["per_step_s"] > 0 and row["wall_s"] > row["per_step_s"]
    assert rows[0]["speedup"] == 1.0
    assert "speed-up" in out.stdout


def test_bench_rejects_a_bad_interval_list_before_any_work(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "bench", str(TINY), "--sync-every", "1,ten"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--sync-every 1,ten" in out.stderr and "'ten'" in out.stderr
