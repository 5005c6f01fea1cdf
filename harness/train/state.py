"""Saving and resuming the training loop's state, for one process or for FSDP ranks.

    save(output_dir, cfg, state, models, val, tracker, dist)
    state = restore(output_dir, cfg, models, dist)

Under FSDP every rank writes its shard (`torch.distributed.checkpoint`) and rank 0 writes the
consolidated `model.safetensors` export, the tokenizer, every rank's RNG states and the stale
generator/reference snapshots. `checkpoint.keep_last` bounds how many checkpoint folders stay on
disk (the one `eval.rule` would select so far is always kept).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from harness.train import checkpoint as ckpt
from harness.config import INF, RunConfig
from harness.distributed import Dist, copy_weights, full_state_dict, load_full_state_dict
from harness.disk import DiskSpaceError, require_free_space, staged_write
from harness.errors import HarnessError
from harness.train.lora import ADAPTER_PREFIX, adapter_state_dict, is_lora, load_adapter_state
from harness.precision import inference_dtype, torch_dtype
from harness.rollout.schedule import due
from harness.selection import LISTING_FILE, CheckpointEntry, read_listing, select_from_listing, write_listing

log = logging.getLogger("harness.train")
MASTER_PREFIX = "policy"  # trainer_state.safetensors: a one-process run's master weights, when exported narrower


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    last_sync: int = 0  # step at which the generator last received the trainer's weights
    last_ref_sync: int = 0
    checkpoints: list[CheckpointEntry] = field(default_factory=list)


def validation_due(cfg: RunConfig, step: int) -> bool:
    """Validation runs every `validation.every` steps and at the last step."""
    return step % cfg.validation.every == 0 or step == cfg.train.steps


def save(
    output_dir: Path, cfg: RunConfig, state: LoopState, models, val: dict[str, float], tracker, dist: Dist
) -> None:
    """Every rank calls this (the gathers and the sharded write are collective)."""
    # A snapshot the next step will not overwrite cannot be rebuilt from the policy on resume,
    # so it travels with the checkpoint; an offline generator or fixed reference is the seed.
    extra = {}
    if cfg.sync_every != INF and not due(state.step, cfg.sync_every) and dist.is_main:
        extra["generator"] = models.generator.state_dict()
    if cfg.ref_sync_every != INF and not due(state.step, cfg.ref_sync_every):
        extra["reference"] = full_state_dict(models.reference, dist)
    lora = is_lora(models.policy)
    weights = full_state_dict(models.policy, dist) if dist.enabled or lora else None
    if lora:
        extra[ADAPTER_PREFIX] = adapter_state_dict(models.policy)
    export_dtype = torch_dtype(inference_dtype(cfg))  # what evaluation and the generator load
    if not (dist.enabled or lora) and export_dtype != torch_dtype(cfg.model.param_dtype):
        extra[MASTER_PREFIX] = models.policy.state_dict()  # the export is narrower: resume reads these
    rng_states = dist.gather(ckpt.rng_state())
    what, folder = f"checkpoint step {state.step}", output_dir / "checkpoints"
    payload = ckpt.payload_bytes(models.policy, models.optimizer, extra, export_dtype, sharded=dist.enabled)
    refusal = None
    if dist.is_main:  # before anything is written; every rank stops on rank 0's answer
        try:
            require_free_space(folder, payload, what, key="output_dir")
        except DiskSpaceError as exc:
            refusal = str(exc)
    refusal = dist.broadcast(refusal)
    if refusal:
        raise DiskSpaceError(refusal)
    tmp = dist.broadcast(ckpt.staging_dir(output_dir, state.step) if dist.is_main else None)
    with staged_write(tmp, folder, what, key="output_dir", payload_bytes=payload):  # a full disk: tmp removed
        if dist.enabled:
            ckpt.write_sharded(tmp, models.policy, models.optimizer)
        if dist.is_main:
            meta = {
                "last_sync": state.last_sync,
                "last_ref_sync": state.last_ref_sync,
                "generator_version": models.generator.version,
                "run_id": tracker.run_id,
                "world_size": dist.world,
            }
            exported = models.policy.get_base_model() if lora else models.policy  # merged weights, plain names
            path = ckpt.commit_checkpoint(
                tmp,
                output_dir,
                state.step,
                exported,
                models.tokenizer,
                None if dist.enabled else models.optimizer,
                meta,
                extra,
                rng_states,
                weights,
                export_dtype=export_dtype,
            )
    if dist.is_main:
        state.checkpoints = [c for c in state.checkpoints if c.step != state.step]
        # Only a step that was validated carries metrics: `val` is the last validation, which belongs
        # to an earlier step when this one was not validated (selection must never pick it by them).
        validated = validation_due(cfg, state.step)
        state.checkpoints.append(CheckpointEntry(state.step, str(path), validated, dict(val) if validated else {}))
        state.checkpoints = ckpt.prune_checkpoints(
            state.checkpoints, cfg.checkpoint.keep_last, keep=_selected_so_far(state.checkpoints, cfg.eval.rule)
        )
        tracker.log_text(write_listing(output_dir, state.checkpoints), LISTING_FILE)
        log.info("saved checkpoint step %d -> %s", state.step, path)
    dist.barrier()


def _selected_so_far(checkpoints: list[CheckpointEntry], rule: str) -> set[int]:
    """The step `eval.rule` picks among the checkpoints' own validation numbers (kept by pruning)."""
    try:
        step, _ = select_from_listing(checkpoints, rule)
    except HarnessError:  # no validation metric at any checkpoint yet: nothing to protect
        return set()
    return {step}


