"""`harness plan`: checked against memory measured on a GPU, the 8B table against a hand computation,
and the refusal before loading."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_run_config
from harness.errors import ConfigError
from harness.train.model_shape import Shape, model_shape
from harness.train.plan import GIB, plan_memory
from harness.train.plan_report import not_fitting_message

ROOT = Path(__file__).resolve().parent.parent
LLAMA = ROOT / "sweeps" / "runs" / "llama31_8b.yaml"

# Measured on one H200 on 2026-12-04 (/work/shared/GPU.md, "What one H200 measured"), torch 2.11:
# LoRA r16 DPO on a random Llama with the Llama-3 vocabulary, one process, colocated hf generator,
# 256 rollouts (32 prompts x 8) of 256 new tokens on the tiny math prompts (longest 31 tokens with the
# chat template), fp32 master weights, bf16 compute. The shape is the one benchmarks/gpu_check.py's
# random Llama had (hidden 2048, intermediate 8192, 16 heads, 8 KV heads) with 36 layers: 2.79B. The
# run's micro-batch size was not recorded: 4 (the 8B config's) and 8 are both checked.
MEASURED_2_8B = {"peak_reserved_gib": 40.9, "peak_allocated_gib": 26.8, "old_plan_gib": 31.2}
SHAPE_2_8B = Shape(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=8,
    vocab_size=128256,
    head_dim=128,
    source="gpu_check random Llama",
)
# Same machine: the training logits' forward of 4 x (512 + 2048) tokens at vocabulary 128,256 peaked at
# 20.7 GiB (the old plan's row said 14.7).
MEASURED_LOGITS = {"micro_batch": 4, "tokens": 512 + 2048, "vocab": 128256, "forward_peak_gib": 20.7}
# The hand computations below are of the colocated hf generator (the shipped config runs vLLM on GPUs of its own).
COLOCATED_HF = ["rollout.backend=hf", "rollout.placement=colocated"]


def lora_2_8b(micro_batch: int):
    return load_run_config(
        ROOT / "sweeps/runs/tiny.yaml",
        [
            "method=dpo",
            "model.lora={rank: 16}",
            "ref_sync_every=inf",
            "model.param_dtype=float32",
            "model.compute_dtype=bfloat16",
            f"train.micro_batch_size={micro_batch}",
            "rollout.batch_size=256",
            "train.prompts_per_step=32",
            "train.samples_per_prompt=8",
            "train.max_new_tokens=256",
            "validation.prompts=8",
        ],
    )


@pytest.mark.parametrize("micro_batch", [4, 8])
def test_plan_is_within_15_percent_of_the_measured_2_8b_lora_run(micro_batch):
    assert SHAPE_2_8B.params == pytest.approx(2.79e9, rel=0.01)
    plan = plan_memory(lora_2_8b(micro_batch), gpus=1, capacity_gib=140, policy=SHAPE_2_8B, prompt_tokens=31)
    reserved, allocated = MEASURED_2_8B["peak_reserved_gib"], MEASURED_2_8B["peak_allocated_gib"]
    assert plan.total / GIB == pytest.approx(reserved, rel=0.15)
    assert plan.allocated / GIB == pytest.approx(allocated, rel=0.15)
    assert abs(plan.total / GIB - reserved) < abs(MEASURED_2_8B["old_plan_gib"] - reserved)
    assert plan.peak_phase == "train"


def test_logits_row_is_the_measured_forward_peak():
    cfg = load_run_config(LLAMA, COLOCATED_HF)
    plan = plan_memory(cfg, gpus=8, capacity_gib=140)
    assert cfg.train.micro_batch_size == MEASURED_LOGITS["micro_batch"]
    assert row(plan, "logits") / GIB == pytest.approx(MEASURED_LOGITS["forward_peak_gib"], rel=0.02)


def row(plan, prefix: str, phase: str | None = None) -> float:
    [value] = [v for where, name, v in plan.rows if name.startswith(prefix) and phase in (None, where)]
    return value


def test_phases_are_not_added_up():
    plan = plan_memory(load_run_config(LLAMA, COLOCATED_HF), gpus=8, capacity_gib=140)
    resident = sum(v for where, _, v in plan.rows if where == "resident")
    every_row = sum(v for _, _, v in plan.rows)
    validation = sum(v for where, _, v in plan.rows if where == "validate")
    assert plan.total == max(plan.phase_total(p) for p in ("generate", "train", "validate"))
    assert plan.total < every_row - validation + 1  # validation's temporaries never add to training's
    assert plan.phase_total("validate") == pytest.approx(resident + validation)


def test_8b_plan_matches_a_hand_computation():
    cfg = load_run_config(LLAMA, COLOCATED_HF)
    plan = plan_memory(cfg, gpus=8, capacity_gib=140)
    # Hand: Llama-3.1-8B has 8.03e9 parameters (4096 hidden, 14336 MLP, 32 layers, 8 KV heads, 128256 vocab).
    n = 128256 * 4096 * 2 + 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096) + 4096
    assert abs(n - 8.03e9) < 0.01e9
    hand = {
        "policy master weights": n * 4 / 8,  # fp32, sharded over 8
        "gradients": n * 4 / 8,
        "AdamW moments": 2 * n * 4 / 8,
        "reference (": n * 2 / 8,  # bf16, sharded
        "generator copy": n * 2,  # bf16, whole, on rank 0
        "generator KV cache": 64 * (512 + 2048) * 32 * 2 * 1024 * 2,  # seqs x tokens x layers x K,V x kv dim x bf16
        # checkpointed: each layer's input (4 x 2560 tokens x 4096 x bf16 x 32 layers) + one layer's internals
        "activations": 4 * 2560 * 4096 * 2 * 32 + 4 * 2560 * (2 * (6 * 4096 + 2 * 1024 + 4 * 14336) + 8 * 4096),
        # validation: 64 sampled rows (rollout.batch_size) in bf16 under FSDP, then 4 rows' entropy pass
        "validation KV cache": 64 * 2560 * 32 * 2 * 1024 * 2,
    }
    for prefix, expected in hand.items():
        assert row(plan, prefix) == pytest.approx(expected, rel=0.10), prefix
    # the reference's root (embeddings + head, ~2 GiB in bf16) reshards after its forward now: no row
    assert not [name for _, name, _ in plan.rows if name.startswith("reference root")]
    assert plan.peak_phase == "train"
    assert plan.fits and plan.total < 100 * GIB


def test_worker_placement_moves_the_generator_off_the_trainer_gpus():
    cfg = load_run_config(LLAMA, COLOCATED_HF)
    colocated = plan_memory(cfg, gpus=8, capacity_gib=140)
    worker = plan_memory(cfg, gpus=6, capacity_gib=140, generator_gpus=2)
    assert row(worker, "generator (worker") == 0
    # hf cannot split a model over GPUs: one whole bf16 copy, its KV cache and a CUDA context
    assert worker.generator_total == pytest.approx(8.03e9 * 2 + 64 * 2560 * 32 * 2 * 1024 * 2 + 2 * GIB, rel=0.05)
    assert worker.total < colocated.total and worker.fits
    # vLLM reserves its share of each generator GPU up front
    vllm = load_run_config(LLAMA)  # the shipped default: vLLM at 0.85
    worker = plan_memory(vllm, gpus=6, capacity_gib=140, generator_gpus=2)
    assert worker.generator_total == pytest.approx(0.85 * 140 * GIB + 0.5 * GIB)
    colocated = plan_memory(vllm, gpus=8, capacity_gib=140)
    assert row(colocated, "vLLM engine") == pytest.approx(0.85 * 140 * GIB) and not colocated.fits


def test_host_memory_rows_count_one_whole_model_on_rank_0_only():
    """Only rank 0 loads the checkpoint on the CPU; other ranks receive their shards (it was 8 copies, ~390 GiB)."""
    plan = plan_memory(load_run_config(LLAMA, COLOCATED_HF), gpus=8, capacity_gib=140)
    n = 8.03e9
    # rank 0: fp32 policy + bf16 reference, and the fp32 copy it makes for the colocated generator
    assert plan.host_total == pytest.approx(n * (4 + 2) + n * 4, rel=0.01)
    assert plan.host_total / GIB == pytest.approx(74.8, abs=0.3)
    # the shipped split (6 ranks, a vLLM worker on 2 GPUs): rank 0's load and 2 bf16 snapshots in /dev/shm
    plan = plan_memory(load_run_config(LLAMA, ["task_mix=verifiable"]), gpus=6, capacity_gib=140, generator_gpus=2)
    assert plan.host_total == pytest.approx(n * (4 + 2) + 2 * n * 2, rel=0.01)
    # an offloaded reference lives on the host in shards: the whole bf16 reference, over the ranks
    offloaded = plan_memory(
        load_run_config(LLAMA, [*COLOCATED_HF, "model.reference_offload=true"]), gpus=8, capacity_gib=140
    )
    assert offloaded.host_total - plan_memory(
        load_run_config(LLAMA, COLOCATED_HF), gpus=8, capacity_gib=140
    ).host_total == pytest.approx(n * 2, rel=0.01)


def test_max_prompt_tokens_replaces_the_default_allowance():
    cfg = load_run_config(LLAMA, [*COLOCATED_HF, "data.max_prompt_tokens=256"])
    plan = plan_memory(cfg, gpus=8, capacity_gib=140)
    assert row(plan, "generator KV cache") == pytest.approx(64 * (256 + 2048) * 32 * 2 * 1024 * 2, rel=0.01)


def test_plan_command_prints_the_table_and_says_it_fits():
    done = subprocess.run(
        [sys.executable, "-m", "harness", "plan", str(LLAMA), *COLOCATED_HF, "--gpus", "8", "--gpu-memory-gib", "140"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "FITS" in done.stdout and "AdamW moments (2 x float32, 1/8)" in done.stdout
    assert "<- peak" in done.stdout and "host memory" in done.stdout
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "plan",
            str(LLAMA),
            *COLOCATED_HF,
            "train.parallel=none",
            "model.gradient_checkpointing=false",
            "--gpus",
            "1",
            "--gpu-memory-gib",
            "140",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1 and "DOES NOT FIT" in done.stdout


def test_a_config_that_cannot_fit_is_refused_naming_the_keys():
    cfg = load_run_config(LLAMA, [*COLOCATED_HF, "train.parallel=none"])
    plan = plan_memory(cfg, gpus=1, capacity_gib=80)
    assert not plan.fits
    message = not_fitting_message(plan, str(LLAMA))
    assert "\n" not in message and "train.micro_batch_size" in message and "model.gradient_checkpointing" in message


def test_shapes_come_from_config_json_first(tiny_assets):
    shape = model_shape(str(tiny_assets.policy_dir))
    assert shape.source.endswith("config.json")
    from safetensors.torch import load_file

    weights = load_file(str(Path(tiny_assets.policy_dir) / "model.safetensors"))
    assert shape.params == sum(t.numel() for t in weights.values())
    with pytest.raises(ConfigError, match="no config.json"):
        model_shape("/nonexistent/SomeModel-13B")


def test_the_shipped_8b_config_plans_the_6_plus_2_split_it_launches():
    """sweeps/runs/llama31_8b.yaml (and so the full grid): 6 FSDP ranks, vLLM on 2 GPUs of its own."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "plan",
            str(LLAMA),
            "--gpus",
            "6",
            "--generator-gpus",
            "2",
            "--gpu-memory-gib",
            "140",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "generator worker (vllm) on 2 GPU(s)" in done.stdout and "1/6)" in done.stdout
    assert "vLLM reservation (gpu_memory_utilization 0.85 x 140 GiB" in done.stdout
    assert "generator (worker: on its own GPUs)" in done.stdout and "FITS" in done.stdout
