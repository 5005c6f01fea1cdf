"""AlpacaEval 2.0 win rates: the plain win rate and the length-controlled (LC) win rate.

Preferences are P(model output beats the baseline output) per instruction, in [0, 1]
(a discrete judge gives 1 / 0, and a tie 0.5; a weighted judge gives any probability).

LC win rate (Dubois et al. 2024, `alpaca_eval.metrics.glm_winrate`, GLM "length_controlled_v1"):
a logistic regression (no intercept) of the preference on
    tanh(delta_len / std(delta_len))      delta_len = len(model) - len(baseline), in characters
  + instruction_difficulty                a per-instruction constant fitted by the AlpacaEval
                                          authors on many models (hub file, see below)
  + model term                            a column of ones: the model's own strength
then LC = 100 * mean over instructions of the prediction with the length term set to 0.

The fit mirrors alpaca_eval's `fit_LogisticRegressionCV`: soft labels (each instruction appears
once with label 1 and weight p, once with label 0 and weight 1 - p), L1 penalty (sklearn
liblinear, `||w||_1 + C * loss`; here the same objective, solved by proximal Newton without
sklearn, checked against liblinear to 1e-8), no intercept, C chosen among 10 values
logspace(-4, 4) by 5-fold cross-validation over instructions on the continuous log loss, then
refit on all instructions. alpaca_eval additionally adds the annotations of two "gamed" (verbose /
concise) baselines with weight 0.2 to pull the length and difficulty weights towards the
baseline's; that file and the instruction difficulties are hub-only (`tatsu-lab/alpaca_eval`,
`df_gamed.csv` / `instruction_difficulty.csv`).

Every LC carries its method (`lc_method` in the result):
- `official`: the real `alpaca_eval` package (extra `alpaca`) ran and fetched its hub files: the
  leaderboard's `length_controlled_v1`, exactly.
- `regularised`: offline, for an annotator/baseline pair whose gamed baselines alpaca_eval
  publishes (evaluators/lc_reference.py: weighted_alpaca_eval_gpt4_turbo vs gpt4_1106_preview),
  the length slope is fixed at theirs.
- `unregularised`: otherwise, the GLM above without the gamed rows (alpaca_eval's
  `length_controlled_minimal`, plus the difficulty term when difficulties are passed in).
When the official path was wanted and did not run, a warning names the reason (package
missing, HF_HUB_OFFLINE set, hub unreachable, alpaca_eval raised). With HF_HUB_OFFLINE set
no attempt is made; otherwise one 3-second connection probe replaces the hub's retries.

Standard errors: the plain win rate's SE is the standard error of the mean preference, as
alpaca_eval reports it. The LC SE follows alpaca_eval (std of the per-instruction predicted
preferences / sqrt(n)) when those predictions vary (difficulty term present); without the
difficulty term they are all equal, so the SE is instead the std of the LC win rate over 100
bootstrap resamples of instructions (refit at the least-penalised C = 1e4, fixed seed), and
`notes` says so.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from evaluators.lc_official import official_lc
from evaluators.lc_reference import (
    METHOD_OFFICIAL,
    METHOD_REGULARISED,
    METHOD_UNREGULARISED,
    fit_fixed_slope,
    gamed_length_slope,
)

log = logging.getLogger(__name__)

C_GRID = np.logspace(-4, 4, 10)  # sklearn LogisticRegressionCV's default Cs=10
CV_SPLITS = 5
BOOTSTRAP_ROUNDS = 100
NO_DIFFICULTY_NOTE = "instruction difficulty unavailable; LC fitted without the difficulty term"


def winrate_stats(preferences: Sequence[float]) -> dict[str, float]:
    """Plain win rate (x100) with its standard error, plus discrete counts.

    A preference of 0.5 is a tie (counts 0.5); SE = std(ddof=1) / sqrt(n) * 100.
    """
    p = _as_preferences(preferences)
    n = len(p)
    se = float(p.std(ddof=1) / math.sqrt(n)) * 100 if n > 1 else float("nan")
    wins, losses = int((p > 0.5).sum()), int((p < 0.5).sum())
    return {
        "winrate": float(p.mean()) * 100,
        "winrate_se": se,
        "n_wins": wins,
        "n_wins_base": losses,
        "n_draws": n - wins - losses,
        "n_total": n,
        "discrete_winrate": (wins + 0.5 * (n - wins - losses)) / n * 100,
    }


def length_features(model_lengths: Sequence[float], baseline_lengths: Sequence[float]) -> np.ndarray:
    """tanh(delta / std(delta)); all zeros when every length difference is the same."""
    return _tanh_standardised(np.asarray(model_lengths, dtype=float) - np.asarray(baseline_lengths, dtype=float))


def _tanh_standardised(delta: np.ndarray) -> np.ndarray:
    std = delta.std(ddof=1) if len(delta) > 1 else 0.0
    if not np.isfinite(std) or std == 0:
        # no spread: the length term cannot be separated from the model term, so drop it
        return np.zeros_like(delta)
    return np.tanh(delta / std)


def length_controlled_winrate(
    preferences: Sequence[float],
    model_outputs: Sequence[str],
    baseline_outputs: Sequence[str],
    *,
    instruction_difficulty: Sequence[float] | None = None,
    instruction_index: Sequence[int] | None = None,
    use_alpaca_eval: bool = True,
    annotator: str | None = None,
    baseline: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """LC and plain win rates for one model against one baseline.

    Returns {lc_winrate, lc_winrate_se, lc_method, winrate, winrate_se, n_*, avg_len,
    glm_weights, glm_C, backend, notes}. `instruction_index` is each row's position in the
    official 805-instruction set (the real alpaca_eval looks difficulties up by it, so it is
    tried whether or not `instruction_difficulty` is given). `annotator` (alpaca_eval's name
    for the judge) and `baseline` (the baseline's generator name) pick the regularised GLM.
    """
    p = _as_preferences(preferences)
    if not (len(p) == len(model_outputs) == len(baseline_outputs)):
        raise ValueError("preferences, model_outputs and baseline_outputs must have the same length")
    result: dict[str, Any] = winrate_stats(p)
    result["avg_len"] = float(np.mean([len(o) for o in model_outputs]))
    if use_alpaca_eval:
        official = official_lc(p, model_outputs, baseline_outputs, instruction_index)
        if official is not None:
            result.update(official, lc_method=METHOD_OFFICIAL)
            return result
    lengths_m = [len(o) for o in model_outputs]
    lengths_b = [len(o) for o in baseline_outputs]
    slope = gamed_length_slope(annotator, baseline)
    if slope is not None:
        fitted = fit_fixed_slope(p, length_features(lengths_m, lengths_b), slope, instruction_difficulty)
        note = (
            f"LC regularised: length slope fixed at alpaca_eval's gamed baselines' ({slope:.4f}) for "
            f"{annotator} vs {baseline}"
        )
        result.update(fitted, backend="harness", notes=note, lc_method=METHOD_REGULARISED)
        return result
    result.update(fit_length_controlled(p, lengths_m, lengths_b, instruction_difficulty, seed=seed))
    unregularised = (
        f"LC unregularised (alpaca_eval's length_controlled_minimal GLM"
        f"{' + difficulty' if instruction_difficulty is not None else ''}): no published gamed "
        f"baselines for annotator {annotator!r} vs baseline {baseline!r}"
    )
    result["notes"] = "; ".join(filter(None, [unregularised, result["notes"]]))
    result["lc_method"] = METHOD_UNREGULARISED
    return result


def fit_length_controlled(
    preferences: Sequence[float],
    model_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    instruction_difficulty: Sequence[float] | None = None,
    *,
    C: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Our implementation of the LC GLM (see module docstring). C=None selects C by CV."""
    p = _as_preferences(preferences)
    length_col = length_features(model_lengths, baseline_lengths)
    columns = {"tanh_std_delta_len": length_col}
    notes = []
    if instruction_difficulty is not None:
        columns["instruction_difficulty"] = np.asarray(instruction_difficulty, dtype=float)
    else:
        notes.append(NO_DIFFICULTY_NOTE)
        log.info(NO_DIFFICULTY_NOTE)
    columns["model"] = np.ones_like(p)
    x = np.column_stack(list(columns.values()))
    chosen_c = select_c(x, p) if C is None else float(C)
    coef = fit_soft_logistic(x, p, chosen_c)
    x_test = x.copy()
    x_test[:, 0] = 0.0  # the counterfactual: no length difference
    predicted = _sigmoid(x_test @ coef)
    if instruction_difficulty is not None and len(p) > 1:
        se = float(predicted.std(ddof=1) / math.sqrt(len(p))) * 100
    else:
        # at the least-penalised C: the selected C may pin the model term at 0 (LC = 50 in
        # every resample), which would report a spurious SE of 0
        delta = np.asarray(model_lengths, dtype=float) - np.asarray(baseline_lengths, dtype=float)
        se = bootstrap_lc_se(x, p, delta, float(C_GRID[-1]), seed=seed)
        notes.append(f"LC standard error from {BOOTSTRAP_ROUNDS} bootstrap resamples of instructions")
    return {
        "lc_winrate": float(predicted.mean()) * 100,
        "lc_winrate_se": se,
        "glm_weights": dict(zip(columns, map(float, coef))),
        "glm_C": chosen_c,
        "backend": "harness",
        "notes": "; ".join(notes),
        "predicted_preferences": predicted.tolist(),
    }


def fit_soft_logistic(x: np.ndarray, p: np.ndarray, C: float, *, max_iter: int = 100) -> np.ndarray:
    """L1-penalised logistic regression without intercept on soft labels p.

    Minimises ||w||_1 / C + sum_i [log(1 + exp(x_i w)) - p_i x_i w], which is exactly what
    alpaca_eval's liblinear fit minimises after duplicating each row with label 1 (weight p)
    and label 0 (weight 1 - p). Solved by proximal Newton steps (the L1 quadratic subproblem by
    coordinate descent, then a backtracking line search): a handful of features, so cheap.
    """
    lam = 1.0 / C
    w = np.zeros(x.shape[1])

    def objective(v: np.ndarray) -> float:
        z = x @ v
        return float(np.sum(np.logaddexp(0, z) - p * z) + lam * np.abs(v).sum())

    current = objective(w)
    for _ in range(max_iter):
        q = _sigmoid(x @ w)
        grad = x.T @ (q - p)
        hess = x.T @ (x * (q * (1 - q))[:, None])
        step = _l1_quadratic_step(w, grad, hess, lam)
        decrease = grad @ step + lam * (np.abs(w + step).sum() - np.abs(w).sum())
        t = 1.0
        while t > 1e-12 and objective(w + t * step) > current + 1e-4 * t * decrease:
            t *= 0.5
        w = w + t * step
        previous, current = current, objective(w)
        if np.max(np.abs(t * step)) < 1e-10 or previous - current < 1e-14:
            break
    return w


def _l1_quadratic_step(w, grad, hess, lam, sweeps: int = 100) -> np.ndarray:
    """argmin_d grad.d + d.H.d / 2 + lam |w + d|_1, by cyclic coordinate descent."""
    d = np.zeros_like(w)
    for _ in range(sweeps):
        largest_change = 0.0
        for j in range(len(w)):
            a = max(hess[j, j], 1e-10)
            b = grad[j] + hess[j] @ d - hess[j, j] * d[j]  # linear term with the other d_k fixed
            u = _soft_threshold(w[j] - b / a, lam / a)  # the new w_j + d_j
            largest_change = max(largest_change, abs(u - w[j] - d[j]))
            d[j] = u - w[j]
        if largest_change < 1e-13:
            break
    return d


def _soft_threshold(value: float, threshold: float) -> float:
    return math.copysign(max(abs(value) - threshold, 0.0), value)


def select_c(x: np.ndarray, p: np.ndarray) -> float:
    """C with the best mean held-out continuous log loss over 5 folds of instructions.

    alpaca_eval uses sklearn's GroupKFold over instructions (all groups the same size, so its
    folds are a round-robin deal); this deals instruction i to fold i % 5.
    """
    n = len(p)
    splits = min(CV_SPLITS, n)
    if splits < 2:
        return 100.0  # alpaca_eval's C when it does not cross-validate
    fold_of = np.arange(n) % splits
    best_c, best_loss = float(C_GRID[0]), math.inf
    for c in C_GRID:
        losses = []
        for fold in range(splits):
            train, test = fold_of != fold, fold_of == fold
            coef = fit_soft_logistic(x[train], p[train], c)
            losses.append(_soft_log_loss(p[test], _sigmoid(x[test] @ coef)))
        mean_loss = float(np.mean(losses))
        if mean_loss < best_loss - 1e-12:  # ties keep the smaller C, as sklearn's argmax does
            best_c, best_loss = float(c), mean_loss
    return best_c


def bootstrap_lc_se(
    x: np.ndarray, p: np.ndarray, delta: np.ndarray, C: float, *, seed: int = 0, rounds: int = BOOTSTRAP_ROUNDS
) -> float:
    """Std of the LC win rate (x100) over bootstrap resamples of instructions at a fixed C.

    `delta` are the raw length differences: the length feature is re-standardised within each
    resample, as it would be had that sample been the data.
    """
    n = len(p)
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, n, size=n)
        xb, pb = x[idx].copy(), p[idx]
        # the length feature is standardised within the sample it is fitted on
        xb[:, 0] = _tanh_standardised(delta[idx])
        coef = fit_soft_logistic(xb, pb, C)
        xt = xb.copy()
        xt[:, 0] = 0.0
        values.append(_sigmoid(xt @ coef).mean() * 100)
    return float(np.std(values, ddof=1))


def _soft_log_loss(p: np.ndarray, q: np.ndarray) -> float:
    q = np.clip(q, 1e-15, 1 - 1e-15)
    return float(-np.mean(p * np.log(q) + (1 - p) * np.log(1 - q)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))


def _as_preferences(preferences: Sequence[float]) -> np.ndarray:
    p = np.asarray(preferences, dtype=float)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError("need a non-empty 1-d sequence of preferences")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("preferences must be probabilities in [0, 1]")
    return p
