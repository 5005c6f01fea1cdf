"""GPUs per trial: the local launcher's pool and the one placement rule both launchers share.

No GPU is needed: GPU ids are named with `--gpus` (or a pretend CUDA_VISIBLE_DEVICES) and the
trials are real processes of `tests/helpers_record_trial.py`, which record the environment,
argv and parent command line (torchrun's, read from /proc) they were really started with.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from harness.errors import ConfigError, HarnessError
from harness.sweep.gpus import DevicePool, GpuSplit, assign_local_gpus, trial_gpu_split, visible_gpus
from harness.sweep.launch import LocalLauncher, run_trial_command
from harness.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
COMMAND = [sys.executable, "-m", "helpers_record_trial", "train", "cfg.yaml", "x=1", "--tag", "a=b"]


def trial_env(record_dir: Path, trial: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "HARNESS_GENERATOR_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    return {**env, "RECORD_DIR": str(record_dir), "TRIAL": trial, **extra}


def wait_for(condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_exit(handle, timeout: float = 120.0) -> int:
    wait_for(lambda: handle.poll() is not None, timeout, f"trial {handle.ident} to exit")
    return handle.poll()


def record(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    wait_for(path.exists, what=str(path))
    return json.loads(path.read_text())


def start(launcher, tmp_path: Path, trial: str, **env: str):
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    return launcher.start(
        list(COMMAND),
        trial_env(records, trial, **env),
        str(tmp_path),
        tmp_path / f"{trial}.log",
        tmp_path / f"{trial}.pid",
    )


def run_job(tmp_path: Path, trial: str, split: GpuSplit) -> Path:
    """One trial run to its end as a submitit job runs it on its node; the folder of its records."""
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    code = run_trial_command(
        list(COMMAND),
        trial_env(records, trial),
        str(tmp_path),
        str(tmp_path / f"{trial}.log"),
        str(tmp_path / f"{trial}.pid"),
        split,
    )
    assert code == 0
    return records


def test_concurrent_trials_hold_disjoint_gpus_given_back_when_they_end(tmp_path):
    """1 training + 1 generator GPU per trial, 4 GPUs: two trials at once, each on its own pair;
    a failed trial's and a stopped trial's GPUs go to the next trial."""
    launcher = LocalLauncher(GpuSplit(1, 1, "test"), DevicePool(["0", "1", "2", "3"]))
    records = tmp_path / "records"
    a = start(launcher, tmp_path, "a", WAIT_FOR=str(tmp_path / "go-a"))
    b = start(launcher, tmp_path, "b", WAIT_FOR=str(tmp_path / "go-b"), EXIT_CODE="3")
    seen = {name: record(records, f"{name}-solo")["env"] for name in ("a", "b")}
    sets = {name: env["CUDA_VISIBLE_DEVICES"].split(",") for name, env in seen.items()}
    assert len(sets["a"]) == len(sets["b"]) == 2 and not set(sets["a"]) & set(sets["b"])
    assert set(sets["a"]) | set(sets["b"]) == {"0", "1", "2", "3"}
    for name, env in seen.items():  # training GPU first, the generator's after it, as physical ids
        assert env["HARNESS_GENERATOR_DEVICES"] == sets[name][1]
    with pytest.raises(HarnessError, match="free"):  # all four are held
        start(launcher, tmp_path, "x")

    (tmp_path / "go-b").touch()
    assert wait_exit(b) == 3  # a failing trial ...
    c = start(launcher, tmp_path, "c")
    assert record(records, "c-solo")["env"]["CUDA_VISIBLE_DEVICES"].split(",") == sets["b"]  # ... gave its GPUs back
    assert wait_exit(c) == 0
    assert a.poll() is None  # still running on its own pair
    a.stop(grace_s=5)  # a stopped (pruned, interrupted) trial gives its GPUs back too: two fit again
    later = [start(launcher, tmp_path, name, WAIT_FOR_COUNT="5") for name in ("d", "e")]  # a, b, c, d, e
    held = [set(record(records, f"{name}-solo")["env"]["CUDA_VISIBLE_DEVICES"].split(",")) for name in ("d", "e")]
    assert [wait_exit(h) for h in later] == [0, 0]
    assert not held[0] & held[1] and held[0] | held[1] == {"0", "1", "2", "3"}


def test_multi_gpu_trials_run_under_torchrun_each_on_its_own_port(tmp_path):
    """2 training + 1 generator GPU per trial: torchrun with 2 ranks on the first two ids of the
    trial's set; two trials at once rendezvous on different ports."""
    launcher = LocalLauncher(GpuSplit(2, 1, "test"), DevicePool([str(i) for i in range(6)]))
    handles = [start(launcher, tmp_path, name, WAIT_FOR_COUNT="4") for name in ("a", "b")]  # all 4 ranks alive at once
    assert [wait_exit(h) for h in handles] == [0, 0]
    records = tmp_path / "records"
    ports = {}
    for name in ("a", "b"):
        ranks = [record(records, f"{name}-{rank}") for rank in (0, 1)]
        envs = [r["env"] for r in ranks]
        assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
        visible = envs[0]["CUDA_VISIBLE_DEVICES"].split(",")
        assert len(visible) == 3 and envs[1]["CUDA_VISIBLE_DEVICES"] == envs[0]["CUDA_VISIBLE_DEVICES"]
        assert envs[0]["HARNESS_GENERATOR_DEVICES"] == visible[2]  # ranks use cuda:0, cuda:1 = visible[0:2]
        assert ranks[0]["argv"] == ["train", "cfg.yaml", "train.parallel=fsdp", "x=1", "--tag", "a=b"]
        torchrun = ranks[0]["parent_cmdline"]  # the process that started the rank, as the kernel has it
        assert torchrun[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
        assert {e["MASTER_PORT"] for e in envs} == {envs[0]["MASTER_PORT"]}
        ports[name] = (envs[0]["MASTER_PORT"], set(visible))
    assert ports["a"][0] != ports["b"][0]  # concurrent rendezvous on distinct ports
    assert not ports["a"][1] & ports["b"][1]


def test_a_submitit_job_places_its_trial_on_the_job_gpus(tmp_path, monkeypatch):
    """Inside the job (what submitit runs on the node), Slurm's CUDA_VISIBLE_DEVICES names the
    job's GPUs: the trial gets the first of them, the generator ids are those physical ids."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6,7,9")
    records = run_job(tmp_path, "job", GpuSplit(2, 1, "test"))
    envs = [record(records, f"job-{rank}")["env"] for rank in (0, 1)]
    assert {e["CUDA_VISIBLE_DEVICES"] for e in envs} == {"5,6,7"}
    assert {e["HARNESS_GENERATOR_DEVICES"] for e in envs} == {"7"}
    assert "CUDA_VISIBLE_DEVICES=5,6,7 HARNESS_GENERATOR_DEVICES=7" in (tmp_path / "job.log").read_text()


def test_a_job_on_mig_slices_hands_its_generator_their_uuids_and_the_run_config_takes_them(tmp_path, monkeypatch):
    """MIG slices (and GPUs named by UUID) reach a trial as UUIDs: the placement passes them on, and
    the trial's run config takes the launcher's HARNESS_GENERATOR_DEVICES as its worker's devices."""
    from harness import generator_devices
    from harness.config import load_run_config
    from harness.rollout import generator_options

    slices = ["MIG-1f2e3d4c-aaaa-5bbb-8ccc-0123456789ab", "MIG-5a6b7c8d-dddd-5eee-9fff-ba9876543210"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(slices))
    env = record(run_job(tmp_path, "mig", GpuSplit(1, 1, "test")), "mig-solo")["env"]
    assert (env["CUDA_VISIBLE_DEVICES"], env["HARNESS_GENERATOR_DEVICES"]) == (",".join(slices), slices[1])
    monkeypatch.setenv("HARNESS_GENERATOR_DEVICES", env["HARNESS_GENERATOR_DEVICES"])  # as the trial sees it
    cfg = load_run_config(REPO / "sweeps" / "runs" / "tiny.yaml", ["rollout.placement=worker", "rollout.backend=vllm"])
    assert generator_devices.of_run(cfg.rollout) == [slices[1]]
    assert generator_options(cfg)["tensor_parallel_size"] == 1
    uuids = load_run_config(
        REPO / "sweeps" / "runs" / "tiny.yaml",
        ["rollout.placement=worker", "rollout.backend=vllm", f"rollout.devices=GPU-0a1b,{slices[0]},3"],
    )
    assert uuids.rollout.devices == ["GPU-0a1b", slices[0], 3]
    for typo in ("gpu0", "0,gpu1", "MIG-", "cuda:1"):  # CUDA would silently hide the devices named after a typo
        with pytest.raises(ConfigError, match="GPU ids"):
            visible_gpus({"CUDA_VISIBLE_DEVICES": typo})


def test_gpus_per_trial_and_the_local_block_agree_or_are_refused(tmp_path):
    full = load_sweep(REPO / "sweeps" / "full_grid.yaml")
    assert trial_gpu_split(full) == GpuSplit(6, 2, f"{full.path}: the `local` block")  # the paper's 6 + 2
    split = trial_gpu_split(full, gpus_per_trial=8)
    assert (split.train, split.generator) == (6, 2)
    with pytest.raises(ConfigError, match="disagrees"):
        trial_gpu_split(full, gpus_per_trial=7)
    with pytest.raises(ConfigError, match="no training GPU"):
        trial_gpu_split(full, gpus_per_trial=2)
    tiny = load_sweep(REPO / "sweeps" / "tiny_grid.yaml")
    assert trial_gpu_split(tiny) is None  # no flag, no block: trials inherit the sweep's GPUs, as before
    split = trial_gpu_split(tiny, gpus_flag="0,1")
    assert (split.train, split.generator) == (1, 0)
    pool = assign_local_gpus(trial_gpu_split(full), jobs=2, env={"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(16)))})
    assert len(pool.free) == 16
    with pytest.raises(ConfigError, match="--jobs 3 x 8 GPUs per trial"):
        assign_local_gpus(trial_gpu_split(full), jobs=3, env={"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(16)))})
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ([], "CUDA_VISIBLE_DEVICES")
