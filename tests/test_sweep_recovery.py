"""Sweeps that survive their coordinators: a SIGKILLed sweep rerun to completion, and two
concurrent coordinators (local and submitit launchers) sharing one study. Real `harness train`
trials on the tiny model; helpers from test_sweep_run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from optuna.trial import TrialState

from harness.procs import process_start_time
from test_sweep_run import (
    complete_trials_per_cell,
    mlflow_runs,
    run_sweep_cli,
    study_of,
    sweep_argv,
    sweep_env,
    write_grid,
)

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # heavy: `-m "not heavy"` skips them locally; CI runs them


def test_sigkill_of_the_sweep_then_rerun_completes_every_cell_exactly_once(tiny_assets, tmp_path):
    path = write_grid(tmp_path, "killed", {"method": ["dpo"], "sync_every": [1, "inf"]}, set={"train.steps": 4})
    sweep = subprocess.Popen(
        sweep_argv(path, "--jobs", "2"),
        cwd=tmp_path,
        env=sweep_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    trials = tmp_path / "outputs" / "killed" / "trials"
    deadline = time.monotonic() + 180
    while not list(trials.glob("*/0/checkpoints/step_*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGKILL)  # the coordinator's whole process group, mid-run
    sweep.wait()
    started = [json.loads(p.read_text()) for p in trials.glob("*/0/trial.pid")]
    assert started, "no trial had started before the kill"

    rerun = run_sweep_cli(path, "--jobs", "2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    handle = study_of(path)
    assert complete_trials_per_cell(handle) == {"dpo-s1": 1, "dpo-sinf": 1}
    orphaned = [t for t in handle.trials() if t.state == TrialState.FAIL and "harness.outcome" not in t.user_attrs]
    assert orphaned, "the killed trials should be recorded as orphaned attempts"
    children = [r for r in mlflow_runs(tmp_path, "killed") if "cell_key" in r.data.tags]
    assert sorted(r.data.tags["cell_key"] for r in children) == ["dpo-s1", "dpo-sinf"]  # reused, not duplicated
    assert all(r.info.status == "FINISHED" for r in children)
    resumed = [
        t for t in orphaned if "resumed from" in (trials / t.user_attrs["cell_key"] / "0" / "trial.log").read_text()
    ]
    assert resumed, "a retried trial should continue from its last checkpoint"
    # Nothing is left running from the killed sweep.
    assert all(process_start_time(info["pid"]) != info["start"] for info in started)


def test_two_concurrent_sweeps_on_one_storage_never_run_a_cell_twice(tiny_assets, tmp_path):
    """One local-launcher and one submitit (local executor) coordinator share the study."""
    path = write_grid(
        tmp_path,
        "shared",
        {"method": ["dpo"], "task_mix": ["verifiable", "non_verifiable"], "seed": [0, 1]},
        exclude=[{"task_mix": "non_verifiable", "seed": 1}],
    )
    procs = [
        subprocess.Popen(
            sweep_argv(path, "--jobs", "1", "--launcher", launcher),
            cwd=tmp_path,
            env=sweep_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for launcher in ("local", "submitit")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    handle = study_of(path)
    assert set(complete_trials_per_cell(handle).values()) == {1} and len(complete_trials_per_cell(handle)) == 3
    completed = handle.trials((TrialState.COMPLETE,))
    assert {t.user_attrs["launcher"] for t in completed} == {"local", "submitit"}  # both really worked
    children = [r for r in mlflow_runs(tmp_path, "shared") if "cell_key" in r.data.tags]
    assert len(children) == 3 and len({r.data.tags["cell_key"] for r in children}) == 3
    assert len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1
