"""Pure tensor functions for RL post-training: log-probs, pairs, DPO, GRPO (torch only)."""

from harness.algorithms.dpo import dpo_loss
from harness.algorithms.grpo import grpo_advantages, grpo_loss, k3_kl
from harness.algorithms.logprobs import (
    gather_logprobs,
    masked_mean,
    masked_sum,
    position_ids_from_attention_mask,
    response_mask_from_lengths,
    token_entropy,
    token_logprobs_and_entropy,
)
from harness.algorithms.pairs import Pair, build_preference_pairs, build_verifiable_pairs

__all__ = [
    "Pair",
    "build_preference_pairs",
    "build_verifiable_pairs",
    "dpo_loss",
    "gather_logprobs",
    "grpo_advantages",
    "grpo_loss",
    "k3_kl",
    "masked_mean",
    "masked_sum",
    "position_ids_from_attention_mask",
    "response_mask_from_lengths",
    "token_entropy",
    "token_logprobs_and_entropy",
]
