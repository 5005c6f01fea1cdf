"""Cells compared the way the design runs them: paired by training seed.

Every cell trains once per seed, so what a seed does to both cells (its data order, its samples)
cancels in their difference. The comparison of cell A with cell B on a score is therefore over the
seeds both have it for:

    d_i = A_i - B_i           mean = mean(d)        SE = std(d, ddof=1) / sqrt(n)
    k of n                    seeds whose d_i has the sign of the mean (a zero mean: seeds with d_i = 0)

With one common seed there is no SE across seeds (NaN); the report then says so rather than
borrowing the evaluator's SE, which says nothing about training noise.
"""

from __future__ import annotations

import math

import pandas as pd

from results.formatting import DASH


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, score: str) -> dict[str, float]:
    """A - B on `score` over the seeds both cells' runs (frames with `seed` and `score`) have it for:
    {"mean", "se", "n", "agree"}; n = 0 (and NaNs) when they share no seed."""
    if score not in a or score not in b:
        return {"mean": math.nan, "se": math.nan, "n": 0, "agree": 0}
    left, right = by_seed(a, score), by_seed(b, score)
    diffs = [float(left[s]) - float(right[s]) for s in left.index if s in right.index]
    n = len(diffs)
    if not n:
        return {"mean": math.nan, "se": math.nan, "n": 0, "agree": 0}
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else math.nan
    sign = (mean > 0) - (mean < 0)
    agree = sum(((d > 0) - (d < 0)) == sign for d in diffs)
    return {"mean": mean, "se": se, "n": n, "agree": agree}


def by_seed(runs: pd.DataFrame, score: str) -> pd.Series:
    """`score` of each seed's run (indexed by the seed as a string), seeds without it left out."""
    values = runs.dropna(subset=[score]).drop_duplicates("seed")
    return pd.Series(values[score].to_numpy(), index=values["seed"].astype(str))


def describe_paired(result: dict[str, float], digits: int = 1) -> str:
    """`+3.0 ± 0.5 (3 of 3 seeds agree; beyond 2 SE)`; the verdict from the paired SE alone."""
    if not result["n"]:
        return f"{DASH} (no seed scored in both)"
    mean = f"{result['mean']:+.{digits}f}"
    if pd.isna(result["se"]):
        return f"{mean} (1 seed: no SE across seeds)"
    verdict = "beyond 2 SE" if abs(result["mean"]) > 2 * result["se"] else "within 2 SE"
    return f"{mean} ± {result['se']:.{digits}f} ({result['agree']} of {result['n']} seeds agree in sign; {verdict})"
