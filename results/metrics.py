"""What a metric column is: an eval score, its spread, a count, a step-wise metric; the headline per suite.

Names follow docs/DESIGN.md: `eval/<suite>/<metric>` (selected checkpoint) with `<metric>_se`
(or Arena-Hard's `ci_low`/`ci_high`), `eval_final/...` (final checkpoint), `eval_<rule>/...` (the
checkpoint an alternative selection rule picks, `harness eval --as-alternative`), step-wise
`train/*`, `val/*`, `time/*`, and `selected_step`. A suite's `quality` is a task's hidden ground
truth (tiny_chat), shown beside the headline, never as it. Pure functions of column names and frames.
"""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

EVAL_PREFIXES = ("eval/", "eval_final/")
SPREAD_SUFFIXES = ("_se", "/ci_low", "/ci_high", "_ci_low", "_ci_high")  # _ci_*: Arena-Hard v2.0 per category
COUNT_METRICS = ("mean_length",)
# The metric a suite is ranked by, in order of preference (evaluators/ names them so).
HEADLINE_METRICS = ("pass_at_1", "lc_winrate", "score", "winrate", "accuracy", "rating")
TRUTH_METRIC = "quality"  # a task's hidden ground truth in [0, 1] (the tiny chat task's), beside the proxy
# When an LC win rate is identifiable (lc_unidentifiable): its own SE at most this many points, and at
# least this share of answers on each side of the baseline's length (`lc_length_overlap`).
LC_MAX_SE = 5.0
LC_MIN_LENGTH_OVERLAP = 0.1


def metric_name(column: str) -> str:
    """`eval/math500/pass_at_1_se` -> `pass_at_1_se`."""
    return column.rsplit("/", 1)[-1]


def suite_of(column: str) -> str:
    return column.split("/")[1]


def is_score_column(column: str) -> bool:
    """An evaluation score: not a spread (_se, ci_low/high) nor a count (n_*, mean_length)."""
    name = metric_name(column)
    return (
        column.startswith(EVAL_PREFIXES)
        and not column.endswith(SPREAD_SUFFIXES)
        and not name.startswith("n_")
        and name not in COUNT_METRICS
    )


def eval_score_columns(frame: pd.DataFrame, final: bool | None = False) -> list[str]:
    """Evaluation scores: eval/* (final=False), eval_final/* (final=True), or both (None)."""
    prefixes = EVAL_PREFIXES if final is None else (("eval_final/",) if final else ("eval/",))
    return [c for c in frame.columns if c.startswith(prefixes) and is_score_column(c)]


def headline_columns(frame: pd.DataFrame, final: bool = False) -> list[str]:
    """One score per suite, the one the paper reports (pass_at_1, lc_winrate, score, ...)."""
    by_suite: dict[str, list[str]] = {}
    for column in eval_score_columns(frame, final):
        by_suite.setdefault(column.rsplit("/", 1)[0], []).append(column)
    chosen = []
    for suite, columns in by_suite.items():
        ranked = sorted(
            columns,
            key=lambda c: (
                HEADLINE_METRICS.index(metric_name(c)) if metric_name(c) in HEADLINE_METRICS else len(HEADLINE_METRICS),
                c,
            ),
        )
        chosen.append(ranked[0])
    return chosen


def spread_columns(frame: pd.DataFrame, score: str) -> list[str]:
    """The logged spread of a score: `<score>_se`, plus `ci_low`/`ci_high` for an Arena-Hard `score`."""
    base = score.rsplit("/", 1)[0]
    cis = (f"{base}/ci_low", f"{base}/ci_high") if metric_name(score) == "score" else ()
    return [c for c in (f"{score}_se", *cis) if c in frame.columns]


def step_metric_keys(frame: pd.DataFrame) -> list[str]:
    """Names of the step-wise metrics any run logged (train/*, val/*, time/*, ...; not eval/, eval_*/)."""
    return sorted(c for c in frame.columns if "/" in c and not c.split("/")[0].startswith("eval"))


def truth_column(frame: pd.DataFrame, score: str) -> str | None:
    """The ground-truth column of `score`'s suite (`eval/tiny_chat/quality` for `eval/tiny_chat/lc_winrate`)."""
    column = f"{score.rsplit('/', 1)[0]}/{TRUTH_METRIC}"
    return column if column in frame.columns and column != score and frame[column].notna().any() else None


def digits_for(column: str) -> int:
    """Decimals a column is written with: scores in percent 1, the 0..1 ground truth 3."""
    return 3 if metric_name(column).removesuffix("_se") == TRUTH_METRIC else 1


def lc_unidentifiable(run: pd.Series, score: str) -> str | None:
    """Why one run's LC win rate `score` cannot be read as a length-controlled number, None when it can.

    The LC is the GLM's preference at equal lengths. It is identifiable when (1) its own logged SE is
    at most LC_MAX_SE points (a wider one means the length and model terms were not separated:
    the bootstrap refits swing) and (2) at least LC_MIN_LENGTH_OVERLAP of the answers are no longer,
    and as many no shorter, than their baseline's (`lc_length_overlap`): otherwise equal length lies
    outside the data and the LC extrapolates the length term (an answer grown into a runaway string
    is longer than every baseline). Runs that did not log the overlap are judged by (1) alone."""
    if metric_name(score) != "lc_winrate":
        return None
    se = run.get(f"{score}_se", math.nan)
    if se is None or pd.isna(se):
        return "no SE logged"
    if se > LC_MAX_SE:
        return f"SE {se:.1f} > {LC_MAX_SE:g} points"
    overlap = run.get(f"{score.rsplit('/', 1)[0]}/lc_length_overlap", math.nan)
    if overlap is not None and not pd.isna(overlap) and overlap < LC_MIN_LENGTH_OVERLAP:
        return (
            f"only {100 * overlap:.0f}% of answers on one side of the baseline's length "
            f"(< {100 * LC_MIN_LENGTH_OVERLAP:.0f}%): equal length is an extrapolation"
        )
    return None


def metric_column_order(columns: Iterable[str]) -> list[str]:
    """selected_step, then eval/* (each score followed by its spread), eval_final/*, the rest."""
    columns = list(columns)

    def key(name: str):
        group = (
            0
            if name == "selected_step"
            else 1
            if name.startswith("eval/")
            else 2
            if name.startswith("eval_final/")
            else 3
            if name.startswith("eval_")
            else 4
        )
        base = name
        if name.endswith("_se"):
            base = name[:-3]
        elif name.endswith(("/ci_low", "/ci_high")):
            base = name.rsplit("/", 1)[0] + "/score"  # Arena-Hard's CI belongs to its score
        return (group, base, name != base, name)

    return sorted(columns, key=key)


def logged_se(group: pd.DataFrame, score: str) -> float:
    """A single run's own standard error: its `_se` metric, or a 95% CI's half width / 1.96."""
    if f"{score}_se" in group and not pd.isna(group[f"{score}_se"].iloc[0]):
        return float(group[f"{score}_se"].iloc[0])
    base = score.rsplit("/", 1)[0]
    if metric_name(score) == "score" and f"{base}/ci_low" in group and f"{base}/ci_high" in group:
        return float((group[f"{base}/ci_high"].iloc[0] - group[f"{base}/ci_low"].iloc[0]) / (2 * 1.96))
    return math.nan
