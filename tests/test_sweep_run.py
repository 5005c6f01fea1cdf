"""Running sweeps: real Optuna storages, real `harness train` subprocesses, a real MLflow SQLite
store. The first tests exercise enqueue/claim/orphan handling on a real SQLite study directly;
the end-to-end ones run small tiny grids (a few train steps per cell). They take conftest's
`tiny_assets` fixture first, so parallel trials never race to build the assets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SET
from optuna.trial import TrialState

from harness.sweep.study import (
    claim_next,
    default_storage_url,
    enqueue_missing,
    fail_orphans,
    finish,
    group_units,
    open_study,
    units_to_reap,
    unit_state,
)

pytestmark = pytest.mark.slow  # real sweeps of `harness train` trials

REPO = Path(__file__).resolve().parents[1]
UNITS = [(f"cell{i}", 0) for i in range(6)]


@pytest.fixture
def study(tmp_path):
    return open_study(default_storage_url(tmp_path), "probe")


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# -- the study, directly -----------------------------------------------------------------------


def test_enqueue_is_idempotent_one_waiting_trial_per_unit(study):
    assert enqueue_missing(study, UNITS, {}, retry_failed=True) == 6
    assert enqueue_missing(study, UNITS, {}, retry_failed=True) == 0
    grouped = group_units(study.trials())
    assert sorted(grouped) == UNITS and all(len(v) == 1 for v in grouped.values())


def test_claims_from_concurrent_processes_never_overlap(tmp_path, study):
    enqueue_missing(study, [(f"cell{i}", 0) for i in range(40)], {}, retry_failed=True)
    script = textwrap.dedent(f"""
        import json, sys
        from harness.sweep.study import claim_next, open_study
        handle = open_study({study.url!r}, "probe")
        got = []
        while (trial := claim_next(handle)) is not None:
            got.append(trial.number)
        print(json.dumps(got))
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    claimed = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    everything = [n for got in claimed for n in got]
    assert sorted(everything) == list(range(40))  # each trial claimed exactly once
    assert sum(1 for got in claimed if got) >= 2  # and the workers really did compete


def test_a_second_enqueue_of_a_unit_is_given_up_as_duplicate_on_claim(study):
    # What two coordinators enqueueing at the same moment on a server database could produce.
    for _ in range(2):
        study.study.enqueue_trial({}, user_attrs={"cell_key": "cell0", "slot": 0})
    first, second = claim_next(study), claim_next(study)
    assert first.number == 0 and second is None
    states = {t.number: (t.state, t.user_attrs.get("harness.outcome")) for t in study.trials()}
    assert states == {0: (TrialState.RUNNING, None), 1: (TrialState.FAIL, "duplicate")}


def test_trial_of_a_dead_coordinator_is_orphaned_and_reenqueued(study):
    enqueue_missing(study, UNITS[:2], {}, retry_failed=True)
    orphan, failed = claim_next(study), claim_next(study)
    study.storage.set_trial_user_attr(study.trial_id(orphan.number), "harness.owner_pid", dead_pid())
    finish(study, failed.number, TrialState.FAIL, attrs={"harness.outcome": "failed"})
    assert fail_orphans(study, own=set()) == 1
    assert units_to_reap(study) == [("cell0", 0)]
    # Within a run only orphans are retried; a real failure waits for a rerun (retry_failed).
    assert enqueue_missing(study, UNITS[:2], {}, retry_failed=False) == 1
    assert enqueue_missing(study, UNITS[:2], {}, retry_failed=True) == 1
    grouped = group_units(study.trials())
    assert [unit_state(grouped[u]) for u in UNITS[:2]] == ["WAITING", "WAITING"]
    assert [t.user_attrs["attempt"] for t in grouped[("cell0", 0)]] == [1, 2]


def test_a_live_coordinators_trial_is_not_orphaned(study):
    enqueue_missing(study, UNITS[:1], {}, retry_failed=True)
    claim_next(study)  # owned by this (alive) test process
    assert fail_orphans(study, own=set()) == 0
    assert unit_state(group_units(study.trials())[("cell0", 0)]) == "RUNNING"


# -- end to end: real `harness train` trials -------------------------------------------------


