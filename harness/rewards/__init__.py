"""Rewards: Math-Verify (in killable worker processes), a reward model, and a per-task router.

`harness.rewards` knows nothing of training. The reward model pulls in torch/transformers, so it
is imported lazily: Math-Verify worker processes import this package and stay light.
"""

from harness.rewards.math_verify_pool import MathVerifyPool, math_verify_reward
from harness.rewards.registry import REWARD_FACTORIES, make_reward_fn, make_reward_router
from harness.rewards.router import (
    MathVerifyReward,
    RewardBatch,
    RewardFn,
    RewardModelReward,
    RewardRouter,
)

__all__ = [
    "REWARD_FACTORIES",
    "MathVerifyPool",
    "MathVerifyReward",
    "RewardBatch",
    "RewardFn",
    "RewardModelReward",
    "RewardModelScorer",
    "RewardRouter",
    "make_reward_fn",
    "make_reward_router",
    "math_verify_reward",
]


def __getattr__(name: str):
    if name == "RewardModelScorer":
        from harness.rewards.reward_model import RewardModelScorer

        return RewardModelScorer
    raise AttributeError(f"module 'harness.rewards' has no attribute {name!r}")
