"""Where a training step's time goes: phase ranges always, torch.profiler on chosen steps.

    harness train sweeps/runs/tiny.yaml train.steps=3 train.profile_steps=[2]

`phase(name, metrics)` times one phase of the step into `metrics["time/<name>_s"]` and names it
in any running profile (`torch.profiler.record_function`), so the trace shows sync, generate,
score, train and validate as ranges over their ops.

`profiled_step(...)` runs the steps listed in `train.profile_steps` (1-based, as the progress
bar counts them) under torch.profiler, CPU activity plus CUDA activity on a GPU. Each writes into
`<output_dir>/profile/`:
- `step_<N>.txt` (`step_<N>.rank<R>.txt` under FSDP): the phases, FSDP's own ranges (all-gathers,
  gradient reduce) when sharded, then the 40 ops with the most self time (device time on a GPU,
  CPU time otherwise);
- `step_<N>.trace.json` (unless `train.profile_trace: false`): the Chrome trace, for
  https://ui.perfetto.dev or chrome://tracing; about 30 MB for a step of the tiny default.
The log names the step's three costliest ops with their shares.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, record_function

log = logging.getLogger("harness.train")

PHASES = ("sync", "generate", "score", "train", "validate")
TOP_OPS = 40


@contextmanager
def phase(name: str, metrics: dict | None = None):
    """One phase of the step: a named range in any running profile, and `time/<name>_s` in `metrics`."""
    started = time.perf_counter()
    with record_function(name):
        yield
    if metrics is not None:
        metrics[f"time/{name}_s"] = time.perf_counter() - started


def profile_path(output_dir: Path, step: int, rank: int, world: int, suffix: str) -> Path:
    return output_dir / "profile" / f"step_{step}{f'.rank{rank}' if world > 1 else ''}{suffix}"


@contextmanager
def profiled_step(train_cfg, step: int, output_dir: Path, device: torch.device, dist):
    """Run the body under torch.profiler when `step` is in `train_cfg.profile_steps`; otherwise just
    run it. `train_cfg.profile_trace` also exports the Chrome trace (30 MB for a tiny-default step)."""
    if step not in train_cfg.profile_steps:
        yield
        return
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    started = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profile:
        yield
    if on_gpu:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    averages = list(profile.key_averages())  # one pass over the events (a large step has ~10^5 of them)
    table = op_table(averages, on_gpu)
    text_path = profile_path(output_dir, step, dist.rank, dist.world, ".txt")
    text_path.parent.mkdir(parents=True, exist_ok=True)
    text_path.write_text(report(step, wall, table, averages, on_gpu))
    if train_cfg.profile_trace:
        profile.export_chrome_trace(str(profile_path(output_dir, step, dist.rank, dist.world, ".trace.json")))
    top = ", ".join(f"{name} {share:.0%}" for name, _, share in table[:3])
    log.info("profile of step %d (%.2f s, %s time): %s; table in %s", step, wall, _clock(on_gpu), top, text_path)


def _clock(on_gpu: bool) -> str:
    return "device" if on_gpu else "CPU"


def _self_us(event, on_gpu: bool) -> float:
    return float(event.self_device_time_total if on_gpu else event.self_cpu_time_total)


def op_table(averages: list, on_gpu: bool) -> list[tuple[str, float, float]]:
    """(op, self seconds, share of all self time) for every op but the phase ranges, costliest first."""
    events = [e for e in averages if e.key not in PHASES]
    total = sum(_self_us(e, on_gpu) for e in events) or 1.0
    rows = sorted(
        ((e.key, _self_us(e, on_gpu) / 1e6, _self_us(e, on_gpu) / total) for e in events), key=lambda r: -r[1]
    )
    return [row for row in rows if row[1] > 0]


def fsdp_ranges(averages: list) -> dict[str, float]:
    """FSDP2's own ranges (parameter all-gathers before forward and backward, the gradient reduce
    after backward), CPU seconds including the ops inside, summed over the sharded modules."""
    found: dict[str, float] = {}
    for event in averages:
        if event.key.startswith("FSDP::"):
            kind = event.key.split(" (")[0]
            found[kind] = found.get(kind, 0.0) + event.cpu_time_total / 1e6
    return found


def report(step: int, wall: float, table: list[tuple[str, float, float]], averages: list, on_gpu: bool) -> str:
    phases = {e.key: e.cpu_time_total / 1e6 for e in averages if e.key in PHASES}
    lines = [f"step {step}: {wall:.3f} s wall; ops ranked by self {_clock(on_gpu)} time", "", "phase      seconds"]
    lines += [f"{name:<10} {phases[name]:8.3f}" for name in PHASES if name in phases]
    fsdp = fsdp_ranges(averages)
    if fsdp:
        lines += ["", f"{'FSDP range (CPU, inclusive)':<40} seconds"]
        lines += [f"{kind:<40} {seconds:7.3f}" for kind, seconds in sorted(fsdp.items(), key=lambda kv: -kv[1])]
    lines += ["", f"{'op':<60} {'self s':>9} {'share':>6}"]
    lines += [f"{name[:60]:<60} {seconds:9.4f} {share:6.1%}" for name, seconds, share in table[:TOP_OPS]]
    return "\n".join(lines) + "\n"
