"""Rollout backends. The trainer and evaluators use only `Generator` and `make_generator`."""

from harness.rollout.base import Generator, Rollout, SamplingParams, stream_seed
from harness.rollout.factory import BACKENDS, generator_options, make_generator, require_backend
from harness.rollout.hf import HFGenerator

__all__ = ["Generator", "Rollout", "SamplingParams", "HFGenerator", "make_generator", "stream_seed",
           "BACKENDS", "generator_options", "require_backend"]
