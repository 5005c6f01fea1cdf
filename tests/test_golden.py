"""Golden numbers (torchtune's recipe tests): 3 steps of DPO and of GRPO on the tiny seed, through
the real CLI (`harness train` in a subprocess, logging to a temp MLflow store), must log exactly
the `train/loss` and `train/reward_mean` committed below, per step, to 1e-5. A changed loss
coefficient, normalisation, pair rule, advantage, sampling stream or reward then fails loudly.

When a change is MEANT to move these numbers (e.g. new sampling seeds), print fresh ones with

    python tests/test_golden.py --print

and paste the printed GOLDEN below (say why in the commit message).

The numbers belong to the shipped tiny assets (harness/tiny/shipped, checked by sha256 when they
are installed), so they are the same on every machine: there are no per-machine entries. Checked
on an AMD EPYC (2 cores). A run on assets trained locally (`harness prepare --rebuild`) is
skipped, naming the fingerprint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = 3
COMMON = [
    f"train.steps={STEPS}",
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=32",
    "validation.every=1000",
    "validation.prompts=4",
    "checkpoint.every=1000",
    "seed=0",
]
RECIPES = {
    "dpo_s2": ["method=dpo", "sync_every=2", "task_mix=verifiable"],
    "grpo": ["method=grpo", "sync_every=1", "task_mix=verifiable"],
}
METRICS = ("train/loss", "train/reward_mean")
TOLERANCE = 1e-5

GOLDEN: dict[str, dict[str, list[float]]] = {  # recipe -> metric -> per step, on the shipped assets
    "dpo_s2": {
        "train/loss": [0.6931471824645996, 0.694355845451355, 0.6931471824645996],
        "train/reward_mean": [0.4375, 0.4375, 0.5625],
    },
    "grpo": {
        "train/loss": [-0.890625, -1.8437474966049194, -1.3906232118606567],
        "train/reward_mean": [0.4375, 0.4375, 0.5625],
    },
}


def asset_fingerprint(assets) -> str:
    """The first 16 hex digits of the sha256 of the seed policy's weights file."""
    import hashlib

    return hashlib.sha256((Path(assets.policy_dir) / "model.safetensors").read_bytes()).hexdigest()[:16]


def run_recipe(name: str, folder: Path) -> dict[str, list[float]]:
    """`harness train sweeps/runs/tiny.yaml <recipe>` in a subprocess; the metrics it logged, by step."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "train",
        str(ROOT / "sweeps/runs/tiny.yaml"),
        *RECIPES[name],
        *COMMON,
        f"output_dir={folder / name}",
        f"tracking.experiment=golden-{name}",
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads(done.stdout.strip().splitlines()[-1])["run_id"]
    client = MlflowClient(uri)
    logged = {}
    for key in METRICS:
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, STEPS + 1)), (name, key, [m.step for m in history])
        logged[key] = [m.value for m in history]
    return logged


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_logs_the_golden_numbers(name, tiny_assets, tmp_path):
    if tiny_assets.summary.get("source") != "shipped":
        pytest.skip(
            f"the tiny assets in {tiny_assets.root} were trained on this machine (fingerprint "
            f"{asset_fingerprint(tiny_assets)}), not installed from the package; the golden numbers belong "
            f"to the shipped ones"
        )
    logged = run_recipe(name, tmp_path)
    for key in METRICS:
        expected, got = GOLDEN[name][key], logged[key]
        assert len(got) == len(expected)
        off = [(step, e, g) for step, (e, g) in enumerate(zip(expected, got), 1) if abs(e - g) > TOLERANCE]
        assert not off, (
            f"{name} {key}: (step, golden, logged) differ by more than {TOLERANCE}: {off}. "
            "If the change is meant to move them, regenerate: python tests/test_golden.py --print"
        )


def main() -> None:
    if "--print" not in sys.argv[1:]:
        sys.exit("usage: python tests/test_golden.py --print   (prints a fresh GOLDEN dict to paste into this file)")
    from harness.tiny import ensure_tiny_assets

    fresh = {}
    fingerprint = asset_fingerprint(ensure_tiny_assets())
    with tempfile.TemporaryDirectory(prefix="harness-golden-") as scratch:
        for name in sorted(RECIPES):
            folder = Path(scratch) / name
            folder.mkdir()
            fresh[name] = run_recipe(name, folder)
    print(f"# GOLDEN for the tiny assets {fingerprint}:")
    print("GOLDEN: dict[str, dict[str, list[float]]] = {  # recipe -> metric -> per step, on the shipped assets")
    for name, metrics in fresh.items():
        print(f'    "{name}": {{')
        for key, values in metrics.items():
            print(f'        "{key}": [{", ".join(repr(v) for v in values)}],')
        print("    },")
    print("}")


if __name__ == "__main__":
    main()
