"""Faults that long runs meet, on real processes, signals and filesystems.

- Preemption: SIGTERM (Slurm's time limit) or SIGUSR1 (`sbatch --signal`) to a running
  `harness train`: the step finishes, a checkpoint is written, the process exits 75 (requeue),
  the MLflow run is KILLED (not FAILED), and `--resume` continues into the same run to the same
  final weights as an uninterrupted run.
- A full disk: a checkpoint that cannot fit is refused before anything is written, naming the
  folder and the bytes (a real tmpfs the test mounts); a write that fails halfway (the disk fills
  anyway) leaves no half-written folder; `--resume` continues from the last complete checkpoint.
- The tracking server lost mid-run: a real `mlflow server` is stopped while `harness train` logs
  to it and started again; the run keeps training, its buffered metrics arrive, and there is one
  MLflow run with every step. A server that never comes back fails the run after
  HARNESS_TRACKING_WAIT_S with one paragraph.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from harness.train import checkpoint as ckpt
from servers import MlflowServer

pytestmark = pytest.mark.slow  # `harness train` subprocesses

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "sweeps" / "runs" / "tiny.yaml")
SMALL = [
    "train.steps=6",
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=40",
    "validation.every=100",
    "validation.prompts=8",
    "checkpoint.every=100",
    "sync_every=2",
    "train.lr=1e-3",
]


def env_for(tmp_path: Path) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    return env


def train_process(tmp_path: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "train", TINY, *SMALL, f"output_dir={out}", "--no-progress", *extra],
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_run(tmp_path: Path, overrides: list[str], out: Path, *flags: str) -> subprocess.CompletedProcess:
    """`harness train` on the tiny run with `overrides` into `out`, without MLflow, to its end."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "train",
            TINY,
            *overrides,
            f"output_dir={out}",
            "--no-progress",
            "--no-mlflow",
            *flags,
        ],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.list_checkpoints(out)[-1][1] / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_assets, tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp_path = tmp_path_factory.mktemp("straight")
    straight = train_run(tmp_path, SMALL, tmp_path / "run")
    assert straight.returncode == 0, straight.stderr[-3000:]
    return final_weights(tmp_path / "run")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_signalled_run_checkpoints_exits_for_requeue_and_resumes_to_the_same_weights(uninterrupted, tmp_path, signum):

    out = tmp_path / "preempted"
    process = train_process(tmp_path, out)
    lines = []
    for line in process.stdout:  # the signal lands once training steps are running
        lines.append(line)
        if "validation at step 0" in line:
            time.sleep(1.0)
            process.send_signal(signum)
            break
    lines += process.stdout.readlines()
    code = process.wait(timeout=600)
    log = "".join(lines)
    assert code == 75, log[-3000:]
    stopped_at = ckpt.list_checkpoints(out)[-1][0]
    assert 1 <= stopped_at < 6, log[-3000:]
    assert f"{signal.Signals(signum).name} received; stopped after step {stopped_at} of 6" in log
    assert not list((out / "checkpoints").glob(".tmp_*"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs(client.get_experiment_by_name("tiny").experiment_id)
    assert run.info.status == "KILLED" and "harness.preempted" in run.data.tags and "harness.error" not in run.data.tags

    resumed = subprocess.run(
        [sys.executable, "-m", "harness.cli", "train", TINY, *SMALL, f"output_dir={out}", "--no-progress", "--resume"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run,) = client.search_runs(client.get_experiment_by_name("tiny").experiment_id)  # the same run, continued
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert steps == [1, 2, 3, 4, 5, 6]
    got = final_weights(out)
    for key in uninterrupted:
        assert torch.allclose(uninterrupted[key], got[key], atol=1e-6), key


def run_until_validated(env: dict, tmp_path: Path, out: str, steps: int, at_step_0) -> tuple[int, str]:
    """`harness train` logging to `env`'s tracking server; `at_step_0()` runs once step 0 is validated."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "train",
            TINY,
            *SMALL,
            f"train.steps={steps}",
            f"output_dir={tmp_path / out}",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "validation at step 0" in line:
            at_step_0()
            break
    lines += process.stdout.readlines()
    return process.wait(timeout=600), "".join(lines)


def test_a_tracking_server_lost_mid_run_gets_every_metric_and_one_that_stays_down_fails_the_run(tiny_assets, tmp_path):
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    servers = [MlflowServer.start(tmp_path / "server", backend)]
    port = int(servers[0].url.rsplit(":", 1)[1])
    env = {**env_for(tmp_path), "MLFLOW_TRACKING_URI": servers[0].url, "HARNESS_TRACKING_WAIT_S": "300"}

    def outage():  # mid-run: steps 1.. are logged while nothing answers, then a new server process
        servers[-1].stop()
        time.sleep(5)
        servers.append(MlflowServer.launch(tmp_path / "server", backend, port=port))

    try:
        steps = 10
        code, log = run_until_validated(env, tmp_path, "back", steps, outage)
        assert code == 0, log[-3000:]
        assert "is not answering; training goes on" in log and "is back after" in log, log[-3000:]
        servers[-1].wait_healthy()
        client = MlflowClient(servers[-1].url)
        (run,) = client.search_runs(client.get_experiment_by_name("tiny").experiment_id)  # no second run
        assert run.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == list(
            range(1, steps + 1)
        )
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/reward")] == [0, steps]

        env["HARNESS_TRACKING_WAIT_S"] = "5"  # a server that never comes back
        code, log = run_until_validated(env, tmp_path, "gone", 3, servers[-1].stop)
        assert code == 2, log[-3000:]
        assert "could not be sent within HARNESS_TRACKING_WAIT_S=5 s" in log and "Traceback" not in log, log[-3000:]
        assert ckpt.list_checkpoints(tmp_path / "gone")[-1][0] == 3  # the work itself is on disk
    finally:
        servers[-1].stop()


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int):
    """A real tmpfs of `size_bytes` mounted at `path` (root only: skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the disk tests need root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_a_checkpoint_that_cannot_fit_is_refused_and_resume_starts_from_the_last_good_one(tiny_assets, tmp_path):
    args = [*SMALL, "train.steps=4", "checkpoint.every=2"]
    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "train",
            TINY,
            *args,
            f"output_dir={tmp_path / 'probe'}",
            "train.steps=2",
            "--no-progress",
            "--no-mlflow",
        ],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    one = dir_bytes(tmp_path / "probe" / "checkpoints")  # one checkpoint on disk
    # room for the first checkpoint and its check's margin, not for a second one beside it
    with small_filesystem(tmp_path / "disk", int(1.05 * one) + 16 * 2**20 + one // 2) as disk:
        out = disk / "run"
        run = train_run(tmp_path, args, out)
        assert run.returncode == 2, run.stderr[-3000:]
        error = run.stderr.split("error: ", 1)[1]
        assert error.startswith(f"checkpoint step 4: {out / 'checkpoints'} (`output_dir`) needs "), error
        needed, free = map(int, re.findall(r"\((\d+) bytes\)", error))
        assert free < needed and abs(free - shutil.disk_usage(disk).free) < 2**20, error
        assert "Traceback" not in run.stderr
        assert [step for step, _ in ckpt.list_checkpoints(out)] == [2]
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000002"]  # no half-written folder
        # the researcher makes room (here: grows the filesystem), then resumes
        subprocess.run(["mount", "-o", f"remount,size={4 * one + 32 * 2**20}", str(disk)], check=True)
        resumed = train_run(tmp_path, args, out, "--resume")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resumed from" in resumed.stderr and "(step 2)" in resumed.stderr
        assert [step for step, _ in ckpt.list_checkpoints(out)] == [2, 4]


def test_a_disk_that_fills_while_a_checkpoint_is_written_leaves_the_last_good_one(tiny_assets, tmp_path):
    """The free-space check passed, then another process filled the disk: the real ENOSPC of a
    real tmpfs mid-write. The staging folder goes, the earlier checkpoint stays whole."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from harness.disk import DiskSpaceError, staged_write

    model = AutoModelForCausalLM.from_pretrained(tiny_assets.policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.policy_dir)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    payload = ckpt.payload_bytes(model, optimizer, {}, None, sharded=False)
    with small_filesystem(tmp_path / "disk", int(payload * 1.5)) as disk:

        def write(step):
            tmp = ckpt.staging_dir(disk, step)
            with staged_write(
                tmp, disk / "checkpoints", f"checkpoint step {step}", key="output_dir", payload_bytes=payload
            ):
                ckpt.commit_checkpoint(
                    tmp, disk, step, model, tokenizer, optimizer, {"last_sync": 0}, {}, [ckpt.rng_state()]
                )

        write(1)
        with pytest.raises(DiskSpaceError, match=r"checkpoint step 2: .* the disk filled while writing .*removed"):
            write(2)
        assert sorted(p.name for p in (disk / "checkpoints").iterdir()) == ["step_000001"]
        meta, tensors = ckpt.load_trainer_state(disk / "checkpoints" / "step_000001")
        assert meta["step"] == 1 and any(k.startswith("optim.") for k in tensors)


@pytest.mark.parametrize("launcher", ["local", "submitit"])  # submitit: its local executor, the Slurm path's code
def test_a_preempted_sweep_trial_is_requeued_and_resumes_into_the_same_run(tiny_assets, tmp_path, launcher):
    from test_sweep_run import mlflow_runs, study_of, sweep_argv, sweep_env, write_grid

    path = write_grid(
        tmp_path,
        "preempt",
        {"method": ["dpo"]},
        set={"train.steps": 30, "checkpoint.every": 100, "validation.every": 100},
    )
    sweep = subprocess.Popen(
        sweep_argv(path, "--jobs", "1", "--launcher", launcher),
        cwd=tmp_path,
        env=sweep_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    trial_dir = tmp_path / "outputs" / "preempt" / "trials" / "dpo" / "0"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        log = (trial_dir / "trial.log").read_text() if (trial_dir / "trial.log").exists() else ""
        if "validation at step 0" in log:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    pid = json.loads((trial_dir / "trial.pid").read_text())["pid"]
    os.kill(pid, signal.SIGTERM)  # what Slurm sends at a preemption, to the trainer
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out[-3000:]
    (trial,) = study_of(path).trials()
    assert trial.user_attrs["harness.requeues"] == 1 and trial.user_attrs["harness.outcome"] == "completed"
    assert trial.user_attrs["launcher"] == launcher
    log = (trial_dir / "trial.log").read_text()
    assert "SIGTERM received; stopped after step" in log and "resumed from" in log
    runs = [r for r in mlflow_runs(tmp_path, "preempt") if "cell_key" in r.data.tags]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one run, continued


def rank_pids(launcher_pid: int) -> dict[int, int]:
    """{LOCAL_RANK: pid} of the processes torchrun started (read from /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher_pid:
                continue
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError):
            continue
        if "LOCAL_RANK" in env:
            found[int(env["LOCAL_RANK"])] = int(proc.name)
    return found


def test_a_killed_fsdp_rank_ends_the_job_in_bounded_time_and_resume_matches(tiny_assets, tmp_path):
    from test_fsdp import SMALL as FSDP_SMALL, assert_same_training, seed_weights

    common = [
        *FSDP_SMALL,
        "method=dpo",
        "sync_every=2",
        "checkpoint.every=2",
        "train.steps=6",
        "train.collective_timeout_s=30",
    ]
    env = {**env_for(tmp_path), "OMP_NUM_THREADS": "1"}

    def torchrun(out: str, *flags: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
                "-m",
                "harness",
                "train",
                TINY,
                *common,
                f"output_dir={tmp_path / out}",
                "train.parallel=fsdp",
                "--no-progress",
                "--no-mlflow",
                *flags,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    straight = torchrun("straight")
    assert straight.wait(timeout=600) == 0, straight.stdout.read()[-3000:]

    job = torchrun("killed")
    deadline = time.monotonic() + 300
    while not ckpt.list_checkpoints(tmp_path / "killed") and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = rank_pids(job.pid)
    assert set(pids) == {0, 1}, pids
    os.kill(pids[1], signal.SIGKILL)  # a rank dies mid-run (after the step-2 checkpoint)
    killed_at = time.monotonic()
    out, _ = job.communicate(timeout=300)
    ended_after = time.monotonic() - killed_at
    print(
        f"rank 1 SIGKILLed after checkpoint step {ckpt.list_checkpoints(tmp_path / 'killed')[-1][0]}: "
        f"the job ended {ended_after:.1f} s later"
    )
    assert job.returncode != 0 and ended_after < 60, (ended_after, out[-3000:])
    assert "rank    : 1" in out or "rank: 1" in out or "local_rank: 1" in out, out[-3000:]
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids.values())
    last_good = ckpt.list_checkpoints(tmp_path / "killed")[-1][0]
    assert 2 <= last_good < 6

    resumed = torchrun("killed", "--resume")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert f"(step {last_good})" in out
    assert_same_training(
        final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed"), seed_weights(tiny_assets)
    )
