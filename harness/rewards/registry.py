"""Reward functions chosen by name in a config (open-r1 style).

make_reward_fn("math_verify", workers=2, timeout_s=5.0)
make_reward_fn("reward_model", model_dir="...", device="cpu", batch_size=64)
make_reward_router("math_verify", "reward_model", {"reward_model": {"model_dir": "..."}})
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.registry import Registry
from harness.rewards.math_verify_pool import MathVerifyPool
from harness.rewards.router import MathVerifyReward, RewardFn, RewardModelReward, RewardRouter


def math_verify_fn(workers: int = 2, timeout_s: float = 5.0) -> RewardFn:
    return MathVerifyReward(MathVerifyPool(workers=workers, timeout_s=timeout_s))


def reward_model_fn(
    model_dir: str, device: str = "cpu", batch_size: int = 64, max_length: int = 1024, dtype: str = "auto"
) -> RewardFn:
    from harness.rewards.reward_model import RewardModelScorer  # torch only when asked for

    scorer = RewardModelScorer(model_dir, device=device, batch_size=batch_size, max_length=max_length, dtype=dtype)
    return RewardModelReward(scorer)


REWARD_FACTORIES = Registry(
    "reward function",
    {
        "math_verify": "harness.rewards.registry:math_verify_fn",
        "reward_model": "harness.rewards.registry:reward_model_fn",
    },
)


def make_reward_fn(name: str, **kwargs) -> RewardFn:
    """Build the reward function registered as `name` with its options."""
    return REWARD_FACTORIES.build(name, kwargs, where="Reward function")


def make_reward_router(verifiable: str | None, non_verifiable: str | None, options: dict | None = None) -> RewardRouter:
    """A router for the tasks that have a reward name; `options` maps reward name -> kwargs.

    A reward named for both tasks is built once and shared.
    """
    options = options or {}
    names = {"verifiable": verifiable, "non_verifiable": non_verifiable}
    if not any(names.values()):
        raise ConfigError(
            "Reward router: both 'verifiable' and 'non_verifiable' reward names are empty; "
            f"expected at least one of {REWARD_FACTORIES.names()}."
        )
    built: dict[str, RewardFn] = {}
    fns: dict[str, RewardFn] = {}
    for task, name in names.items():
        if not name:
            continue
        if name not in built:
            kwargs = options.get(name) or {}
            if not isinstance(kwargs, dict):
                raise ConfigError(
                    f"Reward options for {name!r} are {kwargs!r}; expected a mapping of option name to value."
                )
            built[name] = make_reward_fn(name, **kwargs)
        fns[task] = built[name]
    return RewardRouter(fns)
