"""The generator worker's own CUDA devices: `rollout.devices`, or what a launcher exports.

    rollout.devices: [6, 7]          (or "6,7" on the command line)
    HARNESS_GENERATOR_DEVICES=6,7    (set by the submitit launcher for its generator GPUs)

The worker process starts with CUDA_VISIBLE_DEVICES set to them and uses cuda:0 inside; the
vLLM engine shards over all of them (`rollout.vllm.tensor_parallel_size` defaults to their
count). Unset, the worker runs on `model.device`. No torch here: configs are checked before it
is imported.
"""

from __future__ import annotations

import os
from typing import Any

ENV = "HARNESS_GENERATOR_DEVICES"


def parse(value: Any) -> list[int] | None:
    """CUDA device indexes from a list, one index, or a comma-separated string ('6,7', as launchers export it)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else value
    if (
        not isinstance(parts, list)
        or not parts
        or not all(
            (isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 2**31) or (isinstance(p, str) and p.isdigit())
            for p in parts
        )
    ):
        raise ValueError("expected CUDA device indexes: a non-empty list like [6, 7] or a string like '6,7'")
    devices = [int(p) for p in parts]
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
            f"worker's CUDA device indexes (e.g. [1] or '6,7'); unset, the worker runs on model.device"
        )
    if "devices" in data:
        try:
            data = {**data, "devices": parse(data["devices"])}
        except ValueError as exc:
            raise ValueError(f"`rollout.devices` = {data['devices']!r}: {exc}") from None
    return data


def check(devices: list[int] | None, placement: str, backend: str, tensor_parallel_size: int | None) -> None:
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


def of_run(rollout) -> list[int] | None:
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
