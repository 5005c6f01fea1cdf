"""The report's observations: sentences built from signs and 2-SE margins only (no hard-coded verdicts)."""

from __future__ import annotations

import math

import pandas as pd

from results.formatting import fmt
from results.metrics import suite_of
from results.numbers import cell_row, endpoints, mix_scores, selection_frame
from results.sweep_results import ReportData

def compare(a: float, a_se: float, b: float, b_se: float) -> str:
    """`+X.X ± Y.Y points (higher, beyond 2 SE)`: the wording comes from sign and margin only."""
    if pd.isna(a) or pd.isna(b):
        return "not comparable (a score is missing)"
    diff = a - b
    se = math.sqrt((0 if pd.isna(a_se) else a_se) ** 2 + (0 if pd.isna(b_se) else b_se) ** 2)
    if pd.isna(a_se) or pd.isna(b_se):
        return f"{diff:+.1f} points (SE unknown)"
    if abs(diff) > 2 * se:
        verdict = ("higher" if diff > 0 else "lower") + ", beyond 2 SE"
    else:
        verdict = "within 2 SE"
    return f"{diff:+.1f} ± {se:.1f} points ({verdict})"


def score_observations(report: ReportData, task_mix: str) -> list[str]:
    cells, scores = mix_scores(report, task_mix)
    trained = {c.label: cell_row(cells, c) for c in report.cells(task_mix)}
    lines = []
    for base_label in ("offline DPO", "online DPO"):
        base = trained.get(base_label)
        if base is None:
            continue
        for label, row in trained.items():
            if label == base_label or (base_label == "online DPO" and label == "offline DPO"):
                continue
            for score in scores:
                lines.append(f"{label} − {base_label} on {suite_of(score)}: "
                             f"{compare(row[score], row[f'{score}_se'], base[score], base[f'{score}_se'])}")
    return lines


def curve_observations(report: ReportData, task_mix: str, key: str, what: str, digits: int) -> list[str]:
    lines = []
    for cell in report.cells(task_mix):
        first, last = endpoints(report, cell, key)
        if pd.isna(first):
            continue
        ratio = last / first if first else math.nan
        lines.append(f"{what}, {cell.label}: {fmt(first, digits)} at the first validation → {fmt(last, digits)} "
                     f"at the last (× {fmt(ratio, 2)})")
    return lines


def selection_observations(report: ReportData, task_mix: str) -> list[str]:
    lines = []
    for _, row in selection_frame(report, task_mix).iterrows():
        if pd.isna(row["len_selected"]):
            continue
        lines.append(f"{row['label']}: validation length {fmt(row['len_selected'])} at the selected checkpoint vs "
                     f"{fmt(row['len_max_reward'])} at the max-val-reward checkpoint and {fmt(row['len_final'])} "
                     f"at the final one (selected − max-reward: {row['len_selected'] - row['len_max_reward']:+.1f})")
    return lines


def compute_observations(frame: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in frame.iterrows():
        if pd.isna(row["total_s"]):
            continue
        line = (f"{row['label']}: {row['total_s']:.1f} s in the four phases, {100 * row['generate_share']:.0f}% "
                f"generating; online DPO / this = × {fmt(row.get('speedup_vs_online', math.nan), 2)}")
        wait = row.get("generate_wait_s", math.nan)
        if not pd.isna(wait) and row["generate_s"] > 0:
            line += (f"; the trainer waited {wait:.1f} s for rollouts ({100 * wait / row['generate_s']:.0f}% of "
                     f"the generation time)")
        lines.append(line)
    return lines
