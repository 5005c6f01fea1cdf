"""Where the generator runs (`rollout.placement`) and the one surface the trainer uses for it.

    colocated  ColocatedRollouts: the generator lives in the trainer's process; a step's rollouts
               are generated when the trainer asks for them (the trainer waits the whole time).
    worker     WorkerRollouts (worker_client.py): the generator runs in its own process and runs
               ahead within the sync window; the trainer waits only when it is not ahead.

Both give the trainer `rollouts(step) -> StepRollouts`, `load_weights(state_dict)` (a sync),
`state_dict()` (the generator's weights, for checkpoints), a settable `version`, `start(step)`
(the loop begins at `step`: a worker may start generating its window, e.g. during the first
validation) and `close()`.
Both draw a step's prompts and sampling seed from `StepPlan`, so their rollouts are identical.
"""

from __future__ import annotations

import time
from typing import Mapping

import torch

from harness.rollout.schedule import StepPlan, StepRollouts


class ColocatedRollouts:
    """A generator in the trainer's own process, asked for each step's rollouts when they are due."""

    def __init__(self, generator, plan: StepPlan):
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
        return StepRollouts(step=step, records=request.records, groups=groups, version=self.generator.version,
                            generate_s=elapsed, wait_s=elapsed)

    def start(self, step: int) -> None:
        pass  # generated when asked for

    def close(self) -> None:
        pass


def open_rollouts(cfg, policy, tokenizer, plan: StepPlan, make_colocated_generator):
    """The trainer's rollout source for `cfg.rollout.placement`. The colocated generator is built
    by the caller (`make_colocated_generator()`); the worker builds its own from a snapshot."""
    if cfg.rollout.placement == "worker":
        from harness.rollout.worker_client import WorkerRollouts
        return WorkerRollouts(cfg, policy, tokenizer, plan)
    return ColocatedRollouts(make_colocated_generator(), plan)
