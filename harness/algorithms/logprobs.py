"""Token log-probabilities, entropies and response masks (torch only).

Layout convention used by every function here: a batch is `input_ids[B, T]` holding
prompt + response (+ padding, on either side), and the model's `logits[B, T, V]`. Position
`j` of every `[B, T-1]` result is about the *target* token `input_ids[:, j + 1]`, predicted
from `logits[:, j]`. So a response that occupies columns `prompt_end .. response_end-1`
of `input_ids` occupies columns `prompt_end-1 .. response_end-2` of the `[B, T-1]` results;
`response_mask_from_lengths` builds exactly that mask.

Log-probs are computed from logits divided by the sampling temperature (the generator
sampled from that distribution), in float32 for bf16/fp16 logits (else their own dtype), for all
rows at once. `token_logprobs_and_entropy` is the one place that formula lives; it works on any
`[..., V]` logits, so callers can hand it only the positions they need (the trainer passes the
response positions alone, `[N, V]`).
"""

import torch
from torch import Tensor


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    """Logits (at least float32) divided by the temperature; a view for float32 at temperature 1."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits


def token_logprobs_and_entropy(
    logits: Tensor,
    targets: Tensor | None,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
    entropy_grad: bool = True,
) -> tuple[Tensor | None, Tensor | None]:
    """Log-prob of `targets` and (optionally) the entropy under `softmax(logits / temperature)`.

    logits: [..., V]; targets: [...] token ids, or None for entropy only. Returns (logp [...] or
    None, entropy [...] or None), float32 or wider, both from one log-sum-exp over the vocabulary.
    Log-probs are differentiable; the entropy is too unless `entropy_grad` is False (then it is
    computed from detached values, for logging, and adds nothing to the autograd graph).
    Entropy is in nats; vocabulary entries with logit -inf (probability 0) contribute 0, not NaN.
    """
    _check_temperature(temperature)
    scaled = _scaled(logits, temperature)
    lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
    logp = None
    if targets is not None:
        logp = (scaled.gather(-1, targets.long().unsqueeze(-1)) - lse).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            full = scaled - lse if entropy_grad else scaled.detach() - lse.detach()
            # Clamping -inf to the most negative float keeps 0 * log 0 at 0 (value and gradient).
            full = full.clamp(min=torch.finfo(full.dtype).min)
            entropy = -(full.exp() * full).sum(-1)
    return logp, entropy


def _check_bt(logits: Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"expected logits [B,T,V], got {tuple(logits.shape)}")


def gather_logprobs(logits: Tensor, input_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-prob of `input_ids[:, 1:]` under `log_softmax(logits[:, :-1] / temperature)`.

    logits: [B, T, V]; input_ids: [B, T] -> [B, T-1], float32 or wider; differentiable.
    Computed as `target_logit - logsumexp(logits)`, which never materialises a full
    log-softmax tensor.
    """
    _check_temperature(temperature)
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B,T,V] and input_ids [B,T], got {tuple(logits.shape)} and {tuple(input_ids.shape)}"
        )
    logp, _ = token_logprobs_and_entropy(logits[:, :-1], input_ids[:, 1:], temperature)
    return logp


def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy (nats) of the temperature-scaled next-token distribution at positions 0..T-2.

    logits: [B, T, V] -> [B, T-1], float32 or wider. Differentiable (usable as an entropy bonus);
    wrap in `torch.no_grad()` when it is only logged. Vocabulary entries with logit -inf
    (probability 0) contribute 0, not NaN.
    """
    _check_temperature(temperature)
    _check_bt(logits)
    _, entropy = token_logprobs_and_entropy(logits[:, :-1], None, temperature, with_entropy=True)
    return entropy


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum of `values` over the last dim where `mask` is set: [B, L] -> [B].

    A bool mask selects; a float mask weights. Masked-out entries never contribute, even
    if they hold NaN or inf (they are replaced, not multiplied by zero), and they receive
    zero gradient. A row whose mask is all zeros sums to 0.
    """
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ")
    if mask.dtype == torch.bool:
        kept = torch.where(mask, values, torch.zeros_like(values))
    else:
        weights = mask.to(values.dtype)
        kept = torch.where(mask != 0, values * weights, torch.zeros_like(values))
    return kept.sum(-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over the last dim where `mask` is set: [B, L] -> [B].

    Divides by the mask's sum (the token count for a bool mask), clamped to at least 1 so
    an all-zero row gives 0, never NaN.
    """
    count = mask.to(values.dtype).sum(-1).clamp(min=1.0)
    return masked_sum(values, mask) / count


def response_mask_from_lengths(total_len: int, prompt_end: Tensor, response_end: Tensor) -> Tensor:
    """[B, T-1] bool mask of the positions whose *target* token is a response token.

    total_len: T, the width of `input_ids`.
    prompt_end[b]: column of `input_ids` holding row b's first response token
        (= number of left-pad + prompt tokens).
    response_end[b]: one past row b's last response token (EOS included if it was sampled);
        everything from here on is right padding.
    Works for left-padded (`prompt_end` varies, `response_end` = T for right-aligned
    responses), right-padded and mixed layouts. Output column j covers target column j+1,
    so it is set iff `prompt_end[b] <= j + 1 < response_end[b]`.
    """
    if total_len < 1:
        raise ValueError(f"total_len must be >= 1, got {total_len}")
    prompt_end = torch.as_tensor(prompt_end).long().reshape(-1, 1)
    response_end = torch.as_tensor(response_end).long().reshape(-1, 1)
    if prompt_end.shape != response_end.shape:
        raise ValueError("prompt_end and response_end must have the same length")
    if bool((prompt_end < 1).any()):
        # Column 0 is never a target: the first response token must be preceded by a prompt.
        raise ValueError("prompt_end must be >= 1 (at least one prompt token before the response)")
    target_col = torch.arange(1, total_len, device=prompt_end.device).unsqueeze(0)
    return (target_col >= prompt_end) & (target_col < response_end)


def position_ids_from_attention_mask(attention_mask: Tensor) -> Tensor:
    """Position ids that start at 0 on each row's first real token: [B, T] -> long [B, T].

    Needed for left-padded batches so a sequence gets the same positions (and hence the
    same log-probs under rotary embeddings) whatever its padding. Pad columns get 0 — their
    outputs are masked out anyway. For right padding this equals `arange(T)` on real tokens.
    """
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask
