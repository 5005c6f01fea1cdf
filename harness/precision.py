"""Master-weight and compute precision: `model.param_dtype` and `model.compute_dtype`.

Master weights and Adam moments live in `param_dtype` (float32 unless asked otherwise); the
forward and backward run in `compute_dtype` (FSDP2's MixedPrecisionPolicy when sharded,
autocast on one device). bf16 keeps 8 significant bits: near a typical weight of 0.02 its
spacing is about 1.2e-4, so an AdamW step of about lr = 1e-6 rounds away entirely.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch

log = logging.getLogger("harness.precision")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
TYPICAL_WEIGHT = 0.02  # the init std of Llama-style models; most weights sit near it
_MANTISSA_BITS = {"float32": 23, "bfloat16": 7, "float16": 10}


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def inference_dtype(cfg) -> str:
    """The dtype of copies that only compute (reference, generator, worker): the narrower of
    `model.param_dtype` and `model.compute_dtype`."""
    param, compute = cfg.model.param_dtype, cfg.model.compute_dtype
    return compute if BYTES[compute] < BYTES[param] else param


def weight_spacing(dtype: str, magnitude: float = TYPICAL_WEIGHT) -> float:
    """Distance between adjacent representable numbers near `magnitude` in `dtype`."""
    return 2.0 ** (math.floor(math.log2(magnitude)) - _MANTISSA_BITS[dtype])


def update_rounds_away(param_dtype: str, lr: float) -> bool:
    """An Adam step moves a weight by about lr; below half the spacing it rounds to no change."""
    return lr < weight_spacing(param_dtype) / 2


def warn_if_updates_round_away(cfg) -> str | None:
    """Log (and return) a warning when the master weights cannot represent the configured steps."""
    dtype, lr = cfg.model.param_dtype, cfg.train.lr
    if not update_rounds_away(dtype, lr):
        return None
    message = (
        f"model.param_dtype={dtype} with train.lr={lr:g}: near a typical weight of {TYPICAL_WEIGHT} "
        f"{dtype} numbers are {weight_spacing(dtype):.1e} apart, so most AdamW updates (about lr) round "
        f"away and training silently does nothing. Use model.param_dtype=float32 (master weights) with "
        f"model.compute_dtype={dtype} (compute)."
    )
    log.warning(message)
    return message


def autocast(compute_dtype: str, device: torch.device, sharded: bool):
    """Lower-precision compute on one device; FSDP's MixedPrecisionPolicy does it when sharded."""
    dtype = torch_dtype(compute_dtype)
    if sharded or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_dtype(setting: str, device) -> str:
    """A model dtype setting (`rewards.reward_model_dtype`, `eval.dtype`): auto is bfloat16 on CUDA and
    float32 elsewhere (a CPU's bf16 matmuls are slow and gain nothing); any other value is kept."""
    if setting != "auto":
        return setting
    return "bfloat16" if str(device).startswith("cuda") else "float32"
