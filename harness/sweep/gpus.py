"""Which GPUs a trial gets, and how it is started on them (both launchers use `place_trial`).

    split = trial_gpu_split(sweep, gpus_per_trial=8)          # (6 training, 2 generator) or None
    gpus = assign_local_gpus(split, jobs=1, gpus_flag=None, source=...)   # refuses jobs x 8 > visible
    command, env = place_trial(command, env, split, devices=["0", ..., "7"])

Device ids are what CUDA_VISIBLE_DEVICES takes, as the node enumerates them (an index, or a
GPU-/MIG- UUID), never indexes relative to another CUDA_VISIBLE_DEVICES: CUDA does not nest the
variable, a child process that sets it picks from every device of the node. A trial given
`devices` runs with

    CUDA_VISIBLE_DEVICES      = its training GPUs, then its generator GPUs (e.g. 4,5,6,7,8,9,10,11)
    HARNESS_GENERATOR_DEVICES = its generator GPUs only, the same ids (e.g. 10,11)

so torchrun's local ranks 0..train-1 (`cuda:LOCAL_RANK`) are the training GPUs, and a generator
worker started with CUDA_VISIBLE_DEVICES=$HARNESS_GENERATOR_DEVICES sees exactly its own. A trial
with more than one training GPU runs as `torchrun --standalone --nproc-per-node TRAIN -m
harness.cli train ... train.parallel=fsdp`; `--standalone` rendezvouses on localhost:0, a free
port of its own, so trials on one node never share one.

This module imports nothing heavy (no torch): the visible GPUs come from `--gpus`, else
CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Iterable

from harness.errors import ConfigError, HarnessError
from harness.generator_devices import device_id

GENERATOR_DEVICES_ENV = "HARNESS_GENERATOR_DEVICES"


@dataclass(frozen=True)
class GpuSplit:
    train: int  # FSDP ranks (torchrun processes), one GPU each
    generator: int  # GPUs after them for the generator worker
    origin: str  # where the numbers came from, for messages

    @property
    def per_trial(self) -> int:
        return self.train + self.generator


def torchrun_command(command: list[str], train_gpus: int) -> list[str]:
    """`python -m harness.cli train CONFIG ...` -> the same trial as torchrun over `train_gpus` FSDP ranks."""
    if train_gpus <= 1 or "train" not in command:
        return command
    at = command.index("train")
    head, config, rest = command[:at], command[at + 1], command[at + 2 :]
    module = head.index("-m")
    return [
        *head[:module],
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(train_gpus),
        *head[module:],
        "train",
        config,
        "train.parallel=fsdp",
        *rest,
    ]


def place_trial(
    command: list[str], env: dict[str, str], split: GpuSplit, devices: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The trial's command and environment on its GPUs (see the module docstring). Without
    `devices` the environment's GPUs are left as they are and the generator's are named by index."""
    env = dict(env)
    ids = list(devices) if devices is not None else [str(i) for i in range(split.per_trial)]
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[: split.per_trial])
    if split.generator:
        env[GENERATOR_DEVICES_ENV] = ",".join(ids[split.train : split.per_trial])
    else:
        env.pop(GENERATOR_DEVICES_ENV, None)
    return torchrun_command(command, split.train), env


def visible_gpus(env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """This node's GPUs as (ids, where they were read), without importing torch."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_gpu_list(
            env["CUDA_VISIBLE_DEVICES"], "CUDA_VISIBLE_DEVICES", allow_empty=True
        ), "CUDA_VISIBLE_DEVICES"
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return [], "nvidia-smi -L (not available)"
    found = re.findall(r"^GPU (\d+):", listing.stdout, flags=re.M) if listing.returncode == 0 else []
    return found, "nvidia-smi -L"


def parse_gpu_list(text: str, where: str, allow_empty: bool = False) -> list[str]:
    ids = [part.strip() for part in text.split(",")] if text.strip() else []
    if (not ids and not allow_empty) or any(device_id(i) is None for i in ids):
        raise ConfigError(
            f"{where} = {text!r}: expected GPU ids separated by commas, e.g. 0,1,2,3 (indexes "
            f"or GPU-/MIG- UUIDs as CUDA_VISIBLE_DEVICES takes them)."
        )
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where} = {text!r} names a GPU twice; each GPU can be given to one trial at a time.")
    return ids


def trial_gpu_split(sweep, gpus_per_trial: int | None = None, gpus_flag: str | None = None) -> GpuSplit | None:
    """GPUs per trial for the local launcher: `--gpus-per-trial N` (training = N - generator_gpus)
    and/or the sweep file's `local:` block; `--gpus` alone means one per trial; None: no assignment."""
    block = sweep.spec.local
    where = f"{sweep.path}: the `local` block"
    if gpus_per_trial is not None and gpus_per_trial < 1:
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial}: expected an integer >= 1.")
    generator = block.generator_gpus if block else 0
    if gpus_per_trial is not None:
        train = gpus_per_trial - generator
        if train < 1:
            raise ConfigError(
                f"--gpus-per-trial {gpus_per_trial} leaves no training GPU beside the "
                f"{generator} generator GPU(s) of {where} (`generator_gpus`); give at least "
                f"{generator + 1}."
            )
        if block and block.train_gpus is not None and block.train_gpus != train:
            raise ConfigError(
                f"--gpus-per-trial {gpus_per_trial} disagrees with {where}: `train_gpus` "
                f"{block.train_gpus} + `generator_gpus` {generator} = "
                f"{block.train_gpus + generator} GPUs per trial; drop the flag or change the block."
            )
        return GpuSplit(train, generator, f"--gpus-per-trial {gpus_per_trial}" + (f" and {where}" if block else ""))
    if block:
        return GpuSplit(block.train_gpus or 1, generator, where)
    return GpuSplit(1, 0, "--gpus (one GPU per trial)") if gpus_flag is not None else None


def assign_local_gpus(
    split: GpuSplit | None, jobs: int, gpus_flag: str | None = None, env: dict[str, str] | None = None
) -> "DevicePool | None":
    """The pool the local launcher hands out; refuses `--jobs` x GPUs per trial beyond the node's."""
    if split is None:
        return None
    if gpus_flag is not None:
        devices, where = parse_gpu_list(gpus_flag, "--gpus"), "--gpus"
    else:
        devices, where = visible_gpus(env)
    needed = jobs * split.per_trial
    if needed > len(devices):
        fits = len(devices) // split.per_trial
        advice = f"lower --jobs to {fits}" if fits else "run it on a node with more GPUs or give each trial fewer"
        raise ConfigError(
            f"--jobs {jobs} x {split.per_trial} GPUs per trial ({split.train} training + {split.generator} "
            f"generator, from {split.origin}) needs {needed} GPUs, but {where} gives {len(devices)} "
            f"({','.join(devices) or 'none'}): {advice}, or name the GPUs to share with --gpus (e.g. --gpus 0,1,2,3)."
        )
    return DevicePool(devices)


class DevicePool:
    """The GPUs one sweep process shares between the trials it runs at once: each running trial
    holds a disjoint set, returned when its process ends (completed, failed, stopped)."""

    def __init__(self, devices: Iterable[str]) -> None:
        self.order = list(devices)
        self.free = list(self.order)

    def take(self, count: int) -> list[str]:
        if count > len(self.free):
            raise HarnessError(f"{count} GPU(s) wanted, {len(self.free)} free of {','.join(self.order)}")
        taken, self.free = self.free[:count], self.free[count:]
        return taken

    def give_back(self, devices: Iterable[str]) -> None:
        back = set(self.free) | set(devices)
        self.free = [d for d in self.order if d in back]