def restore(output_dir: Path, cfg: RunConfig, models, dist: Dist) -> LoopState:
    """Every rank calls this. The generator and reference were just loaded from the seed."""
    found = ckpt.list_checkpoints(output_dir)
    if not found:
        log.info("--resume: no checkpoint under %s yet, starting from step 0", output_dir)
        return LoopState()
    step, path = found[-1]
    meta, tensors = ckpt.load_trainer_state(path)
    saved_world = meta.get("world_size", 1)
    if saved_world != dist.world or bool(meta.get("sharded")) != dist.enabled:
        raise HarnessError(
            f"--resume: {path} was written by {saved_world} process(es) "
            f"({'FSDP' if meta.get('sharded') else 'no sharding'}), this run has {dist.world} "
            f"({'FSDP' if dist.enabled else 'no sharding'}); resume with the same `train.parallel` and "
            f"--nproc-per-node, or evaluate its model.safetensors instead."
        )
    if dist.enabled:
        ckpt.read_sharded(path, models.policy, models.optimizer)
    else:
        from safetensors.torch import load_file

        adapter = ckpt.weights_with_prefix(tensors, ADAPTER_PREFIX)
        if is_lora(models.policy):  # the base is frozen: only the adapters come back
            load_adapter_state(models.policy, adapter or {})
        else:  # the fp32 masters when the export is narrower, else the export itself
            masters = ckpt.weights_with_prefix(tensors, MASTER_PREFIX)
            models.policy.load_state_dict(masters or load_file(str(path / "model.safetensors")), strict=False)
        ckpt.restore_optimizer(models.optimizer, tensors, meta)
    ckpt.restore_rng(tensors, dist.rank)
    # The generator: its stale snapshot, else the policy (it syncs at this step anyway), else,
    # offline, it still holds the seed it was built from.
    stale_gen = ckpt.weights_with_prefix(tensors, "generator")
    if stale_gen is None and cfg.sync_every != INF:
        stale_gen = full_state_dict(models.policy, dist)
    if dist.is_main:
        if stale_gen is not None:
            models.generator.load_weights(stale_gen)
        models.generator.version = meta.get("generator_version", models.generator.version)
    stale_ref = ckpt.weights_with_prefix(tensors, "reference")
    if stale_ref is not None:
        load_full_state_dict(models.reference, stale_ref, dist)
    elif cfg.ref_sync_every != INF:
        copy_weights(models.reference, models.policy, dist)
    listing = output_dir / LISTING_FILE
    checkpoints = read_listing(listing) if listing.is_file() else []
    log.info("resumed from %s (step %d)", path, step)
    return LoopState(
        step=step,
        last_sync=meta["last_sync"],
        last_ref_sync=meta["last_ref_sync"],
        checkpoints=[c for c in checkpoints if c.step <= step],
    )
