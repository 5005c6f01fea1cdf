"""The trainer's models and optimizer, placed for one process or for FSDP.

    models = build_models(cfg, policy_path, dist)

- policy: master weights in `model.param_dtype`; under FSDP sharded over the ranks with compute
  in `model.compute_dtype` (MixedPrecisionPolicy, fp32 gradient reduction);
- loading: rank 0 alone reads the checkpoint (on the CPU under FSDP); other ranks build the models
  on the meta device and receive their shards from rank 0, so one whole copy sits in host memory;
- reference: loaded in the compute dtype (it never trains) and sharded the same way, or kept on
  CPU with `model.reference_offload`; never a second full copy per GPU;
- generator: rank 0's rollout source, made before sharding: a full copy only in `colocated`
  placement, a worker process fed snapshots in `worker` placement;
- optimizer: AdamW over the (sharded) master weights, so its moments are fp32 and sharded too;
- with `model.lora`: adapters on the policy (only they train), the reference is the policy with
  the adapter off (harness/train/lora.py).
No seed-weights clone is kept: the freshly loaded generator and reference *are* the seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from harness.distributed import Dist, shard_from_rank0
from harness.train.lora import AdapterDisabled, apply_lora
from harness.precision import inference_dtype, torch_dtype, warn_if_updates_round_away
from harness.models import build_on_meta, load_policy, resolve_device
from harness.rollout.base import RolloutSource

log = logging.getLogger("harness.train")


@dataclass
class Models:
    policy: Any
    reference: Any
    generator: RolloutSource | None  # None on ranks other than 0
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    device: torch.device


def reference_dtype(cfg) -> str:
    """The reference only ever computes: the inference dtype."""
    return inference_dtype(cfg)


def build_models(cfg, policy_path: str, dist: Dist, open_generator: Callable[[Any, Any], RolloutSource]) -> Models:
    """`open_generator(policy, tokenizer)` makes rank 0's rollout source (harness.rollout.placement)
    from the freshly loaded, not yet sharded policy: a colocated copy, or a worker's first snapshot."""
    warn_if_updates_round_away(cfg)
    device = dist.device if dist.enabled else resolve_device(cfg.model.device)
    load_on = "cpu" if dist.enabled else str(device)  # fully_shard moves each shard to its device
    trust = cfg.model.trust_remote_code
    if dist.is_main:
        policy, tokenizer = load_policy(policy_path, cfg.model.param_dtype, load_on, trust)
        reference, _ = load_policy(policy_path, reference_dtype(cfg), load_on, trust)
    else:  # no weights: rank 0's arrive shard by shard (shard_from_rank0)
        policy, tokenizer = build_on_meta(policy_path, cfg.model.param_dtype, trust)
        reference, _ = build_on_meta(policy_path, reference_dtype(cfg), trust)
    reference.eval().requires_grad_(False)
    generator = None
    if dist.is_main:
        generator = open_generator(policy, tokenizer)
        # a colocated copy was made on the CPU when the policy is about to be sharded
        generator.place(device, torch_dtype(reference_dtype(cfg)))
    if cfg.model.lora is not None:  # after the generator copy, which stays a plain model
        policy = apply_lora(policy, cfg.model.lora)
        del reference
        reference = AdapterDisabled(policy)
    if cfg.model.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False  # training forwards keep no KV cache; the generators ask for one
    if dist.enabled:
        shard_from_rank0(policy, dist, cfg.model.compute_dtype)
        shard_from_rank0(reference, dist, cfg.model.compute_dtype, offload=cfg.model.reference_offload, trainable=False)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable,
        lr=cfg.train.lr,
        eps=cfg.train.adam_eps,
        betas=(cfg.train.adam_beta1, cfg.train.adam_beta2),
        weight_decay=cfg.train.weight_decay,
    )
    log.info(
        "policy: %.1fM parameters (%.2fM trained), master weights %s, compute %s%s%s",
        _millions(policy),
        sum(p.numel() for p in trainable) / 1e6,
        cfg.model.param_dtype,
        cfg.model.compute_dtype,
        f", sharded over {dist.world} ranks" if dist.enabled else "",
        ", gradient checkpointing" if cfg.model.gradient_checkpointing else "",
    )
    return Models(policy, reference, generator, tokenizer, optimizer, device)


def _millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6  # a DTensor counts its global size
