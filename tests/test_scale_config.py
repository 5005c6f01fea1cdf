"""Scale-out settings refuse what cannot work, before any work: old dtype key, launch mismatches,
oversubscribed cores; checkpoints are pruned to `checkpoint.keep_last`; submitit trials become torchrun."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.train import checkpoint as ckpt
from harness.config import load_run_config
from harness.distributed import Dist, check_launch, usable_cores
from harness.errors import ConfigError
from harness.sweep.gpus import torchrun_command
from harness.sweep.launch import split_gpus
from harness.tracking import MemoryTracker
from harness.train.trainer import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
FAST = ["train.prompts_per_step=4", "train.samples_per_prompt=4", "train.max_new_tokens=24", "validation.prompts=4"]


def test_old_model_dtype_is_refused_naming_the_new_keys(tmp_path):
    with pytest.raises(ConfigError, match="model.param_dtype.*model.compute_dtype"):
        load_run_config(TINY, ["model.dtype=bfloat16"])
    done = subprocess.run(
        [sys.executable, "-m", "harness", "train", str(TINY), "model.dtype=float32"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "model.param_dtype" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing created


def test_reference_offload_needs_fsdp():
    with pytest.raises(ConfigError, match="reference_offload.*train.parallel=fsdp"):
        load_run_config(TINY, ["model.reference_offload=true"])
    assert load_run_config(TINY, ["model.reference_offload=true", "train.parallel=fsdp"]).model.reference_offload


def test_launch_mismatches_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="2 processes.*train.parallel=fsdp"):
        check_launch(load_run_config(TINY, []))
    too_many = usable_cores()  # x 2 processes > cores
    with pytest.raises(ConfigError, match="model.cpu_threads.*more than"):
        check_launch(
            load_run_config(TINY, ["train.parallel=fsdp", "model.device=cpu", f"model.cpu_threads={too_many}"])
        )
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            check_launch(load_run_config(TINY, ["train.parallel=fsdp", "model.device=cuda"]))
    check_launch(load_run_config(TINY, ["train.parallel=fsdp", "model.device=cpu", "model.cpu_threads=1"]))


def test_rank_shares_cover_every_item_once_with_equal_chunk_counts():
    items = list(range(7))
    per_rank = [Dist(rank=r, world=3, enabled=True).chunks(items, 2) for r in range(3)]
    assert len({len(chunks) for chunks in per_rank}) == 1  # every rank runs the same number of forwards
    real = sorted(i for chunks in per_rank for chunk, is_real in chunks if is_real for i in chunk)
    assert real == items
    assert Dist().chunks(items, 3) == [([0, 1, 2], True), ([3, 4, 5], True), ([6], True)]


def test_keep_last_prunes_old_checkpoints_but_keeps_the_selected_one(tiny_assets, tmp_path):
    cfg = load_run_config(
        TINY,
        [
            *FAST,
            "train.steps=5",
            "checkpoint.every=1",
            "validation.every=1",
            "checkpoint.keep_last=2",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    train(cfg, tracker=MemoryTracker(), progress=False)
    listed = json.loads((tmp_path / "run" / "checkpoints.json").read_text())
    on_disk = [step for step, _ in ckpt.list_checkpoints(tmp_path / "run")]
    assert [c["step"] for c in listed] == on_disk
    assert {4, 5} <= set(on_disk) and len(on_disk) <= 3
    best = max(listed, key=lambda c: (c["val/len_norm_reward"], -c["step"]))
    assert best["step"] in on_disk


def test_submitit_trials_run_as_torchrun_over_the_training_gpus():
    command = [sys.executable, "-m", "harness.cli", "train", "base.yaml", "method=dpo", "--resume", "--tag", "a=b"]
    wrapped = torchrun_command(command, 6)
    assert wrapped[:8] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "6",
        "-m",
        "harness.cli",
    ]
    assert wrapped[8:] == ["train", "base.yaml", "train.parallel=fsdp", "method=dpo", "--resume", "--tag", "a=b"]
    assert torchrun_command(command, 1) == command
    params = {"gpus_per_node": 8, "train_gpus": 6, "generator_gpus": 2, "timeout_min": 10}
    assert split_gpus(params, "sweep") == (6, 2) and "train_gpus" not in params  # submitit never sees them
    with pytest.raises(ConfigError, match="more than `gpus_per_node`"):
        split_gpus({"gpus_per_node": 4, "train_gpus": 4, "generator_gpus": 2}, "sweep")
    from harness.sweep.spec import load_sweep  # the shipped full grid names the paper's split

    sweep = load_sweep(ROOT / "sweeps" / "full_grid.yaml")
    assert split_gpus(dict(sweep.spec.submitit), "full_grid") == (6, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: resume must restore the CUDA RNG states")
def test_cuda_resume_continues_exactly(tiny_assets, tmp_path):
    common = [*FAST, "model.device=cuda", "sync_every=2", "train.lr=1e-3", "checkpoint.every=3", "validation.every=100"]
    straight = train(
        load_run_config(TINY, [*common, "train.steps=5", f"output_dir={tmp_path / 'a'}"]),
        tracker=MemoryTracker(),
        progress=False,
    )
    train(
        load_run_config(TINY, [*common, "train.steps=3", f"output_dir={tmp_path / 'b'}"]),
        tracker=MemoryTracker(),
        progress=False,
    )
    tracker = MemoryTracker()
    resumed = train(
        load_run_config(TINY, [*common, "train.steps=5", f"output_dir={tmp_path / 'b'}"]),
        tracker=tracker,
        resume=True,
        progress=False,
    )
    meta, tensors = ckpt.load_trainer_state(ckpt.list_checkpoints(resumed.output_dir)[0][1])
    assert "rng.cuda.0" in tensors
    from safetensors.torch import load_file

    a = load_file(str(ckpt.list_checkpoints(straight.output_dir)[-1][1] / "model.safetensors"))
    b = load_file(str(ckpt.list_checkpoints(resumed.output_dir)[-1][1] / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
