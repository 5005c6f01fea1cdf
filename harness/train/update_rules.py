"""The two update rules: one accumulated DPO or GRPO gradient from a step's scored rollouts.

The trainer (harness.train.trainer) calls one of them per optimizer step, under autocast; each
returns the step's train/* statistics (summed over ranks) and whether a gradient was made.
"""

from __future__ import annotations

import torch

from harness import distributed
from harness.algorithms import (
    build_preference_pairs,
    build_verifiable_pairs,
    dpo_loss,
    grpo_advantages,
    grpo_loss,
    k3_kl,
    masked_sum,
)
from harness.config import RunConfig
from harness.rollout import Rollout
from harness.train.sequences import pack, policy_logprobs


def dpo_update(
    cfg: RunConfig,
    policy,
    reference,
    tokenizer,
    records,
    groups,
    reward_grid,
    rng,
    dist: distributed.Dist = distributed.Dist(),
) -> dict:
    """Build pairs per prompt (by its task's rule), then one accumulated DPO gradient."""
    pairs = []
    for task, build in (
        ("verifiable", lambda g: build_verifiable_pairs(g, rng)),
        ("non_verifiable", build_preference_pairs),
    ):
        rows = [i for i, record in enumerate(records) if record["task"] == task]
        if rows:
            found = build(reward_grid[rows])
            pairs.extend((rows[p.prompt_index], p.chosen, p.rejected) for p in found)
    totals = {
        "train/loss": 0.0,
        "train/kl": 0.0,
        "train/entropy": 0.0,
        "train/reward_margin": 0.0,
        "train/reward_accuracy": 0.0,
    }
    policy.train()
    device = next(policy.parameters()).device
    per_chunk = max(1, cfg.train.micro_batch_size // 2)
    for chunk, real in dist.chunks(pairs, per_chunk):  # this rank's share; `real` False: a 0-weight filler
        rollouts = [groups[p][c] for p, c, _ in chunk] + [groups[p][r] for p, _, r in chunk]
        batch = pack(rollouts, tokenizer.pad_token_id, device)
        logp, entropy = policy_logprobs(
            policy, batch, cfg.train.temperature, with_entropy=True, bucketed=not dist.enabled
        )
        with torch.no_grad():
            ref_logp, _ = policy_logprobs(reference, batch, cfg.train.temperature, bucketed=not dist.enabled)
        summed, ref_summed = masked_sum(logp, batch.response_mask), masked_sum(ref_logp, batch.response_mask)
        k = len(chunk)
        lengths = batch.response_lengths.float()
        loss, stats = dpo_loss(
            summed[:k],
            summed[k:],
            ref_summed[:k],
            ref_summed[k:],
            cfg.dpo.beta,
            chosen_len=lengths[:k],
            rejected_len=lengths[k:],
            length_normalize=cfg.dpo.length_normalize,
            nll_coef=cfg.dpo.nll_coef,
        )
        weight = k / len(pairs) if real else 0.0
        (loss * weight).backward()
        totals["train/loss"] += stats["loss"] * weight
        totals["train/reward_margin"] += stats["reward_margin"] * weight
        totals["train/reward_accuracy"] += stats["reward_accuracy"] * weight
        totals["train/kl"] += float(k3_kl(logp.detach(), ref_logp, batch.response_mask).mean()) * weight
        totals["train/entropy"] += float(_mean_token(entropy, batch.response_mask)) * weight
    return {**dist.sum_stats(totals), "train/pairs": float(len(pairs)), "_has_grad": bool(pairs)}


def grpo_update(
    cfg: RunConfig, policy, reference, tokenizer, groups, reward_grid, dist: distributed.Dist = distributed.Dist()
) -> dict:
    """Group-centred advantages, per-sequence token-sum loss, k3 KL to the fixed reference."""
    advantages = grpo_advantages(reward_grid, scale_by_std=cfg.grpo.scale_by_std).flatten()
    flat = [rollout for group in groups for rollout in group]
    totals = {"train/loss": 0.0, "train/kl": 0.0, "train/entropy": 0.0, "train/advantage_abs_mean": 0.0}
    policy.train()
    device = next(policy.parameters()).device
    indices = list(range(len(flat)))
    for chunk, real in dist.chunks(indices, cfg.train.micro_batch_size):  # this rank's share
        batch = pack([flat[i] for i in chunk], tokenizer.pad_token_id, device)
        logp, entropy = policy_logprobs(
            policy,
            batch,
            cfg.train.temperature,
            with_entropy=True,
            entropy_grad=cfg.grpo.entropy_coef > 0,
            bucketed=not dist.enabled,
        )
        with torch.no_grad():
            ref_logp, _ = policy_logprobs(reference, batch, cfg.train.temperature, bucketed=not dist.enabled)
        behaviour = behaviour_logprobs([flat[i] for i in chunk], batch) if cfg.grpo.importance_sampling else None
        loss, stats = grpo_loss(
            logp,
            ref_logp,
            batch.response_mask,
            advantages[chunk].to(device),
            kl_coef=cfg.grpo.kl_coef,
            entropy_tok=entropy if cfg.grpo.entropy_coef > 0 else None,
            entropy_coef=cfg.grpo.entropy_coef,
            behaviour_logp_tok=behaviour,
            is_cap=cfg.grpo.is_cap if cfg.grpo.importance_sampling else None,
        )
        weight = len(chunk) / len(flat) if real else 0.0
        (loss * weight).backward()
        totals["train/loss"] += stats["loss"] * weight
        totals["train/kl"] += stats.get("kl", 0.0) * weight
        totals["train/advantage_abs_mean"] += stats["advantage_abs_mean"] * weight
        totals["train/entropy"] += float(_mean_token(entropy, batch.response_mask)) * weight
        if "is_ratio_mean" in stats:
            totals["train/is_ratio_mean"] = totals.get("train/is_ratio_mean", 0.0) + stats["is_ratio_mean"] * weight
    return {**dist.sum_stats(totals), "_has_grad": bool(advantages.abs().sum() > 0 or cfg.grpo.kl_coef > 0)}


def behaviour_logprobs(rollouts: list[Rollout], batch) -> torch.Tensor:
    """The generator's own sampling log-probs, laid out like the trainer's [B, T-1] tensor."""
    out = torch.zeros(batch.response_mask.shape, dtype=torch.float32, device=batch.response_mask.device)
    for row, rollout in enumerate(rollouts):
        start = len(rollout.prompt_ids) - 1
        out[row, start : start + len(rollout.logprobs)] = torch.tensor(rollout.logprobs)
    return out


def _mean_token(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
