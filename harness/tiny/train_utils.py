"""Small pieces the tiny builder's training loops share: batch widths, index streams, the
learning-rate schedule, bf16 detection, special token ids, rounded means."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def padded_width(lengths, multiple: int = 16) -> int:
    """Round the batch width up to a multiple of 16: a handful of distinct shapes, because
    oneDNN compiles new bf16 kernels (seconds each) for every new shape it meets."""
    return -(-max(lengths) // multiple) * multiple


def index_stream(size: int, per_batch: int, seed: int):
    """Endless batches of indices: successive seeded permutations (epochs without replacement)."""
    generator = torch.Generator().manual_seed(seed)
    buffer: list[int] = []
    while True:
        while len(buffer) < per_batch:
            buffer.extend(torch.randperm(size, generator=generator).tolist())
        yield buffer[:per_batch]
        buffer = buffer[per_batch:]


def warmup_cosine(optimizer, warmup: int, total: int, floor: float):
    def factor(step: int) -> float:
        progress = min(step, total) / max(total, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return min(1.0, (step + 1) / max(warmup, 1)) * (floor + (1 - floor) * cosine)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def use_bf16(setting) -> bool:
    """Resolve a recipe's ``bf16_autocast``: True, False, or "auto" = only where the CPU has
    native bf16 instructions (2x faster training there; emulated bf16 elsewhere is slower)."""
    if setting != "auto":
        return bool(setting)
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def special_ids(tokenizer) -> dict:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def mean4(values) -> float:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 4) if values else float("nan")
