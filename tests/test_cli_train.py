"""`harness train` as a user runs it: a real subprocess, a real MLflow SQLite store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # `harness train` subprocesses

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "train.steps=6",
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=40",
    "validation.every=3",
    "validation.prompts=8",
    "checkpoint.every=3",
]


def harness(*args, tmp_path, check=True):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("MLFLOW_RUN_ID", None)
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_logs_a_complete_mlflow_run_with_staleness_cycling(tiny_assets, tmp_path):
    out = harness(
        "train",
        str(ROOT / "sweeps/runs/tiny.yaml"),
        "method=dpo",
        "sync_every=5",
        *SMALL,
        f"output_dir={tmp_path / 'run'}",
        "--no-progress",
        tmp_path=tmp_path,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    staleness = sorted(client.get_metric_history(run.info.run_id, "train/generator_staleness"), key=lambda m: m.step)
    assert [int(m.value) for m in staleness] == [0, 1, 2, 3, 4, 0]
    assert [m.step for m in staleness] == [1, 2, 3, 4, 5, 6]
    params = run.data.params
    assert (params["method"], params["sync_every"], params["ref_sync_every"], params["task_mix"], params["seed"]) == (
        "dpo",
        "5",
        "5",
        "verifiable",
        "0",
    )
    assert params["train.lr"] == "2e-05"
    metrics = set(run.data.metrics)
    assert {"val/reward", "val/len_norm_reward", "time/generate_s", "train/pairs"} <= metrics
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/reward")]
    assert sorted(val_steps) == [0, 3, 6]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints.json"} <= artifacts
    listed = json.loads((tmp_path / "run" / "checkpoints.json").read_text())
    assert [c["step"] for c in listed] == [3, 6] and "val/len_norm_reward" in listed[0]


@pytest.mark.parametrize(
    "argv",
    [["train", "sweeps/runs/tiny.yaml", "train.stepz=3"], ["bench", "sweeps/runs/tiny.yaml", "--sync-every", "1,ten"]],
    ids=["train", "bench"],
)
def test_bad_arguments_fail_before_torch_or_transformers_is_imported(argv, tmp_path):
    """A typo is answered in about a second, not after the ~10 s of importing torch and transformers."""
    probe = (
        "import sys; from harness.cli import main; code = main(sys.argv[1:]); "
        "print(code, [m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "[]"], out.stdout + out.stderr[-2000:]
    assert "error: " in out.stderr and ("train.stepz" in out.stderr or "'ten'" in out.stderr)


def test_bad_config_fails_before_work_with_one_paragraph(tmp_path):
    out = harness("train", str(ROOT / "sweeps/runs/tiny.yaml"), "train.lr=-1", tmp_path=tmp_path, check=False)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "tiny.yaml" in out.stderr and "train.lr" in out.stderr and "-1" in out.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing was created
