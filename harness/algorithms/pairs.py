"""Chosen/rejected pair selection for DPO (torch only).

Both builders take one row per prompt and one column per rollout (`[P, n]`) and return
at most one `Pair` per prompt, in prompt order. A prompt that cannot give a pair is
skipped; the caller must cope with an empty list (DPO then returns a zero loss).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

CORRECT_THRESHOLD = 0.5  # verifiable rewards are 0/1; anything above this counts as correct


@dataclass(frozen=True)
class Pair:
    """Indices into a `[P, n]` rollout grid: row `prompt_index`, columns `chosen`/`rejected`."""

    prompt_index: int
    chosen: int
    rejected: int


def _check_grid(name: str, values: Tensor) -> Tensor:
    if values.dim() != 2:
        raise ValueError(f"{name} must be [P, n] (prompts x rollouts), got {tuple(values.shape)}")
    return values.detach().to("cpu", torch.float64)


def _pick(indices: Tensor, rng: torch.Generator) -> int:
    """One uniformly random entry of a 1-D index tensor, drawn from `rng`."""
    position = torch.randint(len(indices), (1,), generator=rng).item()
    return int(indices[position])


def build_verifiable_pairs(rewards: Tensor, rng: torch.Generator) -> list[Pair]:
    """Random correct rollout (chosen) vs random incorrect one (rejected), per prompt.

    rewards: [P, n] 0/1 floats; > 0.5 is correct. Rollouts with a non-finite reward are
    neither. Prompts whose rollouts are all correct or all incorrect are skipped.
    rng: a CPU `torch.Generator`; draws happen chosen-then-rejected for each pairable prompt
    in prompt order, so a seeded generator gives the same pairs every time.
    """
    grid = _check_grid("rewards", rewards)
    pairs = []
    for p, row in enumerate(grid):
        finite = torch.isfinite(row)
        correct = torch.nonzero(finite & (row > CORRECT_THRESHOLD)).flatten()
        incorrect = torch.nonzero(finite & (row <= CORRECT_THRESHOLD)).flatten()
        if len(correct) == 0 or len(incorrect) == 0:
            continue
        chosen = _pick(correct, rng)
        rejected = _pick(incorrect, rng)
        pairs.append(Pair(prompt_index=p, chosen=chosen, rejected=rejected))
    return pairs


def build_preference_pairs(scores: Tensor) -> list[Pair]:
    """Highest-scored rollout (chosen) vs lowest-scored one (rejected), per prompt.

    scores: [P, n] reward-model scores. On ties the first (lowest-index) rollout with the
    max/min score is taken. A prompt is skipped when max == min (all tied, nothing to
    learn) or when any of its scores is non-finite (a broken score cannot be ranked).
    """
    grid = _check_grid("scores", scores)
    pairs = []
    for p, row in enumerate(grid):
        if row.numel() < 2 or not bool(torch.isfinite(row).all()):
            continue
        # torch.argmax/argmin return the first index among equal extremes.
        chosen, rejected = int(torch.argmax(row)), int(torch.argmin(row))
        if row[chosen] == row[rejected]:
            continue
        pairs.append(Pair(prompt_index=p, chosen=chosen, rejected=rejected))
    return pairs
