"""Prompt+response sequences as padded tensors, and the policy's log-probs over them.

Training batches are right-padded, so every real token sits at position = its index, exactly
where the left-padded generator put it (generation derives positions from the attention mask).
That is what makes the trainer's log-probs of a sample equal the generator's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.algorithms import gather_logprobs, response_mask_from_lengths, token_entropy
from harness.rollout import Rollout


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T-1], True where the *target* token is a response token
    response_lengths: torch.Tensor  # [B]


def pack(rollouts: list[Rollout], pad_id: int, device: torch.device) -> SequenceBatch:
    sequences = [r.prompt_ids + r.token_ids for r in rollouts]
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, seq in enumerate(sequences):
        input_ids[row, :len(seq)] = torch.tensor(seq)
        attention[row, :len(seq)] = 1
    prompt_end = torch.tensor([len(r.prompt_ids) for r in rollouts])
    response_end = torch.tensor([len(seq) for seq in sequences])
    mask = response_mask_from_lengths(width, prompt_end, response_end)
    return SequenceBatch(input_ids.to(device), attention.to(device), mask.to(device),
                         (response_end - prompt_end).to(device))


def policy_logprobs(model, batch: SequenceBatch, temperature: float, with_entropy: bool = False,
                    entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [B, T-1] of the batch's own tokens (and optionally entropies)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = gather_logprobs(logits, batch.input_ids, temperature)
    entropy = None
    if with_entropy:
        if entropy_grad:
            entropy = token_entropy(logits, temperature)
        else:
            with torch.no_grad():
                entropy = token_entropy(logits.detach(), temperature)
    return logp, entropy


def chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]
