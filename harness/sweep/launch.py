"""Launchers: how a trial command becomes a running process, and how it is stopped.

    launcher = make_launcher("local" | "submitit", folder, parameters)
    handle = launcher.start(command, env, cwd, log_path, pid_file)
    handle.poll() -> exit code or None;  handle.stop();  launcher.reap(pid_file, attrs)

`local` runs each trial as a subprocess of the sweep. `submitit` submits it as a job through
submitit's AutoExecutor: Slurm where `srun` exists, otherwise submitit's local executor (what
the tests use). Either way the trial runs under `harness.sweep.child`, which makes it a process
group leader that dies with its parent and records its pid, and its output goes to its log file.

GPUs: both launchers start a trial through `gpus.place_trial` (one rule; harness/sweep/gpus.py
says it in full). A trial with T training + G generator GPUs gets CUDA_VISIBLE_DEVICES = its T
training GPUs then its G generator GPUs, HARNESS_GENERATOR_DEVICES = the G generator GPUs as
physical ids (what CUDA_VISIBLE_DEVICES takes on that node, never indexes into the trial's own
list), and runs as `torchrun --standalone --nproc-per-node T -m harness.cli train ...
train.parallel=fsdp` when T > 1 (local ranks 0..T-1 are the training GPUs). `submitit` takes
T and G from its block (`train_gpus`, default `gpus_per_node` - `generator_gpus`) and places the
trial inside the job, where Slurm's CUDA_VISIBLE_DEVICES names the job's GPUs (without one, ids
0..T+G-1). `local` takes them from `--gpus-per-trial` / the sweep file's `local:` block and
hands each running trial a disjoint set of the node's GPUs (`--gpus`, else CUDA_VISIBLE_DEVICES,
else `nvidia-smi -L`), returned to the pool when the trial's process ends, however it ends.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.registry import Registry
from harness.sweep.gpus import (
    GENERATOR_DEVICES_ENV,
    DevicePool,
    GpuSplit,
    place_trial,
)
from harness.procs import process_start_time

STOP_GRACE_S = 15.0  # SIGINT lets the trainer close its MLflow run; SIGKILL after this


def wrap(command: list[str], pid_file: Path) -> list[str]:
    return [sys.executable, "-m", "harness.sweep.child", "--pid-file", str(pid_file), "--", *command]


def stop_group(pid: int, grace_s: float = STOP_GRACE_S, exited=None) -> None:
    """SIGINT the process group led by `pid`, then SIGKILL whatever is left after `grace_s`."""
    exited = exited or (lambda: process_start_time(pid) is None)
    try:
        os.killpg(pid, signal.SIGINT)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and not exited():
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)  # stragglers of the group, if any
    except (ProcessLookupError, PermissionError):
        pass


def reap_pid_file(pid_file: Path, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop a trial process left behind by a dead sweep on this host; True if one was running."""
    try:
        info = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return False
    if info.get("host") != socket.gethostname():
        return False
    pid = int(info["pid"])
    if info.get("start") is None or process_start_time(pid) != info["start"]:
        return False
    stop_group(pid, grace_s, exited=lambda: process_start_time(pid) != info["start"])
    return True


def split_gpus(parameters: dict[str, Any], source: str) -> tuple[int, int]:
    """Pop the harness's own keys from a `submitit:` block: (training GPUs, generator GPUs) per trial."""
    per_node = int(parameters.get("gpus_per_node", 0) or 0)
    train_gpus = parameters.pop("train_gpus", None)
    generator_gpus = int(parameters.pop("generator_gpus", 0) or 0)
    train_gpus = int(train_gpus if train_gpus is not None else max(per_node - generator_gpus, 1))
    if int(parameters.get("nodes", 1) or 1) > 1:
        raise ConfigError(
            f"{source}: `nodes` = {parameters['nodes']}; a trial runs on one node (torchrun --standalone)."
        )
    if per_node and train_gpus + generator_gpus > per_node:
        raise ConfigError(
            f"{source}: `train_gpus` ({train_gpus}) + `generator_gpus` ({generator_gpus}) is more than "
            f"`gpus_per_node` ({per_node}); lower one of them or ask for more GPUs."
        )
    return train_gpus, generator_gpus


def placement_note(command: list[str], env: dict[str, str]) -> str:
    """The trial log's record of where and how a trial was started on its GPUs."""
    gpus = " ".join(f"{key}={env[key]}" for key in ("CUDA_VISIBLE_DEVICES", GENERATOR_DEVICES_ENV) if key in env)
    return f"[harness sweep] on {socket.gethostname()}: {gpus or 'the GPUs it inherits'}; {shlex.join(command)}\n"


def job_devices(split: GpuSplit) -> list[str] | None:
    """Inside a submitit job: the job's GPUs (Slurm's CUDA_VISIBLE_DEVICES), if it names enough."""
    ids = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return ids if len(ids) >= split.per_trial else None


