"""When a sync is due, which generator version serves which step, what each step asks the generator for, and how far
ahead a generator may run.

With `sync_every: s` the generator receives the trainer's weights before the rollouts of steps
s, 2s, 3s, ... (0-based step indexes), so the rollouts of steps k*s ... k*s+s-1 all come from
snapshot k (version k; version 0 is the seed). With `inf` every rollout comes from the seed.
A generator that runs ahead may produce a step's rollouts as soon as that step's snapshot is
loaded, and never earlier: `window_end` is where it must stop and wait for the next snapshot.

Each step's request is a pure function of the run seed and the step index (`StepPlan`): the
same prompts, record ids and sampling seed whether it is generated now, ahead of time, or again
after a crashed worker restarts, so every placement produces the same rollouts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from harness.config import INF
from harness.rollout.base import SamplingParams, stream_seed


class GeneratorScheduleError(RuntimeError):
    """A step's rollouts came from a generator version other than the one the schedule assigns."""


def due(step: int, interval: float | int) -> bool:
    """Whether a sync every `interval` steps (`sync_every`, `ref_sync_every`; inf: never) happens
    before the rollouts of 0-based step `step`."""
    return interval != INF and step % int(interval) == 0


def scheduled_version(step: int, sync_every: float | int) -> int:
    """The generator version that must produce the rollouts of 0-based step `step`."""
    return 0 if sync_every == INF else step // int(sync_every)


def window_end(step: int, sync_every: float | int, total_steps: int) -> int:
    """The first step after `step` whose rollouts need a newer snapshot (capped at total_steps)."""
    if sync_every == INF:
        return total_steps
    return min(total_steps, (step // int(sync_every) + 1) * int(sync_every))


def check_generator_version(step: int, version: int, sync_every: float | int) -> None:
    """Raise unless the rollouts of `step` came from the version the schedule says."""
    expected = scheduled_version(step, sync_every)
    if version != expected:
        shown = "inf" if sync_every == INF else str(int(sync_every))
        raise GeneratorScheduleError(
            f"step {step + 1}: its rollouts came from generator version {version}, but with "
            f"sync_every={shown} the schedule assigns version {expected} (the rollouts of steps "
            f"k*s+1 .. k*s+s come from snapshot k). The generator ran past a sync boundary or "
            f"missed a weight update; training on these rollouts would change the method."
        )


def step_seed(run_seed: int, step: int) -> int:
    """The sampling seed of one training step, from the run seed and the step index only."""
    return stream_seed(run_seed, f"train-step-{step}")


@dataclass
class StepRequest:
    step: int
    records: list[dict[str, Any]]
    prompts: list[str]  # chat-formatted
    keys: list[str]  # the records' ids: per-sample random streams follow the record, not the batch slot
    params: SamplingParams


class StepPlan:
    """What every step asks of the generator, known in advance: the mixture's batches are a pure
    function of (seed, step), and so is the sampling seed."""

    def __init__(
        self,
        mixture,
        prompts_per_step: int,
        sampling: SamplingParams,
        run_seed: int,
        format_prompt: Callable[[str], str],
    ):
        self.mixture = mixture
        self.prompts_per_step = prompts_per_step
        self.sampling = sampling
        self.run_seed = run_seed
        self.format_prompt = format_prompt

    def request(self, step: int) -> StepRequest:
        records = self.mixture.batch(step, self.prompts_per_step)
        return StepRequest(
            step=step,
            records=records,
            prompts=[self.format_prompt(record["prompt"]) for record in records],
            keys=[str(record["id"]) for record in records],
            params=dataclasses.replace(self.sampling, seed=step_seed(self.run_seed, step)),
        )
