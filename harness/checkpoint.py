"""Atomic checkpoints: a `from_pretrained`-loadable model folder plus the trainer state.

Layout under `<output_dir>/checkpoints/step_<N>/`:
- the model and tokenizer, written by `save_pretrained` (safetensors),
- `trainer_state.safetensors`: optimizer moments, RNG state, and the generator/reference
  weights when they are stale snapshots that cannot be rebuilt from the policy,
- `trainer_state.json`: step, versions, last sync steps, optimizer hyperparameters.
Everything is written into a temporary folder and renamed into place, so a kill at any moment
leaves either the whole checkpoint or none. Nothing is ever unpickled.
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


def save_checkpoint(output_dir: Path, step: int, model, tokenizer, optimizer: torch.optim.Optimizer,
                    meta: dict[str, Any], extra_weights: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write step N atomically; `extra_weights` maps a prefix ('generator') to a state dict."""
    final = step_dir(output_dir, step)
    tmp = final.with_name(f".tmp_{final.name}_{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tensors, optim_meta = optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
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


def load_trainer_state(checkpoint: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta = json.loads((checkpoint / "trainer_state.json").read_text())
    tensors = load_file(str(checkpoint / "trainer_state.safetensors"))
    return meta, tensors


def weights_with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    start = prefix + "."
    found = {key[len(start):]: value for key, value in tensors.items() if key.startswith(start)}
    return found or None
