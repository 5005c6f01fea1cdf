"""Arena-Hard v2.0 style control: win rates with length and markdown effects fitted out, over several models.

arena-hard-auto's official v2.0 leaderboard (`show_result.py --control-features length markdown`):

- each answer's style: its token count, and (code blocks emptied first) its markdown headers (`#`
  to `######` + space at a line start), list items (`1. `, `- `, `* `, `+ `) and bold spans
  (`**x**`, `__x__`);
- per battle, the model-minus-baseline features: length (m - b) / (m + b) on token counts; for
  each markdown count its density d = count / (tokens + 1) and (d_m - d_b) / (d_m + d_b + 1);
- each feature standardised over all battles of all models (mean 0, sample std 1);
- one Bradley-Terry (logistic) fit over every model's battles: logit P(model wins) = strength of
  the model - strength of the baseline + coefficients . features, no intercept, no penalty;
- a model's controlled win rate is sigmoid(its strength - the baseline's), i.e. read at the mean
  style difference of all the battles; the score is the MEDIAN over 100 bootstrap resamples of the
  battles (rows drawn from all models together, refitted each time), the CI their 5% / 95% quantiles.

Because the reference point is the mean style difference over all models, a fit on one model
alone only removes that model's style variation around its own mean, never its average length
advantage: fit every run of a sweep together (`style_control_runs`). One category (one baseline)
per fit, as arena-hard does. Differences from arena-hard: the fit is solved to convergence by
Newton's method (arena-hard: 50 L-BFGS steps) with a 1e-6 ridge so that a model that won or lost
every battle stays finite; a feature constant over all battles is left out (arena-hard divides by
its zero spread and stops); the bootstrap has a fixed seed. Not wired into a sweep report yet.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CODE_BLOCK = re.compile(r"```([^`]*)```")
HEADERS = [re.compile(rf"^#{{{level}}}\s", re.MULTILINE) for level in range(1, 7)]
LIST_ITEMS = [re.compile(r"^\s*\d+\.\s", re.MULTILINE), re.compile(r"^\s*[-*+]\s", re.MULTILINE)]
BOLD = [re.compile(r"\*\*[^*\n]+\*\*"), re.compile(r"__[^_\n]+__")]
FEATURES = ("length", "header_density", "list_density", "bold_density")
CONTROLS = {"length": ("length",), "markdown": ("header_density", "list_density", "bold_density")}
RIDGE = 1e-6


@dataclass(frozen=True)
class AnswerStyle:
    token_len: int
    headers: int
    list_items: int
    bold: int


@dataclass(frozen=True)
class StyledBattle:
    """One battle against the baseline: the model's score (1 win, 0.5 tie, 0 loss) and both answers' styles."""

    model: str
    score: float
    model_style: AnswerStyle
    baseline_style: AnswerStyle


def answer_style(text: str, token_len: int) -> AnswerStyle:
    """The token count given and the markdown counts of `text` (code blocks emptied first, as arena-hard)."""
    for block in CODE_BLOCK.findall(text):
        text = text.replace(block, "")
    return AnswerStyle(
        token_len=int(token_len),
        headers=sum(len(p.findall(text)) for p in HEADERS),
        list_items=sum(len(p.findall(text)) for p in LIST_ITEMS),
        bold=sum(len(p.findall(text)) for p in BOLD),
    )


def style_features(model: AnswerStyle, baseline: AnswerStyle) -> list[float]:
    """The battle's raw features, in FEATURES order (see the module docstring)."""
    total = model.token_len + baseline.token_len
    features = [(model.token_len - baseline.token_len) / total if total else 0.0]
    for m_count, b_count in (
        (model.headers, baseline.headers),
        (model.list_items, baseline.list_items),
        (model.bold, baseline.bold),
    ):
        m_density, b_density = m_count / (model.token_len + 1), b_count / (baseline.token_len + 1)
        features.append((m_density - b_density) / (m_density + b_density + 1))
    return features