def write_grid(folder: Path, name: str, grid: dict, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "base": "runs/tiny.yaml", "grid": grid, "set": {**TINY_SET, **extra.pop("set", {})}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    env["MLFLOW_RUN_ID"] = "must-not-leak-into-trials"
    return env


def sweep_argv(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "harness.sweep", "sweep", str(path), "--no-progress", *args]


def run_sweep_cli(path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_argv(path, *args),
        cwd=path.parent,
        env=sweep_env(path.parent),
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def study_of(path: Path):
    spec = yaml.safe_load(path.read_text())
    return open_study(default_storage_url(path.parent / "outputs" / spec["name"]), spec["name"], create=False)


def mlflow_runs(folder: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def complete_trials_per_cell(handle) -> dict[str, int]:
    tally: dict[str, int] = {}
    for trial in handle.trials():
        if trial.state == TrialState.COMPLETE:
            tally[trial.user_attrs["cell_key"]] = tally.get(trial.user_attrs["cell_key"], 0) + 1
    return tally


@pytest.fixture(scope="module")
def small_sweep(tiny_assets, tmp_path_factory):
    """dpo and grpo cells that train, plus one cell whose trial raises mid-run: its policy folder
    passes the pre-start checks (it holds config.json) but its weights are not a safetensors file."""
    folder = tmp_path_factory.mktemp("small")
    broken = folder / "no-such-policy"
    shutil.copytree(tiny_assets.policy_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    path = write_grid(
        folder,
        "small",
        {"method": ["dpo", "grpo"], "seed": [0, 1]},
        exclude=[{"method": "grpo", "seed": 1}],
        overrides=[{"when": {"seed": 1}, "set": {"model.policy": str(folder / "no-such-policy")}}],
    )
    started = time.monotonic()
    done = run_sweep_cli(path, "--jobs", "2")
    return folder, path, done, time.monotonic() - started


def test_small_grid_runs_to_completion_as_children_of_one_sweep_run(small_sweep):
    folder, path, done, seconds = small_sweep
    assert done.returncode == 1, done.stderr[-3000:]  # 1: one cell failed, by design
    handle = study_of(path)
    assert complete_trials_per_cell(handle) == {"dpo-seed0": 1, "grpo-seed0": 1}
    runs = {r.data.tags.get("cell_key", "sweep"): r for r in mlflow_runs(folder, "small")}
    parent = runs["sweep"]
    assert parent.data.tags["harness.kind"] == "sweep" and parent.data.tags["harness.sweep"] == "small"
    assert handle.study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    for trial in handle.trials((TrialState.COMPLETE,)):
        key, run = trial.user_attrs["cell_key"], runs[trial.user_attrs["cell_key"]]
        trial_dir = folder / "outputs" / "small" / "trials" / key / "0"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["harness.study"] == "small" and run.data.tags["harness.trial"] == str(trial.number)
        assert run.data.tags["method"] == key.split("-")[0] and run.info.status == "FINISHED"
        assert trial.user_attrs["mlflow_run_id"] == json.loads((trial_dir / "run.json").read_text())["run_id"]
        checkpoints = json.loads((trial_dir / "checkpoints.json").read_text())
        best = max(checkpoints, key=lambda c: (c["val/len_norm_reward"], -c["step"]))
        assert trial.value == best["val/len_norm_reward"] and trial.user_attrs["selected_step"] == best["step"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.yaml", "summary.csv"}
    assert "dpo-seed0" in (folder / "outputs" / "small" / "summary.csv").read_text()
    print(f"small grid: 3 trials (1 failing) with --jobs 2 took {seconds:.0f} s")


def test_raising_trial_is_isolated_and_recorded(small_sweep):
    folder, path, done, _ = small_sweep
    failed = [t for t in study_of(path).trials() if t.state == TrialState.FAIL]
    assert [t.user_attrs["cell_key"] for t in failed] == ["dpo-seed1"]
    attrs = failed[0].user_attrs
    assert attrs["harness.outcome"] == "failed" and attrs["exit_code"] != 0
    assert "no-such-policy" in attrs["log_tail"]
    run = next(r for r in mlflow_runs(folder, "small") if r.data.tags.get("cell_key") == "dpo-seed1")
    assert run.info.status == "FAILED" and "no-such-policy" in run.data.tags["harness.log_tail"]
    assert "dpo-seed1" in done.stdout and "rerun the same command" in done.stdout


def test_status_prints_state_objective_and_run_id_per_cell(small_sweep, capsys, monkeypatch):
    from harness.sweep.commands import status_command

    folder, path, _, _ = small_sweep
    monkeypatch.chdir(folder)
    assert status_command(str(path)) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("dpo-", "grpo-"))}
    assert rows["dpo-seed0"][3] == "COMPLETE" and rows["dpo-seed0"][5] == "4/4"
    assert rows["dpo-seed1"][3] == "FAIL(failed)"
    trial = next(t for t in study_of(path).trials() if t.user_attrs["cell_key"] == "grpo-seed0")
    assert trial.user_attrs["mlflow_run_id"] in rows["grpo-seed0"]
    assert "2/3 done, 0 running, 1 failed" in out


def test_search_samples_params_per_trial_and_records_their_curves(tiny_assets, tmp_path):
    path = write_grid(
        tmp_path,
        "search",
        {"method": ["dpo"]},
        search={
            "trials_per_cell": 2,
            "sampler": "random",
            "seed": 3,
            "params": {"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}},
            "pruner": "none",
        },
    )
    done = run_sweep_cli(path, "--jobs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    completed = study_of(path).trials((TrialState.COMPLETE,))
    assert sorted(t.user_attrs["slot"] for t in completed) == [0, 1]
    lrs = {t.params["train.lr"] for t in completed}
    assert len(lrs) == 2 and all(1e-5 <= lr <= 1e-3 for lr in lrs)
    runs = {r.info.run_id: r for r in mlflow_runs(tmp_path, "search")}
    for trial in completed:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert float(run.data.params["train.lr"]) == pytest.approx(trial.params["train.lr"])
        assert sorted(trial.intermediate_values) == [2, 4]  # the validation curve, for the pruner
