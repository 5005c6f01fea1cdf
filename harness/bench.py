"""`harness bench`: where the time of a training step goes, and what semi-online saves.

    harness bench                      # 20 online DPO steps of sweeps/runs/tiny.yaml
    harness bench sweeps/runs/tiny.yaml method=grpo --steps 30
    harness bench sweeps/runs/tiny.yaml --sync-every 1,5,10,inf rollout.placement=worker [--repeats 2] [--json]

One setting: prints seconds per phase (generate, score, train, sync, other), their share, the
time the trainer waited for rollouts, and generated tokens per second.

Comparison mode (`--sync-every`): runs each sync interval (all other overrides shared), the
settings interleaved round-robin `--repeats` times (A B A B, so a machine that slows down
mid-way hurts every setting alike), and prints one row per setting: wall seconds per training
step (the median over repeats), the trainer's generate wait per step, generation time per step
and the speed-up over s=1 (over the first setting when 1 is not listed). With `--json` the last
line is a JSON list with one object per setting. It is a benchmark, not a test.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from harness.config import INF, format_interval, load_run_config, parse_interval
from harness.errors import ConfigError
from harness.tracking import MemoryTracker

PHASES = ("generate", "score", "train", "sync")
TINY = Path(__file__).resolve().parent.parent / "sweeps" / "runs" / "tiny.yaml"


class TimedTracker(MemoryTracker):
    """Remembers when each step's metrics arrived: the training loop's own wall clock."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_started: float | None = None
        self.last_step_done: float | None = None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        now = time.perf_counter()
        if step == 0 and "val/reward" in metrics:
            self.loop_started = now  # the step-0 validation is the last thing before the loop
        if "train/loss" in metrics:
            self.last_step_done = now


def _bench_config(config: str | None, overrides: list[str], steps: int, output_dir: str):
    return load_run_config(
        config or TINY,
        [
            *overrides,
            f"train.steps={steps}",
            f"output_dir={output_dir}",
            f"validation.every={steps + 1}",
            f"checkpoint.every={steps + 1}",
        ],
    )


def measure(config: str | None, overrides: list[str], steps: int, progress: bool = True) -> dict:
    """One short run; per-step means of every phase, the loop's wall time per step, the run's wall time."""
    from harness.train.trainer import train  # torch and transformers: bad arguments fail before this import

    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        cfg = _bench_config(config, overrides, steps, tmp)
        tracker = TimedTracker()
        started = time.perf_counter()
        train(cfg, tracker=tracker, progress=progress)
        wall = time.perf_counter() - started
    totals = {phase: sum(v for step, v in tracker.series(f"time/{phase}_s") if step > 0) for phase in PHASES}
    wait = sum(v for step, v in tracker.series("time/generate_wait_s") if step > 0)
    tokens = sum(v for _, v in tracker.series("train/generated_tokens"))
    loop = tracker.last_step_done - tracker.loop_started
    return {
        "sync_every": cfg.sync_every,
        "placement": cfg.rollout.placement,
        "method": cfg.method,
        "task_mix": cfg.task_mix,
        "steps": steps,
        "prompts_per_step": cfg.train.prompts_per_step,
        "samples_per_prompt": cfg.train.samples_per_prompt,
        "wall_s": wall,
        "loop_s": loop,
        "per_step_s": loop / steps,
        "generate_wait_s": wait / steps,
        **{f"{p}_s": totals[p] / steps for p in PHASES},
        "gen_tokens_per_s": tokens / max(totals["generate"], 1e-9),
    }


def run_bench(config: str | None, overrides: list[str], steps: int = 20) -> dict:
    """One setting: the phase table (totals, per step, share of the loop's wall time)."""
    report = measure(config, overrides, steps)
    loop = report["loop_s"]
    print(
        f"\nharness bench: {report['method']} sync_every={format_interval(report['sync_every'])} "
        f"task_mix={report['task_mix']} placement={report['placement']}, {steps} steps of "
        f"{report['prompts_per_step']} prompts x {report['samples_per_prompt']} samples"
    )
    print(f"{'phase':<10}{'seconds':>10}{'per step':>10}{'share':>8}")
    # What the trainer itself spent: the generate wait, not the (possibly overlapped) generation.
    sequential = {"generate": report["generate_wait_s"], **{p: report[f"{p}_s"] for p in PHASES[1:]}}
    other = report["per_step_s"] - sum(sequential.values())
    for phase, per_step in [*sequential.items(), ("other", other)]:
        label = "gen wait" if phase == "generate" and report["placement"] == "worker" else phase
        print(f"{label:<10}{per_step * steps:>10.2f}{per_step:>10.3f}{per_step * steps / loop:>8.1%}")
    print(
        f"{'total':<10}{loop:>10.2f}{report['per_step_s']:>10.3f}   (the run: {report['wall_s']:.1f} s with "
        f"set-up and validation)"
    )
    print(
        f"generation: {report['generate_s']:.3f} s per step, {report['gen_tokens_per_s']:.0f} tokens/s while "
        f"generating; the trainer waited {report['generate_wait_s']:.3f} s per step for rollouts"
    )
    report["other_s"] = other
    return report


