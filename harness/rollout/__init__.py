"""Rollout backends (`Generator`, made by `make_generator`) and the trainer's rollout source (`RolloutSource`)."""

from harness.rollout.base import Generator, Rollout, RolloutSource, SamplingParams, stream_seed
from harness.rollout.factory import BACKENDS, generator_options, make_generator, require_backend
from harness.rollout.hf import HFGenerator

__all__ = [
    "Generator",
    "Rollout",
    "RolloutSource",
    "SamplingParams",
    "HFGenerator",
    "make_generator",
    "stream_seed",
    "BACKENDS",
    "generator_options",
    "require_backend",
]
