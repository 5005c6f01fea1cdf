"""Weight transport to a generator in another process: versioned safetensors snapshots on disk.

The trainer writes each snapshot as a complete `from_pretrained` folder under one run-private
root (by default in /dev/shm, the machine's shared memory):

    <root>/snapshot_000003/   config.json, tokenizer files, model.safetensors, snapshot.json

It is written into a temporary folder and renamed into place, so a reader (or a worker that
restarts after a crash) only ever sees whole snapshots. `snapshot.json` records the snapshot's
serial number, the one thing the worker reports back with every batch of rollouts. Every key
of the state dict is written, `lm_head.weight` included when it is tied to the embeddings.
Floating-point weights are written in the store's `dtype` (the generator's inference dtype, e.g.
bfloat16 when the masters are fp32: half the bytes in /dev/shm); the trainer's own state keeps fp32.
Nothing here is ever unpickled. The two newest snapshots are kept, older ones deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file

from harness.disk import require_free_space, staged_write, tensor_bytes

ROOT_PREFIX = "harness-snapshots-"
_ROOT_RE = re.compile(rf"^{ROOT_PREFIX}(\d+)-")
KEEP = 2


def default_base_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(base: Path) -> None:
    """Delete snapshot roots left behind by runs whose process no longer exists (e.g. kill -9):
    in /dev/shm they would hold memory until the next reboot."""
    for child in base.glob(f"{ROOT_PREFIX}*"):
        match = _ROOT_RE.match(child.name)
        if match and child.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(child, ignore_errors=True)


def cpu_tensors(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Detached CPU copies (floating-point ones cast to `dtype` when given); tensors that share
    storage (tied embeddings) are cloned apart."""
    out, seen = {}, set()
    for name, tensor in state_dict.items():
        value = tensor.detach()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        value = value.to("cpu").contiguous()
        pointer = value.untyped_storage().data_ptr()
        out[name] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return out


class SnapshotStore:
    """The trainer's side: writes numbered snapshots of one model, atomically."""

    def __init__(self, base_dir: str | Path | None, model_config, tokenizer, dtype: torch.dtype | None = None):
        base = Path(base_dir) if base_dir else default_base_dir()
        base.mkdir(parents=True, exist_ok=True)
        remove_orphans(base)
        self.root = Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-", dir=base))
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.dtype = dtype  # None: as given
        self.latest: int | None = None

    def path(self, serial: int) -> Path:
        return self.root / f"snapshot_{serial:06d}"

    def write(self, serial: int, state_dict: Mapping[str, torch.Tensor]) -> Path:
        final = self.path(serial)
        tmp = self.root / f".tmp_{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tensors = cpu_tensors(state_dict, self.dtype)
        what, payload = f"generator snapshot {serial}", tensor_bytes(tensors.values())
        require_free_space(self.root, payload, what, key="rollout.snapshot_dir")
        tmp.mkdir()
        with staged_write(tmp, self.root, what, key="rollout.snapshot_dir", payload_bytes=payload):
            self.model_config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "snapshot.json").write_text(json.dumps({"serial": serial}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.latest = serial
        for old in self.root.glob("snapshot_*"):
            if int(old.name.removeprefix("snapshot_")) <= serial - KEEP:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def read_latest(self) -> dict[str, torch.Tensor]:
        if self.latest is None:
            raise RuntimeError("no snapshot has been written yet")
        return read_snapshot(self.path(self.latest))[1]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def snapshot_serial(path: str | Path) -> int:
    return int(json.loads((Path(path) / "snapshot.json").read_text())["serial"])


def read_snapshot(path: str | Path) -> tuple[int, dict[str, torch.Tensor]]:
    """The worker's side: (serial, state dict) of one snapshot folder."""
    return snapshot_serial(path), load_file(str(Path(path) / "model.safetensors"))
