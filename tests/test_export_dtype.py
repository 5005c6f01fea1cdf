"""Snapshots and checkpoint exports are written in the inference dtype (bf16 over fp32 masters), read
back from the safetensors header independently; the trainer state keeps the fp32 masters, so resume
stays exact."""

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from harness.train import checkpoint as ckpt
from harness.config import load_run_config
from harness.tracking import MemoryTracker
from harness.train.trainer import train

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
BF16 = [
    "model.param_dtype=float32",
    "model.compute_dtype=bfloat16",
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=24",
    "validation.prompts=4",
    "validation.every=100",
    "train.lr=1e-3",
    "sync_every=2",
    "checkpoint.every=2",
]


def header_dtypes(path: Path) -> set[str]:
    """The dtypes a safetensors file declares, from its JSON header (8-byte length, then JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_snapshot_store_writes_the_given_dtype(tiny_assets, tmp_path):
    from transformers import AutoConfig, AutoTokenizer
    from harness.rollout.snapshots import SnapshotStore, read_snapshot

    config = AutoConfig.from_pretrained(tiny_assets.policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.policy_dir)
    weights = {"a.weight": torch.randn(4, 4), "b.ids": torch.arange(3)}
    store = SnapshotStore(tmp_path, config, tokenizer, dtype=torch.bfloat16)
    path = store.write(1, weights)
    assert header_dtypes(path / "model.safetensors") == {"BF16", "I64"}
    _, read = read_snapshot(path)
    assert torch.equal(read["a.weight"], weights["a.weight"].to(torch.bfloat16))
    store.close()


def test_export_is_bf16_and_resume_stays_exact(tiny_assets, tmp_path):
    straight = train(
        load_run_config(TINY, [*BF16, "train.steps=4", f"output_dir={tmp_path / 'straight'}"]),
        tracker=MemoryTracker(),
        progress=False,
    )
    split = tmp_path / "split"
    train(
        load_run_config(TINY, [*BF16, "train.steps=2", f"output_dir={split}"]), tracker=MemoryTracker(), progress=False
    )
    resumed = train(
        load_run_config(TINY, [*BF16, "train.steps=4", f"output_dir={split}"]),
        tracker=MemoryTracker(),
        resume=True,
        progress=False,
    )
    final = {}
    for name, result in (("straight", straight), ("resumed", resumed)):
        step, path = ckpt.list_checkpoints(result.output_dir)[-1]
        assert step == 4
        assert header_dtypes(path / "model.safetensors") == {"BF16"}
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())
        assert json.loads((path / "config.json").read_text()).get("dtype", "bfloat16") == "bfloat16"
        _, tensors = ckpt.load_trainer_state(path)
        masters = ckpt.weights_with_prefix(tensors, "policy")
        assert masters and {t.dtype for t in masters.values()} == {torch.float32}
        final[name] = masters
    for key, value in final["straight"].items():
        assert torch.equal(value, final["resumed"][key]), key
