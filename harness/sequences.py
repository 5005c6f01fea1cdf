"""Prompt+response sequences as padded tensors, and the policy's log-probs over them.

Training batches are right-padded, so every real token sits at position = its index, exactly
where the left-padded generator put it (generation derives positions from the attention mask).
That is what makes the trainer's log-probs of a sample equal the generator's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from harness.algorithms import response_mask_from_lengths, token_logprobs_and_entropy
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
    """Per-token log-probs [B, T-1] of the batch's response tokens (and optionally entropies).

    Only response positions are computed: the model's LM head runs from the earliest response
    position on (`logits_to_keep`), and one log-sum-exp over the vocabulary, on the response
    positions alone, gives both the log-probs and the entropies. Entries outside
    `batch.response_mask` are 0. The entropy carries gradients only with `entropy_grad`
    (an entropy bonus); otherwise it is computed from detached values for logging.
    """
    width = batch.input_ids.shape[1]
    rows, cols = batch.response_mask.nonzero(as_tuple=True)  # cols: the predicting position
    first = int(cols.min()) if cols.numel() else width - 1
    logits = _forward_logits(model, batch, keep=width - first)  # positions first .. T-1
    targets = batch.input_ids[rows, cols + 1]
    logp_sel, entropy_sel = token_logprobs_and_entropy(
        logits[rows, cols - first], targets, temperature, with_entropy=with_entropy, entropy_grad=entropy_grad)
    logp = _scatter(logp_sel, rows, cols, batch.response_mask.shape)
    entropy = _scatter(entropy_sel, rows, cols, batch.response_mask.shape) if with_entropy else None
    return logp, entropy


def _forward_logits(model, batch: SequenceBatch, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions, [B, keep, V]; all positions if the model cannot trim."""
    if _accepts_logits_to_keep(model):
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep).logits
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits[:, logits.shape[1] - keep:]


def _accepts_logits_to_keep(model) -> bool:
    forward = type(model).forward
    if forward not in _TRIM_SUPPORT:
        _TRIM_SUPPORT[forward] = "logits_to_keep" in inspect.signature(forward).parameters
    return _TRIM_SUPPORT[forward]


_TRIM_SUPPORT: dict = {}


def _scatter(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shape) -> torch.Tensor:
    """[N] values at (rows, cols) of a zero [B, T-1] tensor (differentiable)."""
    out = values.new_zeros(shape)
    return out.index_put((rows, cols), values)


def chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]
