"""Prompt+response sequences as padded tensors, and the policy's log-probs over them.

Training batches are right-padded, so every real token sits at position = its index, exactly
where the left-padded generator put it (generation derives positions from the attention mask).
That is what makes the trainer's log-probs of a sample equal the generator's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from harness.algorithms import response_mask_from_lengths, token_logprobs_and_entropy
from harness.kv_cache import CACHE_KWARG, LAYERED, cache_from_states, cache_of, cache_states, group_repeats
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
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
    prompt_end = torch.tensor([len(r.prompt_ids) for r in rollouts])
    response_end = torch.tensor([len(seq) for seq in sequences])
    mask = response_mask_from_lengths(width, prompt_end, response_end)
    return SequenceBatch(
        input_ids.to(device), attention.to(device), mask.to(device), (response_end - prompt_end).to(device)
    )


# One extra forward call costs about as much as this many padded tokens (Python and kernel-launch
# overhead); `length_buckets` trades padding against calls with it.
CALL_COST_TOKENS = 64


def policy_logprobs(
    model,
    batch: SequenceBatch,
    temperature: float,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    bucketed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [B, T-1] of the batch's response tokens (and optionally entropies).

    Only response positions are computed, and entries outside `batch.response_mask` are 0. With
    `bucketed` (one process), rows that share a prompt (a prompt's n samples, a DPO pair) run it
    once (`_shared_prompt_logits`), and rows run in length buckets (`length_buckets`), each cut to
    its own longest row, so padding costs little. Every forward shares one autograd graph, so one
    backward() covers them all. Under FSDP (`bucketed=False`) the whole batch is one forward, so
    every rank makes the same calls. One log-sum-exp over the vocabulary, on the response positions
    alone, gives both the log-probs and the entropies. The entropy carries gradients only with
    `entropy_grad` (an entropy bonus); otherwise it is computed from detached values for logging.
    """
    prompts = _row_prompts(model, batch) if bucketed else None
    if prompts is not None and len(set(prompts)) < len(prompts):  # some rows repeat a prompt
        rows, cols, logits = _shared_prompt_logits(model, batch, prompts)
    else:
        lengths = batch.attention_mask.sum(-1)
        found = []
        for part_rows in (
            length_buckets(lengths.tolist(), CALL_COST_TOKENS) if bucketed else [list(range(len(lengths)))]
        ):
            index = torch.tensor(part_rows, device=batch.input_ids.device)
            width = max(int(lengths[index].max()), 2)
            part = SequenceBatch(
                batch.input_ids[index, :width],
                batch.attention_mask[index, :width],
                batch.response_mask[index, : width - 1],
                batch.response_lengths[index],
            )
            bucket_rows, bucket_cols, bucket_logits = _response_logits(model, part)
            found.append((index[bucket_rows], bucket_cols, bucket_logits))
        rows, cols = torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])
        logits = torch.cat([f[2] for f in found])
    targets = batch.input_ids[rows, cols + 1]
    logp, entropy = token_logprobs_and_entropy(
        logits, targets, temperature, with_entropy=with_entropy, entropy_grad=entropy_grad
    )
    logp = logp.new_zeros(batch.response_mask.shape).index_put((rows, cols), logp)
    if with_entropy:
        entropy = entropy.new_zeros(batch.response_mask.shape).index_put((rows, cols), entropy)
    return logp, entropy


def _prompt_ends(batch: SequenceBatch) -> torch.Tensor:
    """Per row, the column of its first response token (rows have >= 1 response token)."""
    return batch.response_mask.int().argmax(-1) + 1


def _row_prompts(model, batch: SequenceBatch) -> list[tuple[int, ...]] | None:
    """Each row's prompt tokens, or None when the model cannot continue from a given KV cache (or a
    row has no response token). A model training with gradient checkpointing cannot: transformers'
    checkpointed layers drop the KV cache (use_cache and past_key_values forced off, since the
    backward replay would write it twice), so its rows take the full-sequence path."""
    if not (LAYERED and isinstance(model, PreTrainedModel)) or not bool(batch.response_mask.any(-1).all()):
        return None
    if model.training and getattr(model, "is_gradient_checkpointing", False):
        return None
    return [tuple(batch.input_ids[row, :end].tolist()) for row, end in enumerate(_prompt_ends(batch).tolist())]


