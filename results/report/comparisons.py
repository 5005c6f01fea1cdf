"""report.md's comparisons: cells paired by seed, and the ground truth at two selection rules' picks."""

from __future__ import annotations

import math

import pandas as pd

from results.formatting import DASH, fmt, md_table
from results.labels import seed_sort_key
from results.metrics import digits_for, metric_name, suite_of, truth_column
from results.numbers import mix_scores, run_selection
from results.paired import describe_paired, paired_difference
from results.sweep_results import Cell, ReportData

ALTERNATIVE_RULE = "max_val_reward"  # the pick the length-normalized one is set against
ALTERNATIVE_PREFIX = f"eval_{ALTERNATIVE_RULE}/"  # evaluators.run.alternative_prefix


def compared_scores(report: ReportData, task_mix: str) -> list[str]:
    """Each headline score followed by its suite's ground truth, when the suite has one."""
    _, scores = mix_scores(report, task_mix)
    runs = report.runs
    out = []
    for score in scores:
        out.append(score)
        truth = truth_column(runs, score)
        if truth:
            out.append(truth)
    return out


def base_cell(cells: list[Cell]) -> Cell | None:
    """What the other cells are compared with: online DPO (the paper's reference row), else the first."""
    return next((c for c in cells if c.label == "online DPO"), cells[0] if cells else None)


def paired_table(report: ReportData, task_mix: str) -> str | None:
    cells = report.cells(task_mix)
    base, scores = base_cell(cells), compared_scores(report, task_mix)
    if base is None or len(cells) < 2 or not scores:
        return None
    header = ["method", *(f"{suite_of(s)} {display(s)} − {base.label}" for s in scores)]
    rows = [
        [cell.label, *(describe_paired(paired_difference(cell.runs, base.runs, s), digits_for(s)) for s in scores)]
        for cell in cells
        if cell is not base
    ]
    return md_table(header, rows)


def display(column: str) -> str:
    return f"{metric_name(column)} (truth)" if metric_name(column) == "quality" else metric_name(column)


def truth_at_picks(report: ReportData, task_mix: str) -> tuple[pd.DataFrame, list[str]]:
    """Per run: its selected (length-normalized) step and the max-val-reward step, with the headline and
    ground truth at each. The second pick's scores are `eval_max_val_reward/...` when logged, the
    selected checkpoint's own when both rules pick the same step, else missing (and noted)."""
    scores = compared_scores(report, task_mix)
    if not any(metric_name(s) == "quality" for s in scores):
        return pd.DataFrame(), []
    rows, missing = [], []
    for cell in report.cells(task_mix):
        runs = cell.runs.sort_values("seed", key=lambda s: s.map(seed_sort_key))
        for _, run in runs.iterrows():
            selected = run.get("selected_step", math.nan)
            alt = run.get(f"selected_step_{ALTERNATIVE_RULE}", math.nan)
            if pd.isna(alt):
                alt = run_selection(report, run)["max_reward"]
            row = {"label": cell.label, "run": run["run_name"], "seed": run["seed"], "step": selected, "alt_step": alt}
            for score in scores:
                logged = ALTERNATIVE_PREFIX + score.split("/", 1)[1]
                row[score] = run.get(score, math.nan)
                row[f"{score}|alt"] = run.get(logged, math.nan)
                if pd.isna(row[f"{score}|alt"]) and not pd.isna(selected) and selected == alt:
                    row[f"{score}|alt"] = row[score]
            if any(pd.isna(row[f"{s}|alt"]) for s in scores):
                missing.append(run["run_id"][:8])
            rows.append(row)
    notes = (
        [
            f"{len(missing)} run(s) lack scores at the max-val-reward pick ({', '.join(missing[:6])}): evaluate it with "
            f"`harness eval RUN_ID --rule {ALTERNATIVE_RULE} --as-alternative`."
        ]
        if missing
        else []
    )
    return pd.DataFrame(rows), notes


def truth_at_picks_table(frame: pd.DataFrame) -> str:
    scores = [c for c in frame.columns if c.startswith("eval/") and "|" not in c]
    header = ["method", "run", "len-norm step", "max-val-reward step"]
    header += [
        h
        for s in scores
        for h in (f"{suite_of(s)} {display(s)} @len-norm", f"{suite_of(s)} {display(s)} @max-val-reward")
    ]
    rows = [
        [
            r["label"],
            r["run"],
            fmt(r["step"], 0),
            fmt(r["alt_step"], 0),
            *(v for s in scores for v in (fmt(r[s], digits_for(s)), fmt(r[f"{s}|alt"], digits_for(s)))),
        ]
        for _, r in frame.iterrows()
    ]
    return md_table(header, rows) if rows else DASH


def picks_paired_table(frame: pd.DataFrame) -> str:
    """Per cell: the length-normalized pick minus the max-val-reward pick on each score, paired by
    seed (results.paired), over the runs scored at both picks."""
    scores = [c for c in frame.columns if c.startswith("eval/") and "|" not in c]
    header = ["method", *(f"{suite_of(s)} {display(s)}: len-norm − max-val-reward" for s in scores)]
    rows = []
    for label, runs in frame.groupby("label", sort=False):
        at_len_norm = runs[["seed", *scores]]
        at_max_reward = runs[["seed"]].assign(**{s: runs[f"{s}|alt"] for s in scores})
        pairs = (paired_difference(at_len_norm, at_max_reward, s) for s in scores)
        rows.append([label, *(describe_paired(p, digits_for(s)) for p, s in zip(pairs, scores))])
    return md_table(header, rows) if rows else DASH
