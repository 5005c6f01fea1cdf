"""Where the generator runs (`rollout.placement`) and the one surface the trainer uses for it.

    colocated  ColocatedRollouts: the generator lives in the trainer's process; a step's rollouts
               are generated when the trainer asks for them (the trainer waits the whole time).
    worker     WorkerRollouts (worker_client.py): the generator runs in its own process and runs
               ahead within the sync window; the trainer waits only when it is not ahead.

Both implement `RolloutSource` (rollout/base.py): `rollouts(step) -> StepRollouts`,
`load_weights(state_dict)` (a sync), `state_dict()` (the generator's weights, for checkpoints), a
settable `version`, `place(device, dtype)` (a colocated copy moves to the trainer's device),
`start(step)` (the loop begins at `step`: a worker may start generating its window, e.g. during
the first validation) and `close()`.
Both draw a step's prompts and sampling seed from `StepPlan`, so their rollouts are identical.
Both also sample once with given weights and go back to their snapshot (`sample_with`): that is
how validation reaches the trainer's current policy through the run's one generator
(`open_validator`; under FSDP the policy is gathered on rank 0, which alone owns the generator).
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch

from harness.rollout.base import Generator, Rollout, RolloutSource, SamplingParams, StepRollouts
from harness.rollout.schedule import StepPlan


class ColocatedRollouts:
    """A generator in the trainer's own process, asked for each step's rollouts when they are due."""

    def __init__(self, generator: Generator, plan: StepPlan):
        self.generator = generator
        self.plan = plan

    @property
    def version(self) -> int:
        return self.generator.version

    @version.setter
    def version(self, value: int) -> None:
        self.generator.version = value

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.generator.load_weights(state_dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.generator.state_dict()

    def rollouts(self, step: int) -> StepRollouts:
        request = self.plan.request(step)
        started = time.perf_counter()
        groups = self.generator.generate(request.prompts, request.params, keys=request.keys)
        elapsed = time.perf_counter() - started
        return StepRollouts(
            step=step,
            records=request.records,
            groups=groups,
            version=self.generator.version,
            generate_s=elapsed,
            wait_s=elapsed,
        )

    def sample_with(
        self,
        weights: Mapping[str, torch.Tensor],
        prompts: list[str],
        params: SamplingParams,
        keys: Sequence[str | int] | None = None,
    ) -> list[list[Rollout]]:
        """Sample once with `weights`, then put the generator's snapshot and version back."""
        snapshot = {name: tensor.detach().to("cpu", copy=True) for name, tensor in self.generator.state_dict().items()}
        version = self.generator.version
        self.generator.load_weights(weights)
        try:
            return self.generator.generate(prompts, params, keys)
        finally:
            self.generator.load_weights(snapshot)
            self.generator.version = version

    def place(self, device: torch.device, dtype: torch.dtype) -> None:
        self.generator.place(device, dtype)

    def start(self, step: int) -> None:
        pass  # generated when asked for

    def close(self) -> None:
        pass


def open_rollouts(cfg, policy, tokenizer, plan: StepPlan, make_colocated_generator) -> RolloutSource:
    """The trainer's rollout source for `cfg.rollout.placement`. The colocated generator is built
    by the caller (`make_colocated_generator()`); the worker builds its own from a snapshot."""
    if cfg.rollout.placement == "worker":
        from harness.rollout.worker_client import WorkerRollouts

        return WorkerRollouts(cfg, policy, tokenizer, plan)
    return ColocatedRollouts(make_colocated_generator(), plan)


def gathered_policy(policy, dist, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The policy's whole weights on rank 0 in `dtype` (the generator's), gathered once (collective:
    every rank calls it); an empty dict on the other ranks."""
    from harness.distributed import full_state_dict

    weights = full_state_dict(policy, dist)
    if not dist.is_main:
        return {}
    for name in list(weights):  # one tensor at a time: the peak stays one model plus one tensor
        weights[name] = weights[name].detach().to(dtype)
    return weights


def push_policy(rollouts, policy, dist, dtype: torch.dtype) -> None:
    """Generator sync: gather the policy (collective), rank 0 hands it to its generator."""
    weights = gathered_policy(policy, dist, dtype)
    if dist.is_main:
        rollouts.load_weights(weights)


class CurrentPolicySampler:
    """Validation's generator: samples the policy's current weights through the run's one generator
    (rank 0's rollout source, `sample_with`), and gives every rank the same samples (broadcast)."""

    def __init__(self, rollouts: RolloutSource, policy, tokenizer, dist, dtype: torch.dtype):
        self.rollouts, self.policy, self.tokenizer, self.dist, self.dtype = rollouts, policy, tokenizer, dist, dtype

    def generate(
        self, prompts: list[str], params: SamplingParams, keys: Sequence[str | int] | None = None
    ) -> list[list[Rollout]]:
        weights = gathered_policy(self.policy, self.dist, self.dtype)
        groups = self.rollouts.sample_with(weights, prompts, params, keys) if self.dist.is_main else None
        del weights
        return self.dist.broadcast(groups)


def open_validator(cfg, policy, tokenizer, rollouts, dist, options: dict, dtype: torch.dtype):
    """What validation samples the current policy through. One process with a backend that can
    share the live module (hf): the module itself. Otherwise the run's one generator, rank 0's
    `rollouts`: no second engine beside a worker, none on other ranks, no DTensor pushed."""
    from harness.rollout.factory import backend_of, make_generator

    if backend_of(cfg.rollout.backend).shares_live_model and not dist.enabled:
        return make_generator(cfg.rollout.backend, policy, tokenizer, live=True, **options)
    return CurrentPolicySampler(rollouts, policy, tokenizer, dist, dtype)
