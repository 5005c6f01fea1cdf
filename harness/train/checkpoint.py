"""Atomic checkpoints: a `from_pretrained`-loadable model folder plus the trainer state.

Layout under `<output_dir>/checkpoints/step_<N>/`:
- the model and tokenizer, written by `save_pretrained` (safetensors) in the export dtype (the
  inference dtype, e.g. bfloat16 over fp32 masters: what evaluation and the generator load),
- `trainer_state.safetensors`: optimizer moments, every rank's RNG states (CPU, and CUDA when
  present), the fp32 master weights of a one-process run whose export is narrower (`policy.*`,
  so resume is exact), and the generator/reference weights when they are stale snapshots that cannot be
  rebuilt from the policy,
- `trainer_state.json`: step, versions, last sync steps, optimizer hyperparameters,
- under FSDP, `sharded/`: the fp32 master weights and Adam moments as each rank holds them,
  written by `torch.distributed.checkpoint` (resume reads these); `model.safetensors` is then
  the consolidated export that evaluation and the generator read.
Everything is written into a temporary folder and renamed into place, so a kill at any moment
leaves either the whole checkpoint or none; the free space is checked first, and a write that
fails anyway (a full disk) removes its temporary folder (harness/disk.py). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def step_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step_{step:06d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name.startswith("step_") and (child / "trainer_state.json").is_file():
            found.append((int(child.name.removeprefix("step_")), child))
    return sorted(found)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors = {}
    for param_id, slots in state["state"].items():
        for slot, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{param_id}.{slot}"] = tensor.detach().cpu().contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith("optim."):
            _, param_id, slot = key.split(".", 2)
            state.setdefault(int(param_id), {})[slot] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random states: the CPU generator and, when present, every CUDA device's."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{index}"] = state
    return states


def _rng_key(rank: int, name: str) -> str:
    return f"rng.{name}" if rank == 0 else f"rng.rank{rank}.{name}"


def restore_rng(tensors: dict[str, torch.Tensor], rank: int = 0) -> None:
    torch.set_rng_state(tensors[_rng_key(rank, "torch")])
    if torch.cuda.is_available():
        states = [
            tensors[_rng_key(rank, f"cuda.{i}")]
            for i in range(torch.cuda.device_count())
            if _rng_key(rank, f"cuda.{i}") in tensors
        ]
        if states:
            torch.cuda.set_rng_state_all(states)


def staging_dir(output_dir: Path, step: int) -> Path:
    """An empty temporary folder beside the final one (renamed into place by `commit_checkpoint`)."""
    final = step_dir(output_dir, step)
    tmp = final.with_name(f".tmp_{final.name}_{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_sharded(tmp: Path, model, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shard of the weights and Adam moments (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / "sharded"))


def read_sharded(checkpoint: Path, model, optimizer: torch.optim.Optimizer) -> None:
    """Load this rank's shard of the weights and Adam moments back (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(checkpoint / "sharded"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def commit_checkpoint(
    tmp: Path,
    output_dir: Path,
    step: int,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    extra_weights: dict[str, dict[str, torch.Tensor]],
    rng_states: list[dict[str, torch.Tensor]],
    model_weights: dict[str, torch.Tensor] | None = None,
    export_dtype: torch.dtype | None = None,
) -> Path:
    """Rank 0: the model export, tokenizer and trainer state into `tmp`, then rename into place.

    `optimizer` None means its state is in `sharded/`; `model_weights` is the consolidated state
    dict of a sharded model; `rng_states` holds one entry per rank; `export_dtype` (None: as held)
    is the dtype of the exported model's floating-point weights.
    """
    final = step_dir(output_dir, step)
    export_model(tmp, model, model_weights, export_dtype)
    tokenizer.save_pretrained(tmp)
    tensors, optim_meta = optimizer_tensors(optimizer) if optimizer is not None else ({}, {"sharded": True})
    for rank, states in enumerate(rng_states):
        tensors.update({_rng_key(rank, name): value for name, value in states.items()})
    for prefix, weights in extra_weights.items():
        for name, tensor in weights.items():
            tensors[f"{prefix}.{name}"] = tensor.detach().cpu().contiguous()
    # Tied embeddings share storage; safetensors refuses aliased tensors, so clone them apart.
    save_file({k: v.clone() for k, v in tensors.items()}, str(tmp / "trainer_state.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps({**meta, "step": step, **optim_meta}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def export_model(folder: Path, model, weights: dict[str, torch.Tensor] | None, dtype: torch.dtype | None) -> None:
    """`save_pretrained` of the model (or of `weights`, its consolidated state dict), floating-point
    weights cast to `dtype`; config.json names the dtype written."""
    if weights is None and dtype is None:
        model.save_pretrained(folder, safe_serialization=True)
        return
    weights = weights if weights is not None else model.state_dict()
    weights = {
        k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
        for k, v in weights.items()
        if k not in tied_keys(model)
    }
    model.save_pretrained(folder, safe_serialization=True, state_dict=weights)
    if dtype is not None:
        config = folder / "config.json"
        data = json.loads(config.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in data:
                data[key] = str(dtype).removeprefix("torch.")
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def tied_keys(model) -> set[str]:
    """Weights that alias another one (a tied LM head): `save_pretrained` of a plain model omits them."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied if isinstance(tied, (dict, list, set, tuple)) else [])


def payload_bytes(
    model,
    optimizer: torch.optim.Optimizer | None,
    extra_weights: dict[str, dict[str, torch.Tensor]],
    export_dtype: torch.dtype | None,
    sharded: bool,
) -> int:
    """The bytes of tensors a checkpoint writes: the export, Adam moments, the extra state dicts and,
    under FSDP, the sharded masters (a DTensor's numel is the whole tensor's, so this is the job's total)."""

    def size(p: torch.Tensor, dtype: torch.dtype | None) -> int:
        item = (
            torch.empty((), dtype=dtype).element_size()
            if dtype is not None and p.is_floating_point()
            else p.element_size()
        )
        return p.numel() * item

    params = list(model.parameters())
    total = sum(size(p, export_dtype) for p in params)
    if optimizer is not None:
        total += sum(
            t.numel() * t.element_size()
            for slots in optimizer.state.values()
            for t in slots.values()
            if torch.is_tensor(t)
        )
    if sharded:
        total += sum(size(p, None) for p in params)
    return total + sum(size(t, None) for weights in extra_weights.values() for t in weights.values())


def prune_checkpoints(checkpoints: list, keep_last: int | None, keep: set[int] = frozenset()) -> list:
    """Delete all but the newest `keep_last` checkpoint folders (and the steps in `keep`) of the
    listing's entries (harness.selection.CheckpointEntry); return the rest."""
    if keep_last is None:
        return checkpoints
    newest = {entry.step for entry in sorted(checkpoints, key=lambda e: e.step)[-keep_last:]}
    kept = []
    for entry in checkpoints:
        if entry.step in newest or entry.step in keep:
            kept.append(entry)
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
    return kept


def load_trainer_state(checkpoint: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta = json.loads((checkpoint / "trainer_state.json").read_text())
    tensors = load_file(str(checkpoint / "trainer_state.safetensors"))
    return meta, tensors


def weights_with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    start = prefix + "."
    found = {key[len(start) :]: value for key, value in tensors.items() if key.startswith(start)}
    return found or None
