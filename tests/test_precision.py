"""fp32 master weights move at the paper's lr 1e-6 under bf16 compute; bf16 masters would not."""

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from harness.train import checkpoint as ckpt
from harness.config import load_run_config
from harness.precision import update_rounds_away, weight_spacing
from harness.tracking import MemoryTracker
from harness.train.trainer import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
ONE_STEP = [
    "method=dpo",
    "train.steps=1",
    "train.lr=1e-6",
    "train.prompts_per_step=8",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=24",
    "validation.prompts=2",
    "validation.every=100",
    "model.compute_dtype=bfloat16",
]


def changed_fraction(tmp_path: Path, param_dtype: str, seed: dict[str, torch.Tensor]) -> float:
    cfg = load_run_config(TINY, [*ONE_STEP, f"model.param_dtype={param_dtype}", f"output_dir={tmp_path / param_dtype}"])
    tracker = MemoryTracker()
    train(cfg, tracker=tracker, progress=False)
    assert tracker.series("train/pairs")[-1][1] > 0  # a real gradient step happened
    last = ckpt.list_checkpoints(tmp_path / param_dtype)[-1][1]
    # The export (model.safetensors) is in the compute dtype; a narrower export's fp32 masters travel in
    # trainer_state.safetensors under `policy.` (what resume reads): compare the masters themselves.
    _, state = ckpt.load_trainer_state(last)
    after = ckpt.weights_with_prefix(state, "policy") or load_file(str(last / "model.safetensors"))
    layers = [k for k in after if ".layers." in k and k.endswith("proj.weight")]  # every entry gets a gradient
    changed = sum(int((after[k].float() != seed[k].to(after[k].dtype).float()).sum()) for k in layers)
    return changed / sum(after[k].numel() for k in layers)


def test_fp32_masters_move_at_lr_1e6_and_bf16_masters_do_not(tiny_assets, tmp_path, caplog):
    seed = load_file(str(Path(tiny_assets.policy_dir) / "model.safetensors"))
    assert changed_fraction(tmp_path, "float32", seed) > 0.9
    with caplog.at_level(logging.WARNING, logger="harness.precision"):
        bf16 = changed_fraction(tmp_path, "bfloat16", seed)
    assert bf16 < 0.05, bf16  # the old `model.dtype: bfloat16` behaviour: the step rounded away
    assert any("round" in record.message and "param_dtype=float32" in record.message for record in caplog.records)


def test_the_rounding_rule():
    assert 1.1e-4 < weight_spacing("bfloat16", 0.02) < 1.3e-4  # the 1.2e-4
    assert update_rounds_away("bfloat16", 1e-6) and not update_rounds_away("float32", 1e-6)
    assert not update_rounds_away("bfloat16", 1e-3)
