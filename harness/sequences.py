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


# One extra forward call costs about as much as this many padded tokens (Python and kernel-launch
# overhead); `length_buckets` trades padding against calls with it.
CALL_COST_TOKENS = 64


def policy_logprobs(model, batch: SequenceBatch, temperature: float, with_entropy: bool = False,
                    entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [B, T-1] of the batch's response tokens (and optionally entropies).

    Rows run through the model in length buckets (`length_buckets`), each cut to its own longest
    sequence, so padding costs little; the buckets share one autograd graph, so one backward()
    covers them all. Only response positions are computed: the LM head runs from a bucket's
    earliest response position on (`logits_to_keep`), and one log-sum-exp over the vocabulary,
    on the response positions alone, gives both the log-probs and the entropies. Entries outside
    `batch.response_mask` are 0. The entropy carries gradients only with `entropy_grad` (an
    entropy bonus); otherwise it is computed from detached values for logging.
    """
    lengths = batch.attention_mask.sum(-1)
    found = []
    for rows in length_buckets(lengths.tolist(), CALL_COST_TOKENS):
        index = torch.tensor(rows, device=batch.input_ids.device)
        width = max(int(lengths[index].max()), 2)
        part = SequenceBatch(batch.input_ids[index, :width], batch.attention_mask[index, :width],
                             batch.response_mask[index, :width - 1], batch.response_lengths[index])
        part_rows, cols, logp, entropy = _response_logprobs(model, part, temperature, with_entropy, entropy_grad)
        found.append((index[part_rows], cols, logp, entropy))
    rows, cols = torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])
    logp = torch.cat([f[2] for f in found])
    logp = logp.new_zeros(batch.response_mask.shape).index_put((rows, cols), logp)
    entropy = None
    if with_entropy:
        entropy = torch.cat([f[3] for f in found])
        entropy = entropy.new_zeros(batch.response_mask.shape).index_put((rows, cols), entropy)
    return logp, entropy


def length_buckets(lengths: list[int], call_cost: int) -> list[list[int]]:
    """Row indices grouped into buckets of similar length, minimising padded tokens + call_cost per bucket.

    Exact dynamic programme over the distinct lengths (sorted): a bucket holding the rows of
    lengths l_i..l_j costs count * l_j + call_cost.
    """
    if not lengths:
        return []
    distinct = sorted(set(lengths))
    counts = [0] * len(distinct)
    position = {length: i for i, length in enumerate(distinct)}
    for length in lengths:
        counts[position[length]] += 1
    best, cut = [0.0] * (len(distinct) + 1), [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        best[j], rows = float("inf"), 0
        for i in range(j, 0, -1):  # bucket = distinct[i-1 .. j-1]
            rows += counts[i - 1]
            cost = best[i - 1] + rows * distinct[j - 1] + call_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    bounds, j = [], len(distinct)
    while j > 0:
        bounds.append((distinct[cut[j]], distinct[j - 1]))
        j = cut[j]
    return [[row for row, length in enumerate(lengths) if low <= length <= high] for low, high in reversed(bounds)]


def _response_logprobs(model, batch: SequenceBatch, temperature: float, with_entropy: bool, entropy_grad: bool):
    """(rows, cols, logp [N], entropy [N] or None) at the batch's N response positions."""
    width = batch.input_ids.shape[1]
    rows, cols = batch.response_mask.nonzero(as_tuple=True)  # cols: the predicting position
    first = int(cols.min()) if cols.numel() else width - 1
    logits = _forward_logits(model, batch, keep=width - first)  # positions first .. T-1
    targets = batch.input_ids[rows, cols + 1]
    logp, entropy = token_logprobs_and_entropy(
        logits[rows, cols - first], targets, temperature, with_entropy=with_entropy, entropy_grad=entropy_grad)
    return rows, cols, logp, entropy


def _forward_logits(model, batch: SequenceBatch, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions, [B, keep, V]; all positions if the model cannot trim."""
    if _accepts_logits_to_keep(model):
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep).logits
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits[:, logits.shape[1] - keep:]


def _accepts_logits_to_keep(model) -> bool:
    forward = getattr(type(model), "forward", None)
    if forward is None:  # a wrapper that is called, not a module (e.g. the LoRA reference view)
        return False
    if forward not in _TRIM_SUPPORT:
        _TRIM_SUPPORT[forward] = "logits_to_keep" in inspect.signature(forward).parameters
    return _TRIM_SUPPORT[forward]


_TRIM_SUPPORT: dict = {}


def chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]