def _shared_prompt_logits(model, batch: SequenceBatch, prompts: list[tuple[int, ...]]):
    """(rows, cols, logits [N, V]) at the batch's N response positions, each distinct prompt run once.

    1. The distinct prompts, left-padded, in one forward: their KV cache and the logits of their last
       position (which predict every sample's first response token).
    2. Each length bucket of responses continues from its rows' copies of that cache (gathered with
       their autograd history, so the prompt's gradient sums over its samples), on the response tokens
       but the last, whose logits predict the next token.
    The positions are those of the right-padded sequence, so the values equal the full-sequence
    forward's up to float rounding.
    """
    device = batch.input_ids.device
    ends = _prompt_ends(batch)
    first, source = group_repeats(prompts)
    distinct = [prompts[row] for row in first]
    source = torch.tensor(source, device=device)
    prompt_lengths = torch.tensor([len(prompt) for prompt in distinct], device=device)
    width = int(prompt_lengths.max())
    prompt_ids = torch.zeros((len(distinct), width), dtype=torch.long, device=device)
    prompt_mask = torch.zeros_like(prompt_ids)
    for i, prompt in enumerate(distinct):  # left padding: every prompt ends at column width - 1
        prompt_ids[i, width - len(prompt) :] = torch.tensor(prompt, device=device)
        prompt_mask[i, width - len(prompt) :] = 1
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    states = cache_states(cache_of(out))
    all_rows = torch.arange(len(ends), device=device)
    found = [(all_rows, ends - 1, out.logits[:, -1][source])]  # each row's first response token
    inputs = batch.attention_mask.sum(-1) - ends - 1  # response tokens that predict another one
    for part_rows in length_buckets(inputs.tolist(), CALL_COST_TOKENS):
        index = torch.tensor(part_rows, device=device)
        steps = int(inputs[index].max())
        if steps == 0:
            continue
        offsets = torch.arange(steps, device=device)
        columns = (ends[index].unsqueeze(1) + offsets).clamp(max=batch.input_ids.shape[1] - 1)
        valid = offsets.unsqueeze(0) < inputs[index].unsqueeze(1)
        tokens = torch.where(valid, batch.input_ids[index.unsqueeze(1), columns], 0)
        cache = cache_from_states([(k[source[index]], v[source[index]]) for k, v in states])
        mask = torch.cat([prompt_mask[source[index]], valid.long()], dim=1)
        positions = prompt_lengths[source[index]].unsqueeze(1) + offsets
        logits = model(
            input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True, **{CACHE_KWARG: cache}
        ).logits
        keep_rows, keep_steps = valid.nonzero(as_tuple=True)
        # input token j of the response sits at column end + j and predicts the target at column end + j + 1,
        # i.e. [B, T-1] column end + j
        found.append((index[keep_rows], ends[index][keep_rows] + keep_steps, logits[keep_rows, keep_steps]))
    return (torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found]), torch.cat([f[2] for f in found]))


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


def _response_logits(model, batch: SequenceBatch):
    """(rows, cols, logits [N, V]) at the batch's N response positions, from one full-sequence forward."""
    width = batch.input_ids.shape[1]
    rows, cols = batch.response_mask.nonzero(as_tuple=True)  # cols: the predicting position
    first = int(cols.min()) if cols.numel() else width - 1
    logits = _forward_logits(model, batch, keep=width - first)  # positions first .. T-1
    return rows, cols, logits[rows, cols - first]


def _forward_logits(model, batch: SequenceBatch, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions, [B, keep, V]; all positions if the model cannot trim."""
    if _accepts_logits_to_keep(model):
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep).logits
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits[:, logits.shape[1] - keep :]


def _accepts_logits_to_keep(model) -> bool:
    forward = getattr(type(model), "forward", None)
    if forward is None:  # a wrapper that is called, not a module (e.g. the LoRA reference view)
        return False
    if forward not in _TRIM_SUPPORT:
        _TRIM_SUPPORT[forward] = "logits_to_keep" in inspect.signature(forward).parameters
    return _TRIM_SUPPORT[forward]


_TRIM_SUPPORT: dict = {}


def chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]
