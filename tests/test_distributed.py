"""Collectives and FSDP memory on 2 real gloo ranks (`torchrun`, tests/helpers_fsdp_worker.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def run_workers(check: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(ROOT / "tests" / "helpers_fsdp_worker.py"),
        check,
        *args,
    ]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def test_every_collective_runs_on_the_group_a_cuda_run_creates():
    """An H200 run died at the end of step 1: `Dist.sum_stats` all-reduced a CPU tensor on the group
    `setup` created for CUDA, a bare "nccl" group, which serves CUDA tensors only ("No backend type
    associated with device type cpu"). A CPU build has no NCCL, but what failed is the group's map from
    device types to backends, and that can be built here: each rank creates the group `setup` asks for
    on CUDA with gloo standing in for NCCL on the same device types (a bare "nccl" becomes "cuda:gloo",
    which raises that same error for a CPU tensor). Every collective the trainer makes through `Dist`
    (sums, broadcasts, gathers, barrier), called with CPU tensors and objects, must then go through."""
    out = run_workers("collectives")
    assert out["spec"] == "cpu:gloo,cuda:gloo"
    assert out["totals"] == {"train/loss": 3.0, "train/kl": 0.5}


def test_no_grad_forwards_leave_no_gathered_fsdp_root(tiny_assets):
    """FSDP2 keeps a root module's parameters (embeddings, final norm, head) gathered after its forward,
    expecting the backward; after a forward without one (the reference's, validation's) nothing frees
    them (+0.49 GiB per rank at 2.8B, ~2 GiB at 8B, on an H200). After the reference's no-grad
    forward and after a validation, every parameter must be a sharded DTensor again."""
    out = run_workers("reshard")
    assert out == {"reference": [], "policy": []}


def random_llama(folder: Path, tokenizer_from: Path) -> int:
    """A ~55M-parameter Llama with random weights and tied embeddings, big enough that a whole copy
    (fp32 policy + bf16 reference, ~330 MiB) stands out of a process's memory; the tiny tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 5e5},
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer_from / name).is_file():
            shutil.copy(tokenizer_from / name, folder / name)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_only_rank_0_loads_the_checkpoint_and_every_rank_gets_its_weights(tiny_assets, tmp_path):
    """Under FSDP, rank 0 reads the checkpoint and the other ranks build the model on the meta device and
    receive their shards: rank 1's host memory grows by its shards (half of 2 ranks), not by a whole fp32
    policy plus bf16 reference as when every rank loaded the checkpoint (~385 GB on 8 ranks at 8B). And
    what it receives is the checkpoint: gathered weights equal the file's tensors (the reference cast to
    bf16), non-persistent buffers (rotary inv_freq, not in a state dict) equal rank 0's and a fresh
    load's, the tied head is still the embedding, and both ranks compute the same logits."""
    params = random_llama(tmp_path / "llama", Path(tiny_assets.policy_dir))
    whole_mib = params * (4 + 2) / 2**20
    ranks = run_workers("rank0_load", str(tmp_path / "llama"))["ranks"]
    print({r["rank"]: round(r["peak_rss_growth_mib"]) for r in ranks}, f"whole copy {whole_mib:.0f} MiB")
    zero, one = ranks
    assert zero["peak_rss_growth_mib"] > whole_mib  # rank 0 does hold the whole checkpoint
    assert one["peak_rss_growth_mib"] < 0.75 * whole_mib  # its half (~0.5) and one tensor in flight
    assert zero["policy_keys"] and zero["reference_keys"] and zero["generator_source_equal"]
    assert zero["policy_equal"] == [] and zero["reference_equal"] == []
    for rank in ranks:
        assert rank["tied"] == [True, True]
        assert rank["buffers_equal_rank0"] and rank["logits_equal_rank0"]
    assert zero["buffers_equal_fresh"]
