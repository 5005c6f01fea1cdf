"""GRPO advantages and loss (torch only).

Paper setting: on-policy (s = 1), advantage = reward - group mean (optionally / group std,
as in the authors' code), KL to a fixed reference with the k3 estimator, per-sequence token
SUM (not length-normalised), averaged over sequences:

    loss = mean_seq( -A_i * sum_t w_it * exp(logp_it - sg(logp_it)) )      policy
         + kl_coef * mean_seq( sum_t k3_it ),  k3 = exp(r) - r - 1, r = ref_logp - logp
         - entropy_coef * mean_seq( sum_t entropy_it )                      optional bonus

sg = stop-gradient. On-policy w = 1, so the policy term's gradient is -A_i * grad logp_it.
Off-policy (the s > 1 extension) w = sg(exp(logp - behaviour_logp)), truncated at is_cap:
a truncated importance weight on the on-policy gradient. Sums run over response tokens only.
"""

import torch
from torch import Tensor

from harness.algorithms.logprobs import masked_sum


def grpo_advantages(rewards: Tensor, scale_by_std: bool = False, eps: float = 1e-6) -> Tensor:
    """Group-relative advantages: [P, n] rewards -> [P, n].

    A = r - mean_group(r); with `scale_by_std`, A / (std_group(r) + eps) where std is the
    *unbiased* (n - 1) sample std, torch.std's default, as in the authors' code and TRL.
    A group of one rollout (std undefined) or of equal rewards gives zeros, never NaN.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [P, n], got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    # Float rounding leaves ~1e-8 residues in all-equal groups (0.7 - mean(0.7, ...)), which
    # the std scaling below would blow up to ~0.06: zero those groups exactly.
    all_equal = rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True)
    centered = centered.masked_fill(all_equal, 0.0)
    if not scale_by_std:
        return centered
    if rewards.shape[1] < 2:
        return torch.zeros_like(rewards)  # the sample std of one value is undefined
    std = rewards.std(dim=1, keepdim=True)  # unbiased
    return centered / (std + eps)


def _zero_loss(like: Tensor) -> Tensor:
    """A 0.0 loss backward() accepts: on `like`'s graph if it has one, else a fresh leaf."""
    if like.requires_grad:
        return like.sum() * 0.0
    return torch.zeros((), dtype=like.dtype, device=like.device, requires_grad=True)