def parse_sync_list(text: str) -> list[float | int]:
    values = []
    for part in text.split(","):
        try:
            values.append(parse_interval(part.strip()))
        except ValueError:
            raise ConfigError(
                f"--sync-every {text}: {part.strip()!r} is not a sync interval; expected a "
                f"comma-separated list of positive integers or inf, e.g. 1,5,10,inf."
            ) from None
    if len(set(values)) != len(values):
        raise ConfigError(f"--sync-every {text}: a setting is listed twice; expected each interval once.")
    return values


def compare(
    config: str | None,
    overrides: list[str],
    sync_values: list[float | int],
    steps: int = 20,
    repeats: int = 1,
    as_json: bool = False,
) -> list[dict]:
    """Every sync interval, interleaved `repeats` times; one summary per interval."""
    if any(text.split("=", 1)[0].strip() == "sync_every" for text in overrides):
        raise ConfigError(
            "harness bench: give the sync intervals with --sync-every only, not also as the override sync_every=..."
        )
    for value in sync_values:  # every setting is validated before any of them runs
        _bench_config(config, [*overrides, f"sync_every={format_interval(value)}"], steps, "unused")
    runs: dict[float | int, list[dict]] = {value: [] for value in sync_values}
    for repeat in range(repeats):
        for value in sync_values:
            print(f"harness bench: sync_every={format_interval(value)} (repeat {repeat + 1} of {repeats})", flush=True)
            runs[value].append(
                measure(config, [*overrides, f"sync_every={format_interval(value)}"], steps, progress=not as_json)
            )
    summaries = [summarize(value, runs[value]) for value in sync_values]
    baseline = next((s for s in summaries if s["sync_every"] == 1), summaries[0])
    for summary in summaries:
        summary["speedup"] = baseline["per_step_s"] / summary["per_step_s"]
    print_comparison(summaries, baseline, steps, repeats)
    if as_json:
        print(json.dumps(summaries))
    return summaries


def summarize(value: float | int, runs: list[dict]) -> dict:
    """Medians over the repeats; sync_every as an int, or "inf"."""
    keys = ("per_step_s", "wall_s", "generate_wait_s", "generate_s", "score_s", "train_s", "sync_s")
    first = runs[0]
    return {
        "sync_every": "inf" if value == INF else int(value),
        "placement": first["placement"],
        "method": first["method"],
        "task_mix": first["task_mix"],
        "steps": first["steps"],
        "repeats": len(runs),
        **{key: statistics.median(run[key] for run in runs) for key in keys},
        "per_step_s_runs": [run["per_step_s"] for run in runs],
    }


def print_comparison(summaries: list[dict], baseline: dict, steps: int, repeats: int) -> None:
    first = summaries[0]
    print(
        f"\nharness bench comparison: {first['method']} task_mix={first['task_mix']} placement={first['placement']}, "
        f"{steps} steps per run, {repeats} interleaved repeat(s), medians; speed-up over "
        f"s={baseline['sync_every']}"
    )
    print(
        f"{'sync_every':<12}{'s/step':>9}{'gen wait/step':>15}{'generate/step':>15}{'score+train/step':>18}"
        f"{'speed-up':>10}{'vs s=' + str(baseline['sync_every']):>10}"
    )
    for s in summaries:
        print(
            f"{str(s['sync_every']):<12}{s['per_step_s']:>9.3f}{s['generate_wait_s']:>15.3f}{s['generate_s']:>15.3f}"
            f"{s['score_s'] + s['train_s']:>18.3f}{s['speedup']:>9.2f}x{1 / s['speedup']:>9.2f}x"
        )
