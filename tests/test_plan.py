"""`harness plan`: the 8B memory table against a hand computation, and the refusal before loading."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_run_config
from harness.errors import ConfigError
from harness.plan import GIB, model_shape, not_fitting_message, plan_memory

ROOT = Path(__file__).resolve().parent.parent
LLAMA = ROOT / "sweeps" / "runs" / "llama31_8b.yaml"


def row(plan, prefix: str) -> float:
    [value] = [v for name, v in plan.rows if name.startswith(prefix)]
    return value


def test_8b_plan_matches_a_hand_computation():
    cfg = load_run_config(LLAMA)
    plan = plan_memory(cfg, gpus=8, capacity_gib=140)
    # Hand: Llama-3.1-8B has 8.03e9 parameters (4096 hidden, 14336 MLP, 32 layers, 8 KV heads, 128256 vocab).
    n = 128256 * 4096 * 2 + 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096) + 4096
    assert abs(n - 8.03e9) < 0.01e9
    hand = {
        "policy master weights": n * 4 / 8,      # fp32, sharded over 8
        "gradients": n * 4 / 8,
        "AdamW moments": 2 * n * 4 / 8,
        "reference": n * 2 / 8,                  # bf16, sharded
        "generator copy": n * 2,                 # bf16, whole, on rank 0
        "generator KV cache": 64 * (512 + 2048) * 32 * 2 * 1024 * 2,  # seqs x tokens x layers x K,V x kv dim x bf16
        # checkpointed: each layer's input (4 x 2560 tokens x 4096 x bf16 x 32 layers) + one layer's internals
        "activations": 4 * 2560 * 4096 * 2 * 32 + 4 * 2560 * (2 * (6 * 4096 + 2 * 1024 + 4 * 14336) + 8 * 4096),
        # bf16 logits, their fp32 per-row copies, bf16 grads, fp32 entropy temporaries: 4 x 2560 tokens x vocab
        "logits": 4 * 2560 * 128256 * (2 + 4 + 2 + 4),
    }
    for prefix, expected in hand.items():
        assert row(plan, prefix) == pytest.approx(expected, rel=0.10), prefix
    assert plan.total == pytest.approx(sum(hand.values()) + 2 * GIB + 3 * 2 ** 30, rel=0.10)  # + context, gathers
    assert plan.fits and plan.total < 100 * GIB


def test_worker_placement_moves_the_generator_off_the_trainer_gpus():
    cfg = load_run_config(LLAMA)
    colocated = plan_memory(cfg, gpus=8, capacity_gib=140)
    worker = plan_memory(cfg, gpus=6, capacity_gib=140, generator_gpus=2)
    assert row(worker, "generator (worker") == 0
    assert worker.generator_total == pytest.approx((8.03e9 * 2 + 64 * 2560 * 32 * 2 * 1024 * 2) / 2 + 2 * GIB, rel=0.05)
    assert worker.total < colocated.total and worker.fits


def test_plan_command_prints_the_table_and_says_it_fits():
    done = subprocess.run([sys.executable, "-m", "harness", "plan", str(LLAMA), "--gpus", "8", "--gpu-memory-gib", "140"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "FITS" in done.stdout and "AdamW moments (2 x float32, 1/8)" in done.stdout
    done = subprocess.run([sys.executable, "-m", "harness", "plan", str(LLAMA), "train.parallel=none",
                           "model.gradient_checkpointing=false", "--gpus", "1", "--gpu-memory-gib", "140"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1 and "DOES NOT FIT" in done.stdout


def test_a_config_that_cannot_fit_is_refused_naming_the_keys():
    cfg = load_run_config(LLAMA, ["train.parallel=none"])
    plan = plan_memory(cfg, gpus=1, capacity_gib=80)
    assert not plan.fits
    message = not_fitting_message(plan, str(LLAMA))
    assert "\n" not in message and "train.micro_batch_size" in message and "model.gradient_checkpointing" in message


def test_shapes_come_from_config_json_first(tiny_assets):
    shape = model_shape(str(tiny_assets.policy_dir))
    assert shape.source.endswith("config.json")
    import torch
    from safetensors.torch import load_file
    weights = load_file(str(Path(tiny_assets.policy_dir) / "model.safetensors"))
    assert shape.params == sum(t.numel() for t in weights.values())
    with pytest.raises(ConfigError, match="no config.json"):
        model_shape("/nonexistent/SomeModel-13B")
    assert torch  # (imported for the weights above)