def run_trial_command(
    command: list[str], env: dict[str, str], cwd: str, log_path: str, pid_file: str, split: GpuSplit
) -> int:
    """The submitit job: place the trial on the job's GPUs, run it logging to `log_path`, return its exit code."""
    command, env = place_trial(command, env, split, job_devices(split))
    with open(log_path, "a") as log:
        log.write(placement_note(command, env))
        log.flush()
        process = subprocess.Popen(
            wrap(command, Path(pid_file)),
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return process.wait()
        except BaseException:
            stop_group(process.pid, exited=lambda: process.poll() is not None)
            raise


class LocalHandle:
    def __init__(self, process: subprocess.Popen, log, on_exit=None) -> None:
        self.process, self.log, self.on_exit = process, log, on_exit
        self.ident = str(process.pid)

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None:
            if not self.log.closed:
                self.log.close()
            if self.on_exit is not None:  # the trial's GPUs go back to the pool, once
                self.on_exit, release = None, self.on_exit
                release()
        return code

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        stop_group(self.process.pid, grace_s, exited=lambda: self.process.poll() is not None)
        self.process.wait()
        self.poll()


class LocalLauncher:
    """Trials as subprocesses of the sweep. With a GPU pool (`gpus`: the split per trial and the
    node's GPUs, harness/sweep/gpus.py) each trial runs on its own GPUs, through `place_trial`."""

    name = "local"

    @classmethod
    def from_sweep(
        cls,
        folder: Path,
        parameters: dict[str, Any],
        job_name: str,
        source: str = "submitit",
        gpus: tuple[GpuSplit, DevicePool] | None = None,
    ):
        return cls(*(gpus or (None, None)))  # a subprocess needs none of the sweep's submitit settings

    def __init__(self, split: GpuSplit | None = None, pool: DevicePool | None = None) -> None:
        self.split, self.pool = split, pool

    def start(self, command: list[str], env: dict[str, str], cwd: str, log_path: Path, pid_file: Path) -> LocalHandle:
        devices = self.pool.take(self.split.per_trial) if self.pool is not None else None
        release = (lambda: self.pool.give_back(devices)) if devices is not None else None
        try:
            log = open(log_path, "a")
            if devices is not None:
                command, env = place_trial(command, env, self.split, devices)
                log.write(placement_note(command, env))
                log.flush()
            process = subprocess.Popen(
                wrap(command, pid_file),
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            if release is not None:
                release()
            raise
        return LocalHandle(process, log, release)

    def reap(self, pid_file: Path, attrs: dict[str, Any]) -> bool:
        return reap_pid_file(pid_file)


class SubmititHandle:
    def __init__(self, job, log_path: Path) -> None:
        self.job, self.log_path = job, log_path
        self.ident = str(job.job_id)

    def poll(self) -> int | None:
        if not self.job.done():
            return None
        try:
            return int(self.job.result())
        except Exception as exc:  # the job itself failed (cancelled, timed out, node lost)
            with open(self.log_path, "a") as log:
                log.write(f"\n[harness sweep] submitit job {self.ident} failed: {exc}\n")
            return -1

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        self.job.cancel(check=False)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not self.job.done():
            time.sleep(0.2)


class SubmititLauncher:
    name = "submitit"

    @classmethod
    def from_sweep(cls, folder: Path, parameters: dict[str, Any], job_name: str, source: str = "submitit"):
        return cls(folder, parameters, job_name, source)

    def __init__(self, folder: Path, parameters: dict[str, Any], job_name: str, source: str = "submitit") -> None:
        self.folder, self.source = folder, source
        self.parameters = {"timeout_min": 3 * 24 * 60, "name": job_name, **parameters}
        self.split = GpuSplit(*split_gpus(self.parameters, source), origin=source)
        self.cluster_name = self.parameters.pop("cluster", None)
        with tempfile.TemporaryDirectory() as scratch:  # check the parameters, create nothing
            self.cluster = self._executor(Path(scratch)).cluster
        self.executor = None

    def _executor(self, folder: Path):
        import submitit

        try:
            executor = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster_name)
            executor.update_parameters(**self.parameters)
        except (ValueError, TypeError, NameError, RuntimeError) as exc:
            raise ConfigError(f"{self.source} is invalid: {exc}".replace("\n", " ")) from None
        return executor

    def start(
        self, command: list[str], env: dict[str, str], cwd: str, log_path: Path, pid_file: Path
    ) -> SubmititHandle:
        self.executor = self.executor or self._executor(self.folder)
        job = self.executor.submit(run_trial_command, command, env, cwd, str(log_path), str(pid_file), self.split)
        return SubmititHandle(job, log_path)

    def reap(self, pid_file: Path, attrs: dict[str, Any]) -> bool:
        reaped = reap_pid_file(pid_file)
        job_id = attrs.get("harness.job_id")
        if self.cluster == "slurm" and job_id:
            import submitit

            submitit.SlurmJob(self.folder, str(job_id)).cancel(check=False)
            reaped = True
        return reaped


# `--launcher` names (harness/registry.py): each entry builds a launcher from the sweep's settings.
LAUNCHERS = Registry(
    "launcher",
    {
        "local": "harness.sweep.launch:LocalLauncher.from_sweep",
        "submitit": "harness.sweep.launch:SubmititLauncher.from_sweep",
    },
)


def make_launcher(
    name: str,
    folder: Path,
    parameters: dict[str, Any],
    job_name: str,
    source: str = "submitit",
    gpus: tuple[GpuSplit, DevicePool] | None = None,
):
    """`gpus` (the local launcher's GPU split and pool) is ignored by submitit, whose block says its own."""
    factory = LAUNCHERS.get(name, where="--launcher")
    return (
        factory(folder, parameters, job_name, source, gpus=gpus)
        if name == "local"
        else factory(folder, parameters, job_name, source)
    )


def child_env(tracking_uri: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The trial's environment: ours, with an explicit tracking URI and no active-run leakage."""
    env = dict(os.environ if base is None else base)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_PARENT_RUN_ID"):
        env.pop(key, None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
