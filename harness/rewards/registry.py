"""Reward functions chosen by name in a config (open-r1 style).

    make_reward_fn("math_verify", workers=2, timeout_s=5.0)
    make_reward_fn("reward_model", model_dir="...", device="cpu", batch_size=64)
    make_reward_router("math_verify", "reward_model", {"reward_model": {"model_dir": "..."}})
"""

from __future__ import annotations

import inspect
from typing import Callable

from harness.errors import ConfigError
from harness.rewards.math_verify_pool import MathVerifyPool
from harness.rewards.router import MathVerifyReward, RewardFn, RewardModelReward, RewardRouter


def _math_verify(workers: int = 2, timeout_s: float = 5.0) -> RewardFn:
    return MathVerifyReward(MathVerifyPool(workers=workers, timeout_s=timeout_s))


def _reward_model(
    model_dir: str, device: str = "cpu", batch_size: int = 64, max_length: int = 1024
) -> RewardFn:
    from harness.rewards.reward_model import RewardModelScorer  # torch only when asked for

    scorer = RewardModelScorer(model_dir, device=device, batch_size=batch_size, max_length=max_length)
    return RewardModelReward(scorer)


REWARD_FACTORIES: dict[str, Callable[..., RewardFn]] = {
    "math_verify": _math_verify,
    "reward_model": _reward_model,
}


def make_reward_fn(name: str, **kwargs) -> RewardFn:
    """Build the reward function registered as `name` with its options."""
    factory = REWARD_FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"Unknown reward function name {name!r}; expected one of {sorted(REWARD_FACTORIES)}."
        )
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(kwargs) - set(parameters))
    missing = sorted(
        key for key, p in parameters.items() if p.default is inspect.Parameter.empty and key not in kwargs
    )
    if unknown or missing:
        raise ConfigError(
            f"Reward function {name!r}: unknown options {unknown} and missing options {missing}; "
            f"expected options {list(parameters)} (required: "
            f"{[k for k, p in parameters.items() if p.default is inspect.Parameter.empty]})."
        )
    return factory(**kwargs)


def make_reward_router(
    verifiable: str | None, non_verifiable: str | None, options: dict | None = None
) -> RewardRouter:
    """A router for the tasks that have a reward name; `options` maps reward name -> kwargs.

    A reward named for both tasks is built once and shared.
    """
    options = options or {}
    names = {"verifiable": verifiable, "non_verifiable": non_verifiable}
    if not any(names.values()):
        raise ConfigError(
            "Reward router: both 'verifiable' and 'non_verifiable' reward names are empty; "
            f"expected at least one of {sorted(REWARD_FACTORIES)}."
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
                    f"Reward options for {name!r} are {kwargs!r}; expected a mapping of option "
                    f"name to value."
                )
            built[name] = make_reward_fn(name, **kwargs)
        fns[task] = built[name]
    return RewardRouter(fns)
