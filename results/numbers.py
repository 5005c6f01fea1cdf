"""The report's numbers per task mix, as frames: scores per cell, compute per phase, selected vs
final checkpoints, curves over seeds (mean ± SE)."""

from __future__ import annotations

import math

import pandas as pd

from harness.errors import DataError
from harness.selection import get_rule
from results.aggregate import seed_aggregate
from results.formatting import DASH, fmt
from results.labels import seed_sort_key
from results.metrics import headline_columns
from results.runs import with_seed_rows
from results.sweep_results import PHASES, TIME_KEYS, WAIT_KEY, Cell, ReportData, mean, value_at


def mix_scores(report: ReportData, task_mix: str) -> tuple[pd.DataFrame, list[str]]:
    """(seed-aggregated cells incl. the seed baseline, headline score columns) for one task mix."""
    cells = seed_aggregate(with_seed_rows(report.runs, task_mix))
    trained = cells[cells["method"] != "seed"]
    scores = [s for s in headline_columns(cells) if trained[s].notna().any()] or headline_columns(cells)
    return cells, scores


def cell_row(cells: pd.DataFrame, cell: Cell) -> pd.Series:
    match = cells[
        (cells["method"] == cell.method)
        & (cells["sync_every"] == cell.sync_every)
        & (cells["ref_sync_every"] == cell.ref_sync_every)
        & (cells["variant"] == cell.variant)
    ]
    return match.iloc[0]


def per_seed(cell: Cell, column: str) -> str:
    """A run-level value of each seed, "20" when they agree, else "20 / 30" (seed order)."""
    runs = cell.runs.sort_values("seed", key=lambda s: s.map(seed_sort_key))
    values = [fmt(v, 0) for v in runs[column]] if column in runs else [DASH]
    return values[0] if len(set(values)) == 1 else " / ".join(values)


def compute_frame(report: ReportData, task_mix: str) -> pd.DataFrame:
    """Per cell: seconds per phase (summed over steps, mean over seeds), total, the trainer's generate
    wait and its own time in the loop (wait + score + train + sync: less than the total when a worker
    generated ahead), generate share, speedup vs online DPO (its total / this total) and the runs' wall
    clock."""
    rows = []
    for cell in report.cells(task_mix):
        row = {"label": cell.label, "method": cell.method, "sync_every": cell.sync_every, "n_seeds": len(cell.runs)}
        for name, key in [*zip(PHASES, TIME_KEYS), ("generate_wait", WAIT_KEY)]:
            sums = [
                report.values(rid, key).sum() if (rid, key) in report.series else math.nan
                for rid in cell.runs["run_id"]
            ]
            row[f"{name}_s"] = mean(sums)
        row["total_s"] = sum(row[f"{p}_s"] for p in PHASES)
        row["trainer_s"] = row["generate_wait_s"] + sum(row[f"{p}_s"] for p in PHASES[1:])
        row["generate_share"] = row["generate_s"] / row["total_s"] if row["total_s"] else math.nan
        row["wall_s"] = mean(cell.runs["duration_s"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    online = frame[(frame["method"] == "dpo") & (frame["sync_every"] == "1")]["total_s"]
    frame["speedup_vs_online"] = (online.iloc[0] / frame["total_s"]) if len(online) else math.nan
    return frame


def run_selection(report: ReportData, run: pd.Series) -> dict[str, float]:
    """Selected / final / max-val-reward steps of one run and the validation length at each."""
    rid = run["run_id"]
    lengths, rewards = report.values(rid, "val/response_len"), report.values(rid, "val/reward")
    # The project's own rules (harness/selection.py) over the logged validation curve.
    steps = report.checkpoint_steps.get(rid) or [s for s in rewards.index if s > 0]
    best = pick_step("max_val_reward", {int(s): {"val/reward": float(v)} for s, v in rewards.items()}, steps)
    final = pick_step("final", {}, report.checkpoint_steps.get(rid) or list(lengths.index))
    selected = run.get("selected_step", math.nan)
    return {
        "selected": selected,
        "final": final,
        "max_reward": best,
        "len_selected": value_at(lengths, selected),
        "len_final": value_at(lengths, final),
        "len_max_reward": value_at(lengths, best),
    }


def pick_step(rule: str, metrics_by_step: dict[int, dict[str, float]], steps: list) -> float:
    """The step `rule` picks among `steps`, NaN when it cannot pick one (no metric logged there)."""
    if not steps:
        return math.nan
    try:
        return get_rule(rule)(metrics_by_step, sorted(int(s) for s in steps))
    except DataError:
        return math.nan


def selection_frame(report: ReportData, task_mix: str) -> pd.DataFrame:
    """Per cell: selected vs final checkpoint scores (mean over seeds) and validation lengths."""
    cells, scores = mix_scores(report, task_mix)
    rows = []
    for cell in report.cells(task_mix):
        agg = cell_row(cells, cell)
        picks = [run_selection(report, run) for _, run in cell.runs.iterrows()]
        row = {
            "label": cell.label,
            "selected_step": per_seed(cell, "selected_step"),
            "final_step": " / ".join(sorted({fmt(p["final"], 0) for p in picks})),
        }
        for score in scores:
            final = score.replace("eval/", "eval_final/", 1)
            row[f"{score}|selected"] = agg.get(score, math.nan)
            row[f"{score}|final"] = agg.get(final, math.nan)
            row[f"{score}|diff"] = row[f"{score}|selected"] - row[f"{score}|final"]
        for key in ("len_selected", "len_final", "len_max_reward"):
            row[key] = mean(p[key] for p in picks)
        rows.append(row)
    return pd.DataFrame(rows)


def curve(report: ReportData, cell: Cell, key: str) -> pd.DataFrame:
    """step, mean, se (NaN with one seed), n: a metric's history over the cell's seeds."""
    series = [report.values(rid, key) for rid in cell.runs["run_id"]]
    series = [s for s in series if not s.empty]
    if not series:
        return pd.DataFrame(columns=["step", "mean", "se", "n"])
    wide = pd.concat(series, axis=1)
    n = wide.notna().sum(axis=1)
    se = wide.std(axis=1, ddof=1) / n.pow(0.5)
    return pd.DataFrame(
        {"step": wide.index, "mean": wide.mean(axis=1).values, "se": se.where(n > 1).values, "n": n.values}
    ).sort_values("step")


def endpoints(report: ReportData, cell: Cell, key: str) -> tuple[float, float]:
    """(first, last) logged value of a step metric, mean over the cell's seeds."""
    pairs = [
        (s.iloc[0], s.iloc[-1])
        for s in (report.values(r, key).sort_index() for r in cell.runs["run_id"])
        if not s.empty
    ]
    return mean(p[0] for p in pairs), mean(p[1] for p in pairs)
