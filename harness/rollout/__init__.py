"""Rollout backends. The trainer and evaluators use only `Generator` and `make_generator`."""

from harness.rollout.base import Generator, Rollout, SamplingParams, stream_seed
from harness.rollout.hf import HFGenerator, make_generator

__all__ = ["Generator", "Rollout", "SamplingParams", "HFGenerator", "make_generator", "stream_seed"]
