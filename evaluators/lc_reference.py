"""Offline LC regularised towards AlpacaEval's gamed baselines, from their published GLM weights.

alpaca_eval's leaderboard LC (`length_controlled_v1`) fits the model's length slope jointly with
the annotations of two "gamed" copies of the baseline (the same baseline model prompted to be
verbose / concise, weight 0.2 together). Those annotations are hub-only (`df_gamed.csv`), so a
fit without them lets a model whose judge preference tracks length in an unusual way pick any
slope: on real leaderboard models the unregularised GLM is off by up to 27 points (a gamed
model: 39.3 vs the official 12.2).

What alpaca_eval publishes in its repository is every model's fitted weights,
`src/alpaca_eval/metrics/weights/<annotator>/length_controlled_v1/baseline_<baseline>.csv`,
including the two gamed baselines' own length slopes: for weighted_alpaca_eval_gpt4_turbo
vs gpt4_1106_preview, rows `gpt4_1106_preview_verbose` (-1.5835274219761557) and
`gpt4_1106_preview_concise` (-1.6424856171097677) of column `np.tanh(std_delta_len)`. In
alpaca_eval the feature is tanh((len(baseline) - len(model)) / std); here it is
tanh((len(model) - len(baseline)) / std), so the slope changes sign.

The regularised GLM fixes the length slope at the mean of the two gamed-baseline slopes (the
judge's own length preference, measured on outputs that differ only in length) and fits the
remaining terms (model strength, and instruction difficulty when given) by maximum likelihood
(soft labels, no penalty). On 56 real leaderboard models' annotations (tests/fixtures/lc_real)
this lands within 2.7 points of the official LC on average, 5.5 at most.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

# (annotator, baseline generator) -> the gamed baselines' length slopes in alpaca_eval's sign
# convention (feature tanh((len_baseline - len_model) / std)), from the published weights file.
GAMED_BASELINE_SLOPES = {
    ("weighted_alpaca_eval_gpt4_turbo", "gpt4_1106_preview"): (-1.5835274219761557, -1.6424856171097677),
}

METHOD_OFFICIAL, METHOD_REGULARISED, METHOD_UNREGULARISED = "official", "regularised", "unregularised"


def gamed_length_slope(annotator: str | None, baseline: str | None) -> float | None:
    """The fixed length slope (harness sign: longer model output -> positive feature) for this
    annotator/baseline pair, or None when alpaca_eval publishes no gamed baselines for it."""
    slopes = GAMED_BASELINE_SLOPES.get((annotator or "", baseline or ""))
    return None if slopes is None else -float(np.mean(slopes))


def fit_fixed_slope(
    preferences: np.ndarray,
    length_feature: np.ndarray,
    slope: float,
    instruction_difficulty: Sequence[float] | None = None,
) -> dict[str, Any]:
    """LC with the length slope fixed: logit P = slope * length_feature + [w_d * difficulty] + b.

    b (and w_d) maximise the soft-label log likelihood (Newton's method); LC = 100 * mean of the
    predictions at length_feature = 0. SE = the std of those predictions / sqrt(n) when they vary
    (difficulty given), else the delta-method SE of sigmoid(b) from the Fisher information.
    """
    p = np.asarray(preferences, dtype=float)
    offset = slope * np.asarray(length_feature, dtype=float)
    columns = [np.ones_like(p)]
    if instruction_difficulty is not None:
        columns.append(np.asarray(instruction_difficulty, dtype=float))
    x = np.column_stack(columns)
    coef = np.zeros(x.shape[1])
    for _ in range(200):
        q = _sigmoid(offset + x @ coef)
        grad = x.T @ (q - p)
        hess = x.T @ (x * (q * (1 - q))[:, None]) + 1e-12 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        coef -= step
        if np.max(np.abs(step)) < 1e-12:
            break
    predicted = _sigmoid(x @ coef)
    if instruction_difficulty is not None and len(p) > 1:
        se = float(predicted.std(ddof=1) / math.sqrt(len(p))) * 100
    else:
        q = _sigmoid(offset + x @ coef)
        information = float(np.sum(q * (1 - q)))
        lc = float(predicted[0])
        se = 100 * lc * (1 - lc) / math.sqrt(information) if information > 0 else float("nan")
    weights = {"tanh_std_delta_len": float(slope), "model": float(coef[0])}
    if instruction_difficulty is not None:
        weights["instruction_difficulty"] = float(coef[1])
    return {
        "lc_winrate": float(predicted.mean()) * 100,
        "lc_winrate_se": se,
        "glm_weights": weights,
        "glm_C": float("inf"),
        "predicted_preferences": predicted.tolist(),
    }


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))