def _check_shapes(logp_tok: Tensor, mask: Tensor, advantages: Tensor, **others) -> None:
    expected = tuple(logp_tok.shape)
    if logp_tok.dim() != 2:
        raise ValueError(f"logp_tok must be [N, L], got {expected}")
    for name, tensor in dict(mask=mask, **others).items():
        if tensor is not None and tuple(tensor.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {expected}")
    if tuple(advantages.shape) != expected[:1]:
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected {expected[:1]}")


def _importance_weights(
    logp: Tensor, behaviour_logp_tok: Tensor, keep: Tensor, is_cap: float | None
) -> tuple[Tensor, dict[str, float]]:
    """Detached token ratios exp(logp - behaviour_logp), truncated at is_cap, and their stats.

    `logp` already holds 0 at masked entries; the behaviour log-probs are zeroed there too so
    masked ratios are exactly 1 and never overflow.
    """
    behaviour = behaviour_logp_tok.detach().to(logp.dtype)
    behaviour = torch.where(keep, behaviour, torch.zeros_like(behaviour))
    ratio = torch.exp(logp.detach() - behaviour)
    weights = ratio if is_cap is None else ratio.clamp(max=is_cap)
    kept = ratio[keep]
    stats = {
        "is_ratio_mean": float(kept.mean()) if kept.numel() else 1.0,
        "is_truncated_frac": (float((kept > is_cap).float().mean()) if is_cap is not None and kept.numel() else 0.0),
    }
    return weights, stats


def k3_kl(logp_tok: Tensor, ref_logp_tok: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence summed k3 estimate of KL(policy || reference): [N, L] -> [N].

    k3 = exp(r) - r - 1 with r = ref_logp - logp, summed over the response tokens in `mask`
    (masked entries never contribute, even if NaN). The one k3: the GRPO loss and the trainer's
    `train/kl` metric both call it.
    """
    keep = mask.bool()
    zeros = torch.zeros_like(logp_tok)
    r = torch.where(keep, ref_logp_tok.to(logp_tok.dtype), zeros) - torch.where(keep, logp_tok, zeros)
    return masked_sum(torch.exp(r) - r - 1.0, mask)


def grpo_loss(
    logp_tok: Tensor,
    ref_logp_tok: Tensor | None,
    mask: Tensor,
    advantages: Tensor,
    *,
    kl_coef: float,
    entropy_tok: Tensor | None = None,
    entropy_coef: float = 0.0,
    behaviour_logp_tok: Tensor | None = None,
    is_cap: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GRPO loss over N sequences and its stats (see the module docstring for the formula).

    logp_tok: [N, L] policy log-probs of the response tokens (with grad).
    ref_logp_tok: [N, L] reference log-probs (constant); may be None only if kl_coef == 0.
    mask: [N, L] bool/float, response tokens. Masked entries never contribute, even if NaN.
    advantages: [N] (constant).
    entropy_tok: [N, L] per-token entropy, needed when entropy_coef != 0.
    behaviour_logp_tok: [N, L] the generator's sampling log-probs; given, the policy term is
    importance-weighted by exp(logp - behaviour_logp), truncated at is_cap when set.
    The policy term's value is -mean(A_i * tokens_i * mean weight), about 0 for centred
    advantages; only its gradient matters.
    With N == 0 returns a zero loss backward() accepts and all-zero stats.
    stats: loss, policy_loss, kl (mean per-sequence summed k3; absent if ref_logp_tok is
    None), advantage_abs_mean, entropy (mean per-sequence summed entropy, if given),
    is_ratio_mean (mean untruncated ratio over response tokens) and is_truncated_frac
    when importance sampling is used.
    """
    _check_shapes(
        logp_tok,
        mask,
        advantages,
        ref_logp_tok=ref_logp_tok,
        entropy_tok=entropy_tok,
        behaviour_logp_tok=behaviour_logp_tok,
    )
    if ref_logp_tok is None and kl_coef != 0:
        raise ValueError(f"ref_logp_tok is required when kl_coef != 0 (got kl_coef={kl_coef})")
    if entropy_tok is None and entropy_coef != 0:
        raise ValueError(f"entropy_tok is required when entropy_coef != 0 (got {entropy_coef})")
    if is_cap is not None and not is_cap > 0:
        raise ValueError(f"is_cap must be > 0 or None, got {is_cap!r}")

    n_seqs = logp_tok.shape[0]
    if n_seqs == 0:
        stats = dict(loss=0.0, policy_loss=0.0, advantage_abs_mean=0.0)
        if ref_logp_tok is not None:
            stats["kl"] = 0.0
        return _zero_loss(logp_tok), stats

    keep = mask.bool()
    zeros = torch.zeros_like(logp_tok)
    # Zero masked entries *before* any exp so padding garbage cannot turn into inf/NaN
    # values or gradients.
    logp = torch.where(keep, logp_tok, zeros)
    advantages = advantages.detach().to(logp.dtype)
    stats: dict[str, float] = {}

    weight = torch.exp(logp - logp.detach())  # value 1, gradient = grad logp
    if behaviour_logp_tok is not None:
        is_weights, is_stats = _importance_weights(logp, behaviour_logp_tok, keep, is_cap)
        weight = is_weights * weight
        stats.update(is_stats)
    policy_loss = -(advantages * masked_sum(weight, mask)).mean()
    loss = policy_loss

    if ref_logp_tok is not None:
        kl = k3_kl(logp, ref_logp_tok.detach(), mask).mean()
        loss = loss + kl_coef * kl
        stats["kl"] = float(kl.detach())

    if entropy_tok is not None:
        entropy = masked_sum(entropy_tok, mask).mean()
        loss = loss - entropy_coef * entropy
        stats["entropy"] = float(entropy.detach())

    stats.update(
        loss=float(loss.detach()),
        policy_loss=float(policy_loss.detach()),
        advantage_abs_mean=float(advantages.abs().mean()),
    )
    return loss, stats
