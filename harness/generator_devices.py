"""The generator worker's own CUDA devices: `rollout.devices`, or what a launcher exports.

    rollout.devices: [6, 7]          (or "6,7" on the command line; GPU-/MIG- UUIDs too)
    HARNESS_GENERATOR_DEVICES=6,7    (set by the launchers for their generator GPUs, as `--gpus` named them)

A device id is what CUDA_VISIBLE_DEVICES takes (`device_id`, the one rule the sweep's `--gpus` also
follows): an index of the node's enumeration, or a `GPU-...` / `MIG-...` UUID.

The worker process starts with CUDA_VISIBLE_DEVICES set to them and uses cuda:0 inside; the
vLLM engine shards over all of them (`rollout.vllm.tensor_parallel_size` defaults to their
count). Unset, the worker runs on `model.device`. No torch here: configs are checked before it
is imported.
"""

from __future__ import annotations

import os
import re
from typing import Any

ENV = "HARNESS_GENERATOR_DEVICES"


EXPECTED = (
    "expected CUDA device ids as CUDA_VISIBLE_DEVICES takes them: indexes like [6, 7] or '6,7', "
    "or GPU-/MIG- UUIDs like 'MIG-1f2e...'"
)


def device_id(value: Any) -> int | str | None:
    """One CUDA device id: an index (int, or its digits) as an int, a `GPU-`/`MIG-` UUID as given;
    None for anything else (a typo like 'gpu0' would make CUDA hide every device named after it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**31 else None
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return int(value)
    if re.fullmatch(r"(GPU|MIG)-[A-Za-z0-9][A-Za-z0-9:/_-]*", value):
        return value
    return None


def parse(value: Any) -> list[int | str] | None:
    """CUDA device ids from a list, one id, or a comma-separated string ('6,7', as launchers export it)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else value
    devices = [device_id(p) for p in parts] if isinstance(parts, list) else []
    if not devices or any(d is None for d in devices):
        raise ValueError(f"{EXPECTED}; a non-empty list")
    if len(set(devices)) < len(devices):
        raise ValueError(f"expected each CUDA device once, got {devices}")
    return devices


def parse_rollout_section(data: Any) -> Any:
    """The raw `rollout:` mapping with `devices` parsed; the old `worker_device` key refused."""
    if not isinstance(data, dict):
        return data
    if "worker_device" in data:
        raise ValueError(
            f"`rollout.worker_device` ({data['worker_device']!r}) was replaced by `rollout.devices`, the "
            f"worker's CUDA device ids (e.g. [1] or '6,7'); unset, the worker runs on model.device"
        )
    if "devices" in data:
        try:
            data = {**data, "devices": parse(data["devices"])}
        except ValueError as exc:
            raise ValueError(f"`rollout.devices` = {data['devices']!r}: {exc}") from None
    return data


def check(devices: list[int | str] | None, placement: str, backend: str, tensor_parallel_size: int | None) -> None:
    """Devices belong to a worker; the hf backend uses one; a vLLM engine shards over at most all of them."""
    if devices is None:
        return
    if placement != "worker":
        raise ValueError(
            f"`rollout.devices` = {devices} are the generator worker's GPUs; they need "
            f"`rollout.placement=worker` (now {placement!r})"
        )
    if backend == "hf" and len(devices) > 1:
        raise ValueError(
            f"`rollout.devices` = {devices}: the hf backend runs on one device; give it one, or use "
            f"rollout.backend=vllm to shard over several"
        )
    if tensor_parallel_size is not None and tensor_parallel_size > len(devices):
        raise ValueError(
            f"`rollout.vllm.tensor_parallel_size` = {tensor_parallel_size} is more than the "
            f"{len(devices)} GPU(s) of `rollout.devices` = {devices}"
        )


def of_run(rollout) -> list[int | str] | None:
    """The worker's devices for a run's `rollout` section: its own key, else the launcher's export
    (checked like the key; ignored unless the placement is worker), else None (model.device)."""
    if rollout.placement != "worker":
        return None
    if rollout.devices is not None:
        return rollout.devices
    exported = os.environ.get(ENV, "").strip()
    if not exported:
        return None
    from harness.errors import ConfigError

    try:
        devices = parse(exported)
        check(devices, rollout.placement, rollout.backend, rollout.vllm.tensor_parallel_size)
    except ValueError as exc:
        raise ConfigError(
            f"environment variable {ENV} = {exported!r} (the launcher's generator GPUs, used as "
            f"rollout.devices): {exc}."
        ) from None
    return devices
