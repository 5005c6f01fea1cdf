"""The two interfaces of rollouts: a backend (`Generator`) and the trainer's rollout source (`RolloutSource`).

A backend samples n responses per prompt with given sampling settings and can receive the
trainer's weights. The Hugging Face backend (`hf.py`) runs anywhere; a vLLM backend is a second
implementation of the same protocol, so the trainer never changes when it drops in.
A rollout source (`rollout.placement`: `ColocatedRollouts` in placement.py, `WorkerRollouts` in
worker_client.py) wraps one backend for the trainer: each step's rollouts, syncs, checkpoints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, Sequence

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    return_logprobs: bool = False


@dataclass
class Rollout:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    token_ids: list[int]  # response only; ends with EOS when finish_reason == "stop"
    text: str  # response text, special tokens stripped
    finish_reason: Literal["stop", "length"]
    logprobs: list[float] | None = field(default=None, repr=False)  # temperature-scaled, per token

    @property
    def length(self) -> int:
        return len(self.token_ids)


def stream_seed(seed: int, key: str | int, sample_index: int = 0) -> int:
    """The seed of one sample's random stream, a pure function of (seed, prompt key, sample index).

    Backends derive every sample's randomness from it, so a sample never depends on which other
    prompts share its batch, on the batch size or on chunking (evaluation standard errors assume
    independent samples), and a run seed plus a step index fixes a step's rollouts exactly.
    The value fits a signed 63-bit integer (torch.Generator and vLLM both accept it).
    """
    digest = hashlib.blake2b(f"{seed}/{key}/{sample_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def check_whole_tensors(state_dict: Mapping[str, torch.Tensor]) -> None:
    """A sharded policy's own state dict holds DTensor shards; a generator needs whole tensors
    (gather them first: harness.distributed.full_state_dict)."""
    from torch.distributed.tensor import DTensor

    for name, tensor in state_dict.items():
        if isinstance(tensor, DTensor):
            raise TypeError(
                f"weights for the generator hold a DTensor shard ({name}); gather the full state dict on rank 0 first"
            )


class Generator(Protocol):
    """What every rollout backend provides."""

    version: int  # 0 = the seed weights; +1 per load_weights

    def generate(
        self, prompts: list[str], params: SamplingParams, keys: Sequence[str | int] | None = None
    ) -> list[list[Rollout]]:
        """Sample params.n rollouts for each chat-formatted prompt; groups keep prompt order.

        With `params.seed` set, prompt i's sample j draws from `stream_seed(params.seed, keys[i], j)`
        (keys default to the prompt indexes): stable record ids make samples batch-independent.
        """
        ...

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy the trainer's weights in and bump `version`."""
        ...

    def load_weights_from(self, folder: str | Path) -> None:
        """Load a snapshot folder's weights (the generator worker's sync) and bump `version`: an
        engine that can reads the folder itself, the others read its tensors."""
        ...

    def place(self, device: torch.device, dtype: torch.dtype) -> None:
        """Put the weights this process holds on the trainer's `device` in `dtype` (an engine that
        places its own weights does nothing)."""
        ...


@dataclass
class StepRollouts:
    """One step's rollouts, the version that produced them and what they cost."""

    step: int
    records: list[dict[str, Any]]
    groups: list[list[Rollout]]
    version: int
    generate_s: float  # seconds the generator spent producing them
    wait_s: float  # seconds the trainer waited for them (colocated: the same as generate_s)


class RolloutSource(Protocol):
    """What the trainer asks of its rollout source, whatever `rollout.placement` runs it."""

    version: int  # the generator version of the snapshot it holds (settable: resume restores it)

    def rollouts(self, step: int) -> StepRollouts:
        """The rollouts of 0-based `step`, from the snapshot the sync schedule assigns to it."""
        ...

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """A sync: the trainer's whole weights become the next snapshot (version + 1)."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The snapshot's weights (a checkpoint keeps a stale snapshot)."""
        ...

    def sample_with(
        self,
        weights: Mapping[str, torch.Tensor],
        prompts: list[str],
        params: SamplingParams,
        keys: Sequence[str | int] | None = None,
    ) -> list[list[Rollout]]:
        """Sample once with `weights` (validation), then go back to the snapshot and its version."""
        ...

    def place(self, device: torch.device, dtype: torch.dtype) -> None:
        """A generator in this process moves to the trainer's device (it was built on the CPU before
        sharding); one in its own process does nothing."""
        ...

    def start(self, step: int) -> None:
        """The loop begins at `step`: a worker may start generating its window now."""
        ...

    def close(self) -> None: ...
