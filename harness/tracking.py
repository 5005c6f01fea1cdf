"""MLflow conventions: where runs go, how they are named, and the metric schema.

Tracking URI: `MLFLOW_TRACKING_URI`, else an absolute `sqlite:///<cwd>/mlflow.db` (never the
deprecated file store). `NullTracker` has the same methods and does nothing, so library code
never branches on "logging off".
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from harness.files import atomic_write_text  # noqa: F401 - re-exported: the project's one atomic writer

# The per-step schema, shared by every method (see README "Metrics").
TRAIN_METRICS = ("train/loss", "train/reward_mean", "train/pairs", "train/entropy", "train/response_len",
                 "train/kl", "train/generator_staleness", "train/ref_staleness", "train/generator_version")
TIME_METRICS = ("time/generate_s", "time/generate_wait_s", "time/score_s", "time/train_s", "time/sync_s")
VAL_METRICS = ("val/reward", "val/response_len", "val/len_norm_reward", "val/entropy")


def default_tracking_uri() -> str:
    """Where runs go and are read from, for every command and the dashboard (the one rule):
    MLFLOW_TRACKING_URI, else an absolute sqlite:///<cwd>/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


class NullTracker:
    """Accepts every call and records nothing."""

    run_id: str | None = None
    experiment_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class MemoryTracker(NullTracker):
    """Keeps metrics in memory: for benchmarks and library use without an MLflow store."""

    def __init__(self) -> None:
        self.history: list[tuple[int, dict[str, float]]] = []
        self.params: dict[str, Any] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.history.append((step or 0, dict(metrics)))

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, metrics[key]) for step, metrics in self.history if key in metrics]


class MlflowTracker:
    """One MLflow run, created (or resumed by id) through the client API.

    The client API is used instead of `mlflow.start_run` so that no active-run global and no
    `MLFLOW_RUN_ID` environment variable can leak into subprocesses (sweep trials).
    """

    def __init__(self, experiment: str, run_name: str, tracking_uri: str | None = None,
                 run_id: str | None = None, parent_run_id: str | None = None,
                 tags: dict[str, str] | None = None):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(self.tracking_uri)
        if run_id:
            run = self.client.get_run(run_id)
            self.experiment_id = run.info.experiment_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.experiment_id = ensure_experiment(self.client, experiment)
            all_tags = dict(tags or {})
            if parent_run_id:
                all_tags["mlflow.parentRunId"] = parent_run_id
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(key, _param_value(value)) for key, value in params.items() if key not in existing]
        for start in range(0, len(fresh), 90):
            self.client.log_batch(self.run_id, params=fresh[start:start + 90])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, step or 0) for key, value in metrics.items()
                 if value is not None and not math.isnan(float(value))]
        for start in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 500])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2), artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def ensure_experiment(client, name: str) -> str:
    """Get or create an experiment; safe when several processes race to create it."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it between our two calls
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _param_value(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]
