"""The report's observations: sentences built from signs and 2-SE margins only (no hard-coded verdicts)."""

from __future__ import annotations

import math

import pandas as pd

from results.formatting import fmt
from results.metrics import digits_for, suite_of
from results.numbers import endpoints, selection_frame
from results.paired import describe_paired, paired_difference
from results.report.comparisons import compared_scores
from results.sweep_results import ReportData


def score_observations(report: ReportData, task_mix: str) -> list[str]:
    """Each cell against offline and online DPO, paired by seed (results/paired.py), on every headline
    score and its ground truth."""
    cells = {c.label: c for c in report.cells(task_mix)}
    scores = compared_scores(report, task_mix)
    lines = []
    for base_label in ("offline DPO", "online DPO"):
        base = cells.get(base_label)
        if base is None:
            continue
        for label, cell in cells.items():
            if label == base_label or (base_label == "online DPO" and label == "offline DPO"):
                continue
            for score in scores:
                what = suite_of(score) + (" quality (truth)" if score.endswith("/quality") else "")
                lines.append(
                    f"{label} − {base_label} on {what}: "
                    f"{describe_paired(paired_difference(cell.runs, base.runs, score), digits_for(score))}"
                )
    return lines


def curve_observations(report: ReportData, task_mix: str, key: str, what: str, digits: int) -> list[str]:
    lines = []
    for cell in report.cells(task_mix):
        first, last = endpoints(report, cell, key)
        if pd.isna(first):
            continue
        ratio = last / first if first else math.nan
        lines.append(
            f"{what}, {cell.label}: {fmt(first, digits)} at the first validation → {fmt(last, digits)} "
            f"at the last (× {fmt(ratio, 2)})"
        )
    return lines


def selection_observations(report: ReportData, task_mix: str) -> list[str]:
    lines = []
    for _, row in selection_frame(report, task_mix).iterrows():
        if pd.isna(row["len_selected"]):
            continue
        lines.append(
            f"{row['label']}: validation length {fmt(row['len_selected'])} at the selected checkpoint vs "
            f"{fmt(row['len_max_reward'])} at the max-val-reward checkpoint and {fmt(row['len_final'])} "
            f"at the final one (selected − max-reward: {row['len_selected'] - row['len_max_reward']:+.1f})"
        )
    return lines


def compute_observations(frame: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in frame.iterrows():
        if pd.isna(row["total_s"]):
            continue
        line = (
            f"{row['label']}: {row['total_s']:.1f} s in the four phases, {100 * row['generate_share']:.0f}% "
            f"generating; online DPO / this = × {fmt(row.get('speedup_vs_online', math.nan), 2)}"
        )
        wait = row.get("generate_wait_s", math.nan)
        if not pd.isna(wait) and row["generate_s"] > 0:
            line += (
                f"; the trainer waited {wait:.1f} s for rollouts ({100 * wait / row['generate_s']:.0f}% of "
                f"the generation time)"
            )
        lines.append(line)
    return lines