def style_controlled_scores(
    battles: Sequence[StyledBattle],
    *,
    control: Iterable[str] = ("length", "markdown"),
    rounds: int = 100,
    seed: int = 42,
) -> dict:
    """Every model's style-controlled score against the baseline, fitted jointly (module docstring).

    Returns {"models": {model: {"score", "ci_low", "ci_high", "point", "n_battles"}} (x100; `point`
    from the fit on all battles), "features": the features used, "coefficients": their point fit}.
    """
    control = tuple(control)
    unknown = [c for c in control if c not in CONTROLS]
    if unknown:
        raise ValueError(f"style control features {unknown}: expected among {sorted(CONTROLS)}")
    if not battles:
        raise ValueError("style control needs battles; got none")
    models = sorted({b.model for b in battles})
    wanted = [FEATURES.index(name) for c in control for name in CONTROLS[c]]
    raw = np.array([style_features(b.model_style, b.baseline_style) for b in battles])[:, wanted]
    spread = raw.std(axis=0, ddof=1) if len(battles) > 1 else np.zeros(len(wanted))
    varying = spread > 0
    z = (raw[:, varying] - raw[:, varying].mean(axis=0)) / spread[varying]
    onehot = np.zeros((len(battles), len(models)))
    onehot[np.arange(len(battles)), [models.index(b.model) for b in battles]] = 1.0
    x = np.hstack([onehot, z])
    y = np.array([b.score for b in battles], dtype=float)
    point = _fit_soft_logistic(x, y)
    rng = np.random.default_rng(seed)
    boot = np.array([_fit_soft_logistic(x[idx], y[idx]) for idx in rng.integers(0, len(y), size=(rounds, len(y)))])
    wins = 100.0 / (1.0 + np.exp(-boot[:, : len(models)]))
    counts = onehot.sum(axis=0)
    result = {}
    for k, model in enumerate(models):
        low, mid, high = np.quantile(wins[:, k], (0.05, 0.5, 0.95))
        result[model] = {
            "score": float(mid),
            "ci_low": float(low),
            "ci_high": float(high),
            "point": float(100.0 / (1.0 + np.exp(-point[k]))),
            "n_battles": int(counts[k]),
        }
    used = [FEATURES[i] for i, keep in zip(wanted, varying) if keep]
    return {"models": result, "features": used, "coefficients": dict(zip(used, point[len(models) :].tolist()))}


def _fit_soft_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients maximising sum y log sig(x.w) + (1 - y) log sig(-x.w) - RIDGE/2 |w|^2 (Newton)."""
    w = np.zeros(x.shape[1])
    for _ in range(100):
        p = np.exp(-np.logaddexp(0.0, -(x @ w)))
        grad = x.T @ (p - y) + RIDGE * w
        hess = x.T @ (x * (p * (1 - p))[:, None]) + RIDGE * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def styled_battles_from_rows(
    model: str, rows: Iterable[dict], category: str | None = "hard_prompt"
) -> list[StyledBattle]:
    """The battles in an arena_hard generations.jsonl (rows of evaluators/arena_hard.py) of one category.

    Lengths are token counts (`num_tokens`, `baseline_num_tokens`) when every row has both, else
    characters for both answers (one unit per call, so that the length ratios stay comparable).
    """
    rows = [r for r in rows if category is None or r.get("category") == category]
    tokens = all(r.get("num_tokens") is not None and r.get("baseline_num_tokens") is not None for r in rows)
    battles = []
    for row in rows:
        if not row.get("battle_scores"):
            continue  # dropped (no verdict)
        m_len = row["num_tokens"] if tokens else len(row["output"])
        b_len = row["baseline_num_tokens"] if tokens else len(row["baseline_output"])
        m_style, b_style = answer_style(row["output"], m_len), answer_style(row["baseline_output"], b_len)
        battles.extend(StyledBattle(model, float(s), m_style, b_style) for s in row["battle_scores"])
    return battles


def style_control_runs(generations: dict[str, str | Path], category: str = "hard_prompt", **kwargs) -> dict:
    """`style_controlled_scores` over several runs' arena_hard generations.jsonl files ({label: path})."""
    battles = []
    for label, path in generations.items():
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        battles.extend(styled_battles_from_rows(label, rows, category))
    return style_controlled_scores(battles, **kwargs)
