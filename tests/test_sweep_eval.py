"""A sweep that evaluates: offline and online DPO over two seeds scored on tiny_math, the seed
model evaluated once as the results table's first row, and `harness report` over the real runs.
Helpers from test_sweep_run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_sweep_run import mlflow_runs, run_sweep_cli, write_grid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated_sweep(tiny_assets, tmp_path_factory):
    """Offline and online DPO over two seeds, evaluated on tiny_math; run twice (the rerun is a no-op)."""
    folder = tmp_path_factory.mktemp("evaluated")
    path = write_grid(
        folder,
        "evaluated",
        {"method": ["dpo"], "sync_every": [1, "inf"], "seed": [0, 1]},
        set={"train.steps": 2, "eval.suites": ["tiny_math"], "eval.samples": 1},
    )
    runs = [run_sweep_cli(path, "--jobs", "2") for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
    return folder, path


def test_the_seed_model_is_evaluated_once_per_sweep_as_the_tables_first_row(evaluated_sweep):
    folder, path = evaluated_sweep
    runs = mlflow_runs(folder, "evaluated")
    seed_runs = [r for r in runs if r.data.tags.get("method") == "seed"]
    assert len(seed_runs) == 1  # the rerun found it and did not evaluate again
    seed, parent = seed_runs[0], next(r for r in runs if r.data.tags.get("harness.kind") == "sweep")
    assert seed.info.status == "FINISHED" and seed.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert (seed.data.tags["task_mix"], seed.data.tags["sync_every"]) == ("-", "-")
    # Evaluated by its own `harness eval` process (started by the sweep's launcher), not in the coordinator.
    assert (
        "harness.cli eval tiny --config"
        in (folder / "outputs" / "evaluated" / "seed_baseline" / "eval.log").read_text()
    )
    generations = folder / "outputs" / "evaluated" / "seed_baseline" / "tiny_math" / "generations.jsonl"
    rows = [json.loads(line) for line in generations.read_text().splitlines()]
    assert len(rows) == 400  # every test problem, one sample each
    correct = sum(r["correct"] for r in rows)
    assert seed.data.metrics["eval/tiny_math/pass_at_1"] == pytest.approx(100 * correct / len(rows))
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").list_artifacts(seed.info.run_id, "eval/tiny_math")
    assert [a.path for a in logged] == ["eval/tiny_math/generations.jsonl"]  # the leaderboard's Samples view


def test_report_of_a_real_sweep_matches_its_runs_metrics(evaluated_sweep):
    from test_report import pm, row, section, table

    folder, path = evaluated_sweep
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    out = folder / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from harness.cli import main; main()",
            "report",
            str(path),
            "--out",
            str(out),
            "--tracking-uri",
            uri,
        ],
        cwd=folder,
        text=True,
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in done.stdout and f"harness leaderboard --tracking-uri {uri}" in done.stdout
    runs = mlflow_runs(folder, "evaluated")
    metric = "eval/tiny_math/pass_at_1"
    rows = table(section((out / "report.md").read_text(), "### verifiable", within="## Results"))
    assert [r["method"] for r in rows] == ["seed", "offline DPO", "online DPO"]
    seed = next(r for r in runs if r.data.tags.get("method") == "seed").data.metrics
    assert rows[0]["tiny_math pass_at_1"] == f"{seed[metric]:.1f} ± {seed[metric + '_se']:.1f}"
    for label, sync_every in (("offline DPO", "inf"), ("online DPO", "1")):
        values = [r.data.metrics[metric] for r in runs if r.data.tags.get("sync_every") == sync_every]
        assert len(values) == 2 and row(rows, label)["tiny_math pass_at_1"] == pm(values)
        assert row(rows, label)["n seeds"] == "2"
