"""Arena-Hard scoring: verdict parsing, battles, Bradley-Terry ratings and a bootstrap CI.

Follows arena-hard-auto (v0.1 `show_result.py`): every question is judged twice, game 1 with
the baseline as assistant A and the model as B, game 2 swapped. A verdict label `[[A>>B]]`,
`[[A>B]]`, `[[A=B]]`, `[[B>A]]`, `[[B>>A]]` becomes battles; a strong verdict (`>>`) counts as
3 battles (arena-hard's WEIGHT = 3), a tie as one battle scored 0.5, an unparsable verdict is
dropped and counted. Ratings are the Bradley-Terry maximum-likelihood fit (logistic regression
on the battles, no penalty) on the Elo scale: 400 points per factor 10 in odds, initial rating
1000, the baseline anchored at 1000. The reported score is the model's predicted win rate
against the baseline (x100) from the point estimate; the 95% CI is the win rate at the 2.5 /
97.5 percentiles of the model's rating over 100 bootstrap resamples of the battles (fixed seed).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np

SCALE, BASE, INIT_RATING = 400.0, 10.0, 1000.0
STRONG_WEIGHT = 3
BOOTSTRAP_ROUNDS = 100
BOOTSTRAP_SEED = 42
VERDICT_PATTERN = re.compile(r"\[\[([AB<>=]+)\]\]")

# Each label (as the judge wrote it) -> (score of assistant A, number of battles).
# arena-hard v2.0 also accepts the mirrored spellings (A<B, B<<A, ...).
LABEL_SCORES = {
    "A>>B": (1.0, STRONG_WEIGHT),
    "A>B": (1.0, 1),
    "A=B": (0.5, 1),
    "B>A": (0.0, 1),
    "B>>A": (0.0, STRONG_WEIGHT),
    "A<<B": (0.0, STRONG_WEIGHT),
    "A<B": (0.0, 1),
    "B=A": (0.5, 1),
    "B<A": (1.0, 1),
    "B<<A": (1.0, STRONG_WEIGHT),
}


def parse_verdict(judgment: str | None) -> str | None:
    """The last `[[...]]` verdict label in a judgment that is a known label, else None.

    arena-hard-auto v2.0 takes the last match (the final verdict after the explanation).
    """
    if not judgment:
        return None
    labels = [m for m in VERDICT_PATTERN.findall(judgment.upper()) if m in LABEL_SCORES]
    return labels[-1] if labels else None


def game_battles(label_game1: str | None, label_game2: str | None) -> tuple[list[float], int]:
    """The model's battle scores from one question's two games, and how many games were dropped.

    Game 1: A = baseline, B = model. Game 2: A = model, B = baseline.
    """
    scores: list[float] = []
    dropped = 0
    for label, model_is_a in ((label_game1, False), (label_game2, True)):
        if label is None or label not in LABEL_SCORES:
            dropped += 1
            continue
        score_a, weight = LABEL_SCORES[label]
        scores.extend([score_a if model_is_a else 1.0 - score_a] * weight)
    return scores, dropped


def fit_bradley_terry(battles: Sequence[tuple[str, str, float]], anchor: str | None = None) -> dict[str, float]:
    """Elo-scale Bradley-Terry ratings from (player_a, player_b, score_of_a) battles.

    Maximum likelihood with ties as half a win each way (as arena-hard's win table does), by
    Newton's method (see `_newton_bt` for the all-wins case).
    `anchor` (if it played) is shifted to exactly 1000.
    """
    players = sorted({p for a, b, _ in battles for p in (a, b)})
    if not players:
        return {}
    index = {p: i for i, p in enumerate(players)}
    ia = np.array([index[a] for a, _, _ in battles])
    ib = np.array([index[b] for _, b, _ in battles])
    s = np.array([float(x) for _, _, x in battles])
    theta = _newton_bt(ia, ib, s, len(players))
    ratings = INIT_RATING + SCALE * theta / math.log(BASE)
    if anchor is not None and anchor in index:
        ratings += INIT_RATING - ratings[index[anchor]]
    return {p: float(ratings[index[p]]) for p in players}


def _newton_bt(ia: np.ndarray, ib: np.ndarray, s: np.ndarray, n_players: int) -> np.ndarray:
    """Natural-log strengths maximising sum s log sig(ta - tb) + (1 - s) log sig(tb - ta).

    The unpenalised MLE is finite only when every player can be reached from every other by
    "scored against" edges (no one won or lost all their battles); otherwise a 1e-6 ridge keeps
    the ratings finite, at a win rate within 1e-4 of 0 or 100.
    """
    x = np.zeros((len(s), n_players))
    x[np.arange(len(s)), ia] += 1.0
    x[np.arange(len(s)), ib] -= 1.0
    ridge = 0.0 if _strongly_connected(ia, ib, s, n_players) else 1e-6
    theta = np.zeros(n_players)
    for _ in range(500):
        q = np.exp(-np.logaddexp(0.0, -(x @ theta)))
        grad = x.T @ (q - s) + ridge * theta
        hess = x.T @ (x * (q * (1 - q))[:, None]) + ridge * np.eye(n_players)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        theta = theta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta - theta.mean()


def _strongly_connected(ia, ib, s, n_players: int) -> bool:
    """Whether the 'a scored against b' digraph (a tie scores both ways) is strongly connected."""
    reach = np.eye(n_players, dtype=bool)
    reach[ia[s > 0], ib[s > 0]] = True
    reach[ib[s < 1], ia[s < 1]] = True
    for k in range(n_players):  # Floyd-Warshall transitive closure
        reach |= reach[:, [k]] & reach[[k], :]
    return bool(reach.all())


def win_rate(rating: float, baseline_rating: float = INIT_RATING) -> float:
    """Predicted probability (x100) that a player rated `rating` beats one rated `baseline_rating`."""
    return 100.0 / (1.0 + BASE ** ((baseline_rating - rating) / SCALE))


def arena_hard_score(
    model_scores: Iterable[float],
    *,
    model: str = "model",
    baseline: str = "baseline",
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, float]:
    """Score and 95% CI for one model against the baseline from its battle scores.

    `model_scores` are the model's scores per battle (1 win, 0.5 tie, 0 loss), strong verdicts
    already repeated (see `game_battles`).
    """
    scores = np.asarray(list(model_scores), dtype=float)
    if len(scores) == 0:
        nan = float("nan")
        return {"score": nan, "ci_low": nan, "ci_high": nan, "score_se": nan, "rating": nan, "n_battles": 0}
    battles = [(model, baseline, float(x)) for x in scores]
    rating = fit_bradley_terry(battles, anchor=baseline)[model]
    rng = np.random.default_rng(seed)
    boot_ratings = []
    for _ in range(rounds):
        sample = scores[rng.integers(0, len(scores), size=len(scores))]
        boot_ratings.append(fit_bradley_terry([(model, baseline, float(x)) for x in sample], anchor=baseline)[model])
    boot_ratings = np.array(boot_ratings)
    boot_wins = np.array([win_rate(r) for r in boot_ratings])
    return {
        "score": win_rate(rating),
        "ci_low": win_rate(float(np.percentile(boot_ratings, 2.5))),
        "ci_high": win_rate(float(np.percentile(boot_ratings, 97.5))),
        "score_se": float(boot_wins.std(ddof=1)) if rounds > 1 else float("nan"),
        "rating": rating,
        "n_battles": int(len(scores)),
    }
