"""The memory plan (harness.train.plan) read against a GPU: the table `harness plan` prints, and
the check `harness train` runs on CUDA before loading, refusing a config that cannot fit with the
keys that shrink it.
"""

from __future__ import annotations

import logging

from harness.errors import ConfigError
from harness.train.plan import GIB, PHASES, Plan, plan_memory

log = logging.getLogger("harness.train.plan")


def format_plan(plan: Plan) -> str:
    """The table: one row per component with the phase it lives in, each phase's total, the peak."""
    names = [name for _, name, _ in plan.rows] + [name for name, _ in plan.generator_rows + plan.host_rows]
    width = max(len(name) for name in names) + 2
    lines = [plan.header, "", f"{'per trainer GPU (rank 0)':<{width}}{'phase':<10}{'GiB':>7}"]
    for phase in ("resident", *PHASES):
        lines += [
            f"{name:<{width}}{phase:<10}{value / GIB:>7.1f}" for where, name, value in plan.rows if where == phase
        ]
    for phase in PHASES:
        mark = "  <- peak" if phase == plan.peak_phase else ""
        lines.append(
            f"{'total while ' + phase + ' runs (resident + ' + phase + ')':<{width}}{'':<10}"
            f"{plan.phase_total(phase) / GIB:>7.1f}{mark}"
        )
    if plan.generator_rows:
        lines += ["", f"{'per generator GPU':<{width}}{'':<10}{'GiB':>7}"]
        lines += [f"{name:<{width}}{'':<10}{value / GIB:>7.1f}" for name, value in plan.generator_rows]
        lines.append(f"{'total':<{width}}{'':<10}{plan.generator_total / GIB:>7.1f}  of {plan.capacity / GIB:.1f}")
    lines += ["", f"{'host memory of one machine, while loading':<{width}}{'':<10}{'GiB':>7}"]
    lines += [f"{name:<{width}}{'':<10}{value / GIB:>7.1f}" for name, value in plan.host_rows]
    lines.append(f"{'total':<{width}}{'':<10}{plan.host_total / GIB:>7.1f}")
    verdict = "FITS" if plan.fits else "DOES NOT FIT"
    lines += [
        "",
        f"{verdict}: {plan.total / GIB:.1f} GiB needed on the fullest trainer GPU (peak phase: "
        f"{plan.peak_phase}), {plan.capacity / GIB:.1f} GiB available",
    ]
    return "\n".join(lines)


def not_fitting_message(plan: Plan, source: str) -> str:
    phase = plan.peak_phase
    biggest = sorted([row for row in plan.rows if row[0] in ("resident", phase)], key=lambda row: -row[2])[:3]
    return (
        f"{source}: the run needs {plan.total / GIB:.1f} GiB on its fullest GPU (while {phase} runs) but "
        f"each has {plan.capacity / GIB:.1f} GiB (largest parts: "
        + ", ".join(f"{name} {value / GIB:.1f} GiB" for _, name, value in biggest)
        + "). Shrink it with `train.micro_batch_size`, `model.gradient_checkpointing=true`, "
        "`rollout.batch_size`, `train.max_new_tokens`, `model.reference_offload=true`, "
        "`model.compute_dtype=bfloat16`, or more GPUs (`train.parallel=fsdp` under torchrun "
        "--nproc-per-node N); `harness plan CONFIG --gpus N` prints the whole table."
    )


def check_fits(cfg, source: str = "config") -> Plan | None:
    """`harness train`'s check on CUDA (one GPU per process); nothing to check on CPU."""
    import torch
    from harness.distributed import launch_env
    from harness.models import resolve_device

    if resolve_device(cfg.model.device).type != "cuda":
        return None
    _, world, local_rank, _ = launch_env()
    capacity = torch.cuda.get_device_properties(local_rank).total_memory / GIB
    try:
        plan = plan_memory(cfg, world, capacity)
    except ConfigError as exc:  # a hub id or an unknown architecture: from_pretrained may still load it
        log.warning("memory plan skipped: %s", exc)
        return None
    if not plan.fits:
        raise ConfigError(not_fitting_message(plan, source))
    return plan


def default_capacity_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB
    raise ConfigError("--gpu-memory-gib is required on a machine without a GPU (an H200 has about 140 GiB).")
