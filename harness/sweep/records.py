"""MLflow records of a sweep: one experiment, one parent run, a child run per trial.

The parent run (tags `harness.kind=sweep`, `harness.sweep`, `harness.study`) is created once
and its id kept in the study's user attrs, so reruns and extra workers reuse it. Children are
created by `harness train --parent-run-id`; the sweep only adds tags, failure logs, and the
parent's artifacts (`sweep.yaml`, `summary.csv`). All calls go through the client API: no active
run, so nothing like MLFLOW_RUN_ID can leak into trial processes.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from harness.errors import redact
from harness.tracking import default_tracking_uri, ensure_experiment, tracking_client

log = logging.getLogger("harness.sweep")
PARENT_ATTR = "mlflow_parent_run_id"


def client_for(uri: str | None = None):
    """A client whose store exists (harness.tracking.tracking_client: a server is waited for, a
    fresh SQLite store is created once under a file lock, before any trial starts)."""
    return tracking_client(uri or default_tracking_uri())


def ensure_parent_run(client, study, sweep, storage_url: str) -> str:
    """The sweep's parent run: the one named in the study's user attrs, else a new one."""
    from mlflow.exceptions import MlflowException

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                client.log_text(run_id, sweep.text, "sweep.yaml")
                return run_id
        except MlflowException:
            log.warning("the sweep's MLflow parent run %s is gone; creating a new one", run_id)
    experiment_id = ensure_experiment(client, sweep.experiment)
    tags = {
        "harness.kind": "sweep",
        "harness.sweep": sweep.name,
        "harness.study": sweep.study_name,
        "harness.storage": redact(storage_url),
        "harness.cells": str(len(sweep.cells)),
    }
    run_id = client.create_run(experiment_id, run_name=f"sweep-{sweep.name}", tags=tags).info.run_id
    client.log_text(run_id, sweep.text, "sweep.yaml")
    study.set_user_attr(PARENT_ATTR, run_id)
    study.set_user_attr("mlflow_tracking_uri", client.tracking_uri)
    study.set_user_attr("mlflow_experiment", sweep.experiment)
    return run_id


def best_effort(what: str, fn, *args, **kwargs) -> Any:
    """MLflow bookkeeping must never take the sweep down (e.g. a locked SQLite store)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - logged and skipped on purpose
        log.warning("MLflow: could not %s: %s", what, exc)
        return None


def tag_run(client, run_id: str | None, tags: dict[str, Any]) -> None:
    if run_id:
        for key, value in tags.items():
            best_effort(f"tag run {run_id}", client.set_tag, run_id, key, str(value)[:5000])


def record_failure(
    client, run_id: str | None, parent_id: str, label: str, reason: str, tail: str, log_path: Path
) -> None:
    """Put a failed trial's last log lines on its run (or, with no run yet, on the parent)."""
    if run_id:
        tag_run(client, run_id, {"harness.error": reason, "harness.log_tail": tail})
        best_effort("attach the trial log", client.log_artifact, run_id, str(log_path), "sweep")
        run = best_effort("read the trial run", client.get_run, run_id)
        if run is not None and run.info.status == "RUNNING":  # killed too hard to close its own run
            best_effort("close the trial run", client.set_terminated, run_id, "FAILED")
    else:
        best_effort(
            "attach the failure log", client.log_text, parent_id, f"{reason}\n\n{tail}", f"failures/{label}.txt"
        )


def summary_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def log_summary(client, parent_id: str, rows: list[dict[str, Any]], output_dir: Path) -> Path:
    path = output_dir / "summary.csv"
    path.write_text(summary_csv(rows))
    best_effort("log summary.csv", client.log_artifact, parent_id, str(path))
    return path


def finish_parent(client, parent_id: str, status: str) -> None:
    best_effort("close the sweep run", client.set_terminated, parent_id, status)
