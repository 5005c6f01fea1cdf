"""Pairwise judges, chosen by name in the eval config (`eval.judge.name`, or `--judge name=...`).

A judge compares a model's output with a baseline's output for the same prompt, two ways:

    judge.preferences(items) -> list[Preference]        AlpacaEval: P(model output is better)
    judge.verdicts(items, version) -> list[tuple[Game, Game]]  Arena-Hard ("v0.1" or "v2.0"): one
                                                         verdict per answer order (game 1: A =
                                                         baseline, B = model; game 2: A = model,
                                                         B = baseline)

Judges (`make_judge(config)`; an unknown name is a ConfigError):

- `reward_model`: a local sequence-classification reward model (default: the embedded tiny one,
  `harness.tiny.ensure_tiny_assets().reward_model_dir`). P(model beats baseline) =
  sigmoid(score(model) - score(baseline)), the Bradley-Terry reading of a reward model. For
  Arena-Hard the probability p that assistant A is better becomes a verdict label:
  p > strong_threshold (0.9) -> A>>B, p > weak_threshold (0.6) -> A>B, p < 1 - 0.9 -> B>>A,
  p < 1 - 0.6 -> B>A, otherwise A=B. A reward model is order-blind, so game 2 mirrors game 1.
  Keys: model_dir, device ("cpu"), dtype ("auto": bf16 on CUDA), batch_size (16), max_length (2048), strong_threshold,
  weak_threshold.

- `openai_compatible`: any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, ...)
  through the `openai` SDK, with the benchmarks' official prompts; its keys, retries, cache and
  AlpacaEval reading: evaluators/openai_judge.py.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import ConfigError
from harness.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """One question for a judge: the prompt and the two outputs to compare."""

    prompt: str
    model_output: str
    baseline_output: str
    category: str | None = None  # Arena-Hard category (picks the system prompt)


@dataclass(frozen=True)
class Preference:
    """P(model output better than baseline output); None when the judge's answer was unusable."""

    p_model: float | None
    raw: str  # the judge's reply (or the reward scores), kept for the generations file


@dataclass(frozen=True)
class Game:
    """One Arena-Hard judgment: the verdict label (None if unparsable) and the judge's text."""

    label: str | None
    judgment: str


class Judge(Protocol):
    name: str

    def preferences(self, items: list[Comparison]) -> list[Preference]: ...

    def verdicts(self, items: list[Comparison], version: str = "v0.1") -> list[tuple[Game, Game]]: ...


# Keys the pairwise suites read from the same `eval.judge` mapping (not judge settings).
SUITE_KEYS = {
    "name",
    "samples",
    "baseline_answers",
    "instruction_difficulty",
    "bootstrap_rounds",
    "baseline_policy",
    "baseline_cache_dir",
}


def probability_to_label(p_a: float, strong: float = 0.9, weak: float = 0.6) -> str:
    """Arena-Hard verdict label for P(assistant A is better) = p_a (symmetric thresholds)."""
    if p_a > strong:
        return "A>>B"
    if p_a > weak:
        return "A>B"
    if p_a < 1.0 - strong:
        return "B>>A"
    if p_a < 1.0 - weak:
        return "B>A"
    return "A=B"


class RewardModelJudge:
    """Judge by reward-model score difference (see module docstring)."""

    name = "reward_model"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 2048,
        strong_threshold: float = 0.9,
        weak_threshold: float = 0.6,
        dtype: str = "auto",
    ):
        if not 0.5 <= weak_threshold <= strong_threshold < 1.0:
            raise ConfigError(
                f"eval.judge: weak_threshold={weak_threshold!r}, strong_threshold={strong_threshold!r}; "
                f"expected 0.5 <= weak_threshold <= strong_threshold < 1."
            )
        if model_dir is None:
            from harness.tiny import ensure_tiny_assets

            model_dir = ensure_tiny_assets().reward_model_dir
        from harness.rewards import RewardModelScorer

        self.scorer = RewardModelScorer(
            model_dir, device=device, batch_size=batch_size, max_length=max_length, dtype=dtype
        )
        self.strong, self.weak = strong_threshold, weak_threshold

    def _score_pairs(self, items: list[Comparison]) -> list[tuple[float, float]]:
        prompts = [item.prompt for item in items]
        scores = self.scorer.score(
            prompts + prompts, [i.model_output for i in items] + [i.baseline_output for i in items]
        )
        return list(zip(scores[: len(items)], scores[len(items) :]))

    def preferences(self, items: list[Comparison]) -> list[Preference]:
        return [
            Preference(_sigmoid(sm - sb), f"reward model={sm:.4f} baseline={sb:.4f}")
            for sm, sb in self._score_pairs(items)
        ]

    def verdicts(self, items: list[Comparison], version: str = "v0.1") -> list[tuple[Game, Game]]:
        games = []  # `version` (arena-hard's) changes nothing for a reward model
        for sm, sb in self._score_pairs(items):
            p_model = _sigmoid(sm - sb)
            text = f"reward model={sm:.4f} baseline={sb:.4f} P(model better)={p_model:.4f}"
            game1 = probability_to_label(1.0 - p_model, self.strong, self.weak)  # A = baseline
            game2 = probability_to_label(p_model, self.strong, self.weak)  # A = model
            games.append((Game(game1, f"{text} [[{game1}]]"), Game(game2, f"{text} [[{game2}]]")))
        return games


def check_judge_config(config: dict | None, where: str = "eval.judge") -> dict[str, Any]:
    """Validate the judge name and keys without building anything (cheap: for config loading).

    Returns the judge's own settings (the mapping minus `name` and the suite keys).
    """
    config = dict(config or {})
    name = config.get("name", "reward_model")
    JUDGES.get(name, where=f"{where}.name")
    settings = {k: v for k, v in config.items() if k not in SUITE_KEYS}
    unknown, _, accepted, _ = JUDGES.option_problems(name, settings)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {unknown} for judge {name!r}; expected keys among "
            f"{sorted(set(accepted) | SUITE_KEYS)}."
        )
    return settings


def make_judge(config: dict | None, where: str = "eval.judge") -> Judge:
    """The judge `config["name"]` names (default reward_model), built from the other keys."""
    settings = check_judge_config(config, where)
    return JUDGES.get(dict(config or {}).get("name", "reward_model"))(**settings)


JUDGES = Registry(
    "judge",
    {
        "reward_model": "evaluators.judges:RewardModelJudge",
        "openai_compatible": "evaluators.openai_judge:OpenAICompatibleJudge",
    },
)


def default_cache_root() -> Path:
    """$HARNESS_CACHE, else ~/.cache/harness (the tiny assets' cache root too)."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")


def _sigmoid(x: float) -> float:
    # numerically stable for large |x|
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
