"""Sharded training (FSDP2 over 2 gloo processes) equals the single-process run, and resumes exactly.

Each FSDP run is a real `torchrun --nproc-per-node 2 -m harness train ...` on the tiny model,
logging to a throw-away MLflow store; the single-process run is the same config in-process.
`sync_every=5` makes a generator (and, for verifiable DPO, reference) sync happen under FSDP.

One process runs each prompt once for all its samples, in length buckets; every FSDP rank runs one
full-sequence forward per micro-batch (the ranks must make the same calls). The two agree to float
rounding (~1e-6 in a log-prob). Adam divides each gradient by its own running scale, so where a
weight's gradient is near zero that rounding can move it by a fraction of the learning rate (2e-5 at
lr 1e-4 was seen on an Intel Xeon, in 1 of ~70k weights). Hence `assert_same_training`: every weight
within one learning-rate step, and each tensor's update the same to 1% of its norm (seen: <0.1%).
A real fault (a rank's data lost, gradients not reduced, a stale reference) moves every update.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.train import checkpoint as ckpt
from harness.config import load_run_config
from harness.errors import HarnessError
from harness.tracking import MemoryTracker
from harness.train.trainer import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
SMALL = [
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=24",
    "validation.prompts=4",
    "validation.every=100",
    "checkpoint.every=100",
    "train.lr=1e-4",
    "sync_every=5",
    "train.micro_batch_size=4",
]
METHODS = {"dpo": ["method=dpo"], "grpo": ["method=grpo", "grpo.importance_sampling=true"]}


def torchrun(tmp_path: Path, overrides: list[str], *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "harness",
        "train",
        str(TINY),
        *overrides,
        "train.parallel=fsdp",
        "--no-progress",
        *flags,
    ]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def mlflow_series(tmp_path: Path, key: str, first: int = 1) -> list[tuple[int, float]]:
    import json
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((tmp_path / "fsdp" / "run.json").read_text())["run_id"]
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key) if m.step >= first)


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.list_checkpoints(output_dir)[-1][1] / "model.safetensors"))


def seed_weights(tiny_assets) -> dict[str, torch.Tensor]:
    return load_file(str(Path(tiny_assets.policy_dir) / "model.safetensors"))


def assert_same_training(a: dict, b: dict, seed: dict, lr: float = 1e-4) -> None:
    """Two runs trained the same weights: elementwise within one lr step, each update equal to 1% of its norm."""
    assert set(a) == set(b)
    for key in a:
        diff = (a[key] - b[key]).float()
        assert diff.abs().max() <= lr, (key, float(diff.abs().max()))
        if key in seed:
            update = (a[key] - seed[key]).float()
            assert diff.norm() <= 1e-2 * update.norm() + 1e-9, (key, float(diff.norm()), float(update.norm()))


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_two_rank_fsdp_run_equals_the_single_process_run(tiny_assets, tmp_path, method):
    # both runs profile step 2 (which must not change what they train)
    overrides = [*SMALL, *METHODS[method], "sync_every=2", "train.steps=3", "train.profile_steps=[2]"]
    overrides.append("train.profile_trace=false")
    single_cfg = load_run_config(TINY, [*overrides, f"output_dir={tmp_path / 'single'}"])
    tracker = MemoryTracker()
    train(single_cfg, tracker=tracker, progress=False)
    torchrun(tmp_path, [*overrides, f"output_dir={tmp_path / 'fsdp'}"])

    single_loss = [v for step, v in tracker.series("train/loss") if step > 0]
    fsdp_loss = [v for _, v in mlflow_series(tmp_path, "train/loss")]
    assert len(fsdp_loss) == 3
    for a, b in zip(single_loss, fsdp_loss):
        assert abs(a - b) <= 1e-4 * max(abs(a), 1e-2), (single_loss, fsdp_loss)
    # gradients are summed over ranks, not averaged: the norm (before clipping) is the same
    single_norm = [v for step, v in tracker.series("train/grad_norm") if step > 0]
    fsdp_norm = [v for _, v in mlflow_series(tmp_path, "train/grad_norm")]
    assert len(fsdp_norm) == len(single_norm) > 0
    assert fsdp_norm == pytest.approx(single_norm, rel=1e-4)
    stale = [v for _, v in mlflow_series(tmp_path, "train/generator_staleness")]
    assert stale == [0, 1, 0]  # the sync after step 2 happened under FSDP
    # the seed's validation: rank 0's generator samples the gathered policy, every rank scores (collective forwards)
    assert mlflow_series(tmp_path, "val/reward", first=0)[0] == (0, tracker.series("val/reward")[0][1])
    assert mlflow_series(tmp_path, "val/entropy", first=0)[0][1] == pytest.approx(
        tracker.series("val/entropy")[0][1], rel=1e-5
    )

    a, b = final_weights(tmp_path / "single"), final_weights(tmp_path / "fsdp")
    seed = seed_weights(tiny_assets)
    assert_same_training(a, b, seed)
    moved = sum(key in seed and not torch.equal(a[key], seed[key]) for key in a)
    assert moved > len(a) // 2  # the comparison is between runs that really trained
    # the consolidated export is a plain from_pretrained folder; resume state is sharded beside it
    last = ckpt.list_checkpoints(tmp_path / "fsdp")[-1][1]
    assert (last / "config.json").is_file() and (last / "sharded").is_dir()
    # each rank wrote its own profile of step 2, with FSDP's all-gathers and gradient reduce in it
    assert sorted(p.name for p in (tmp_path / "single" / "profile").iterdir()) == ["step_2.txt"]
    assert sorted(p.name for p in (tmp_path / "fsdp" / "profile").iterdir()) == ["step_2.rank0.txt", "step_2.rank1.txt"]
    for rank in (0, 1):
        text = (tmp_path / "fsdp" / "profile" / f"step_2.rank{rank}.txt").read_text()
        assert "FSDP::pre_forward" in text and "FSDP::post_backward_reduce" in text
    assert "FSDP::" not in (tmp_path / "single" / "profile" / "step_2.txt").read_text()


def test_fsdp_resume_continues_exactly(tiny_assets, tmp_path):
    common = [*SMALL, "method=dpo", "sync_every=2", "checkpoint.every=2"]
    straight_cfg = load_run_config(TINY, [*common, "train.steps=4", f"output_dir={tmp_path / 'straight'}"])
    train(straight_cfg, tracker=MemoryTracker(), progress=False)  # exactness against one process, too
    torchrun(tmp_path, [*common, "train.steps=2", f"output_dir={tmp_path / 'fsdp'}"])  # "killed" at step 2
    torchrun(tmp_path, [*common, "train.steps=4", f"output_dir={tmp_path / 'fsdp'}"], "--resume")
    assert [step for step, _ in mlflow_series(tmp_path, "train/loss")] == [1, 2, 3, 4]
    assert [v for _, v in mlflow_series(tmp_path, "train/generator_staleness")] == [0, 1, 0, 1]
    assert_same_training(
        final_weights(tmp_path / "straight"), final_weights(tmp_path / "fsdp"), seed_weights(tiny_assets)
    )
    meta, tensors = ckpt.load_trainer_state(ckpt.list_checkpoints(tmp_path / "fsdp")[-1][1])
    assert meta["world_size"] == 2 and "rng.rank1.torch" in tensors  # every rank's RNG state
    # a sharded checkpoint resumes only with the same number of ranks, and says so
    cfg = load_run_config(TINY, [*common, "train.steps=5", f"output_dir={tmp_path / 'fsdp'}"])
    with pytest.raises(HarnessError, match="written by 2 process"):
        train(cfg, tracker=MemoryTracker(), resume=True, progress=False)


def test_a_submitit_trial_with_two_training_gpus_runs_as_torchrun(tiny_assets, tmp_path):
    """The sweep's submitit launcher (local executor here) starts the trial as 2 FSDP ranks."""
    import json as json_
    import yaml

    sweep = {
        "name": "sharded",
        "base": str(TINY),
        "grid": {"method": ["dpo"]},
        "set": {
            "train.steps": 2,
            "train.prompts_per_step": 4,
            "train.samples_per_prompt": 4,
            "train.max_new_tokens": 16,
            "validation.every": 2,
            "validation.prompts": 4,
            "checkpoint.every": 2,
            "rewards.math_verify_workers": 1,
            "eval.suites": [],
        },
        "submitit": {"train_gpus": 2, "timeout_min": 20},
    }
    path = tmp_path / "sharded.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.sweep",
            "sweep",
            str(path),
            "--no-progress",
            "--launcher",
            "submitit",
            "--jobs",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [state] = list(tmp_path.glob("outputs/sharded/**/checkpoints/step_000002/trainer_state.json"))
    assert json_.loads(state.read_text())["world_size"] == 2 and (state.parent / "sharded").is_dir()
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("outputs/sharded/**/*.log"))
    assert "FSDP: 2 processes (gloo)" in logs
