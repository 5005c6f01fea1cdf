"""Arena-Hard v2.0 scoring, by arena-hard-auto's v2.0 rules (`gen_judgment.py`, `show_result.py`).

The v0.1 rules (the paper's: Bradley-Terry, 95% CI) live in evaluators/bradley_terry.py. v2.0:

- verdict: the judgment upper-cased, `[[X]]` labels first, else single-bracket `[X]` labels; the
  last match is the verdict (an unknown label counts as none);
- a question whose game 1 or game 2 has no verdict is dropped whole;
- battles of a question: game 2's label scored for assistant A (the model), then game 1's scored
  for B (1 - A's score); `>>` verdicts weigh 3 (label_to_score with weight=3);
- each category is scored against its own baseline (`V2_BASELINES`: creative_writing against
  gemini-2.0-flash-001, the others against o3-mini-2025-01-31), and reported separately;
- score: 100 bootstrap resamples of a category's battles, the MEAN of the resampled mean scores;
  the CI is their 5% / 95% quantiles (a 90% interval). No Bradley-Terry fit: with one baseline the
  score is a mean. The bootstrap here has a fixed seed (arena-hard's has none).

Style control (the official leaderboard's configuration) needs several models' battles fitted
jointly; it is in evaluators/arena_style_control.py.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from evaluators.bradley_terry import LABEL_SCORES

log = logging.getLogger(__name__)

O3_MINI, GEMINI_FLASH = "o3-mini-2025-01-31", "gemini-2.0-flash-001"
# arena-hard-auto utils/judge_utils.py JUDGE_SETTINGS (v2.0 question categories and subcategories)
V2_BASELINES = {"hard_prompt": O3_MINI, "coding": O3_MINI, "math": O3_MINI, "creative_writing": GEMINI_FLASH}
V2_PATTERNS = (re.compile(r"\[\[([AB<>=]+)\]\]"), re.compile(r"\[([AB<>=]+)\]"))  # config/arena-hard-v2.0.yaml
V2_BOOTSTRAP_ROUNDS = 100
V2_QUANTILES = (0.05, 0.95)
HEADLINE_CATEGORY = "hard_prompt"  # show_result.py's default --category


def parse_verdict_v2(judgment: str | None) -> str | None:
    """The verdict label by v2.0's rule: the last `[[X]]` match, else the last `[X]` match."""
    if not judgment:
        return None
    text = judgment.upper()
    for pattern in V2_PATTERNS:
        matches = [m for m in pattern.findall(text) if m]
        if matches:
            return matches[-1] if matches[-1] in LABEL_SCORES else None
    return None


def question_battles_v2(label_game1: str | None, label_game2: str | None) -> list[float] | None:
    """The model's battle scores from one question's two games; None (dropped) if either has no verdict.

    Game 1: A = baseline, B = model. Game 2: A = model, B = baseline.
    """
    if label_game1 not in LABEL_SCORES or label_game2 not in LABEL_SCORES:
        return None
    score_a2, weight2 = LABEL_SCORES[label_game2]
    score_a1, weight1 = LABEL_SCORES[label_game1]
    return [score_a2] * weight2 + [1.0 - score_a1] * weight1


def baseline_for_category(category: str | None) -> str:
    """The model whose answers v2.0 judges a category's questions against."""
    return V2_BASELINES.get(category or "", O3_MINI)


def bootstrap_mean_score(scores, *, rounds: int = V2_BOOTSTRAP_ROUNDS, seed: int = 42) -> dict:
    """v2.0's score (x100) of one model in one category from its battle scores (1 win, 0.5 tie, 0 loss).

    `bootstrap_scores` holds the resampled means (x100): `score` is their mean, `ci_low` /
    `ci_high` their 5% / 95% quantiles, `score_se` their standard deviation.
    """
    scores = np.asarray(list(scores), dtype=float)
    if len(scores) == 0:
        nan = float("nan")
        return {"score": nan, "score_se": nan, "ci_low": nan, "ci_high": nan, "n_battles": 0, "bootstrap_scores": []}
    rng = np.random.default_rng(seed)
    means = 100.0 * scores[rng.integers(0, len(scores), size=(rounds, len(scores)))].mean(axis=1)
    low, high = np.quantile(means, V2_QUANTILES)
    return {
        "score": float(means.mean()),
        "score_se": float(means.std(ddof=1)) if rounds > 1 else float("nan"),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_battles": int(len(scores)),
        "bootstrap_scores": means.tolist(),
    }


def category_scores(
    categories: list[str | None],
    battles: list[list[float] | None],
    *,
    rounds: int = V2_BOOTSTRAP_ROUNDS,
    seed: int = 42,
) -> dict[str, dict]:
    """`bootstrap_mean_score` per category (in first-seen order); `battles[i]` None = a dropped question."""
    pooled: dict[str, list[float]] = {}
    for category, scores in zip(categories, battles):
        pooled.setdefault(category or "uncategorized", []).extend(scores or [])
    return {category: bootstrap_mean_score(scores, rounds=rounds, seed=seed) for category, scores in pooled.items()}


def v2_metrics(
    categories: list[str | None],
    battles: list[list[float] | None],
    n_dropped_games: int,
    *,
    rounds: int = V2_BOOTSTRAP_ROUNDS,
    seed: int = 42,
) -> dict:
    """The suite's metrics: `score`, `score_se`, `ci_low`, `ci_high` of the headline category
    (hard_prompt when present, else the first), and `<category>_score` / `_score_se` / `_ci_low` /
    `_ci_high` / `_n_battles` for every category."""
    per_category = category_scores(categories, battles, rounds=rounds, seed=seed)
    headline = HEADLINE_CATEGORY if HEADLINE_CATEGORY in per_category else next(iter(per_category))
    top = per_category[headline]
    metrics: dict = {
        "score": top["score"],
        "score_se": top["score_se"],
        "ci_low": top["ci_low"],
        "ci_high": top["ci_high"],
        "n_battles": float(top["n_battles"]),
    }
    for category, result in per_category.items():
        for key in ("score", "score_se", "ci_low", "ci_high"):
            metrics[f"{category}_{key}"] = result[key]
        metrics[f"{category}_n_battles"] = float(result["n_battles"])
    metrics.update(
        {
            "n_dropped_questions": float(sum(b is None for b in battles)),
            "n_dropped_games": float(n_dropped_games),
            "headline_category": headline,
            "arena_hard_version": "v2.0",
        }
    )
    return metrics


def choose_baseline_answers(
    questions: list[tuple[str, str, str | None]],
    by_model: dict[str, dict[str, str]],
    merged: dict[str, str],
    where: str,
) -> tuple[list[str], list[str | None]]:
    """Each question's baseline answer (and its model) by category: the category's v2.0 baseline when a
    file of that model answers it, else the merged answers (a warning per category says the score
    is then not comparable with the leaderboard)."""
    texts, models, warned = [], [], set()
    for qid, _, category in questions:
        wanted = baseline_for_category(category)
        if qid in by_model.get(wanted, {}):
            texts.append(by_model[wanted][qid])
            models.append(wanted)
            continue
        model = next((m for m, answers in reversed(by_model.items()) if qid in answers), None)
        texts.append(merged[qid])
        models.append(model)
        if category not in warned:
            warned.add(category)
            log.warning(
                "arena_hard v2.0: %s questions are judged against %s's answers, not %s's (v2.0's baseline "
                "for that category; add its model_answer file to %s): that score is not comparable with "
                "the leaderboard.",
                category,
                model,
                wanted,
                where,
            )
    return texts, models
