"""`harness bench`: where the time of a training step goes, on the embedded tiny default.

    harness bench                      # 20 online DPO steps of sweeps/runs/tiny.yaml
    harness bench sweeps/runs/tiny.yaml method=grpo --steps 30

Prints seconds per phase (generate, score, train, sync, other), their share, and generated
tokens per second. It is a benchmark to compare changes against, not a test.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from harness.config import load_run_config
from harness.tracking import MemoryTracker
from harness.trainer import train

PHASES = ("generate", "score", "train", "sync")


def run_bench(config: str | None, overrides: list[str], steps: int = 20) -> dict[str, float]:
    config = config or str(Path(__file__).resolve().parent.parent / "sweeps" / "runs" / "tiny.yaml")
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        cfg = load_run_config(config, [*overrides, f"train.steps={steps}", f"output_dir={tmp}",
                                       f"validation.every={steps + 1}", f"checkpoint.every={steps + 1}"])
        tracker = MemoryTracker()
        started = time.perf_counter()
        train(cfg, tracker=tracker, progress=True)
        wall = time.perf_counter() - started
    totals = {phase: sum(v for step, v in tracker.series(f"time/{phase}_s") if step > 0) for phase in PHASES}
    tokens = sum(v for _, v in tracker.series("train/generated_tokens"))
    step_wall = sum(totals.values())
    report = {**{f"{p}_s": t for p, t in totals.items()}, "steps": steps, "wall_s": wall,
              "per_step_s": step_wall / steps, "gen_tokens_per_s": tokens / max(totals["generate"], 1e-9)}
    print(f"\nharness bench: {cfg.method} sync_every={cfg.sync_every} task_mix={cfg.task_mix}, {steps} steps of "
          f"{cfg.train.prompts_per_step} prompts x {cfg.train.samples_per_prompt} samples")
    print(f"{'phase':<10}{'seconds':>10}{'per step':>10}{'share':>8}")
    other = wall - step_wall
    for phase, seconds in [*totals.items(), ("other", other)]:
        print(f"{phase:<10}{seconds:>10.2f}{seconds / steps:>10.3f}{seconds / wall:>8.1%}")
    print(f"{'total':<10}{wall:>10.2f}{wall / steps:>10.3f}")
    print(f"generated tokens: {tokens:.0f} ({report['gen_tokens_per_s']:.0f} tokens/s while generating)")
    report["other_s"] = other
    return report
