"""Connecting to an MLflow store and finding its sweeps (the results layer's only door to MLflow).

    client = connect("http://mlflow:5000")    # TrackingUnavailable, with what to do, if it is not one
    sweeps = list_sweeps(client)              # one row per sweep (experiment)
    runs = search_all_runs(client, ids, filter_string)   # every page

A reader: a missing sqlite file is an error, never created. `default_tracking_uri` is the
harness's one rule (harness/tracking.py).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from harness.tracking import default_tracking_uri
from harness.tracking_uri import TRACKING_SCHEMES, sqlite_path
from results.errors import TrackingUnavailable

__all__ = [
    "DEFAULT_UI_URL",
    "TrackingUnavailable",
    "all_experiments",
    "check_tracking_uri",
    "connect",
    "default_tracking_uri",
    "list_sweeps",
    "run_url",
    "search_all_runs",
    "sqlite_path",
]

DEFAULT_UI_URL = "http://localhost:5000"


KNOWN_SCHEMES = TRACKING_SCHEMES


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(16)


def check_tracking_uri(tracking_uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast, with a message saying what to do, before MLflow retries for minutes.

    A missing sqlite file is an error rather than an invitation: MLflow would silently create an
    empty database there, and the dashboard is a reader.
    """
    if not tracking_uri.strip():
        raise TrackingUnavailable(
            "The tracking URI is empty: enter one such as http://localhost:5000 "
            "or sqlite:///mlflow.db in the sidebar, or set MLFLOW_TRACKING_URI."
        )
    scheme = urlparse(tracking_uri).scheme.lower()
    if scheme and scheme.split("+")[0] not in KNOWN_SCHEMES:
        raise TrackingUnavailable(
            f"Tracking URI {tracking_uri!r} has the unknown scheme {scheme!r}; expected "
            f"one of {', '.join(s + '://' for s in KNOWN_SCHEMES)} "
            "(e.g. sqlite:///mlflow.db or http://localhost:5000)."
        )
    db = sqlite_path(tracking_uri)
    if db is not None:
        if db.is_file() and db.stat().st_size and _head(db) != b"SQLite format 3\x00":
            raise TrackingUnavailable(
                f"Tracking URI {tracking_uri!r}: {db} is not an SQLite database; point the "
                "dashboard at the mlflow.db file your runs were logged to."
            )
        if not db.is_file():
            raise TrackingUnavailable(
                f"Tracking URI {tracking_uri!r}: there is no MLflow database at {db} "
                f"({'its folder does not exist' if not db.parent.is_dir() else 'no such file'}). "
                "Point the dashboard at the sqlite file your runs were logged to (the trainer's "
                "MLFLOW_TRACKING_URI), or at the tracking server's http:// address."
            )
        return
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout_s):
                pass
        except OSError as exc:
            raise TrackingUnavailable(
                f"Tracking URI {tracking_uri!r}: cannot connect to {parsed.hostname}:{port} ({exc}). "
                "Start the tracking server (`mlflow server --port PORT`) or fix the address."
            ) from None
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else tracking_uri)
        if not folder.is_dir():
            raise TrackingUnavailable(
                f"Tracking URI {tracking_uri!r}: the folder {folder} does not exist; "
                "point the dashboard at your mlruns folder or tracking server."
            )


def connect(tracking_uri: str) -> MlflowClient:
    """A client for a reachable store (one cheap query proves it), else TrackingUnavailable."""
    check_tracking_uri(tracking_uri)
    try:  # the constructor already fails on an unknown scheme or a file that is not a database
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # any failure here means "not a usable MLflow store"
        raise TrackingUnavailable(
            f"Tracking URI {tracking_uri!r} did not answer as an MLflow store: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    return client


def run_url(tracking_uri: str, experiment_id: str, run_id: str, ui_base_url: str | None = None) -> str:
    """A link to the run in the MLflow UI: the server itself for http(s) URIs, else ui_base_url."""
    scheme = urlparse(tracking_uri).scheme
    base = tracking_uri if scheme in ("http", "https") else (ui_base_url or DEFAULT_UI_URL)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def search_all_runs(
    client: MlflowClient, experiment_ids: Iterable[str], filter_string: str = "", page_size: int = 1000
) -> list[Run]:
    """Every matching run, following page tokens (a big sweep has more runs than one page)."""
    ids = [str(e) for e in experiment_ids]
    if not ids:
        return []
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            ids,
            filter_string=filter_string,
            max_results=page_size,
            page_token=token,
            run_view_type=ViewType.ACTIVE_ONLY,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def all_experiments(client: MlflowClient, page_size: int = 1000) -> list:
    experiments, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=page_size, page_token=token)
        experiments.extend(page)
        token = page.token
        if not token:
            return experiments


def list_sweeps(client: MlflowClient, page_size: int = 1000) -> pd.DataFrame:
    """One row per sweep: experiment_id, experiment, sweep, parent_run_id, status, start_time.

    A sweep is an experiment; its name is the parent run's `harness.sweep` tag when there is one,
    else the experiment name (plain `harness train` runs). Experiments without runs are left out.
    """
    rows = []
    for experiment in all_experiments(client, page_size):
        eid = experiment.experiment_id
        if not client.search_runs([eid], max_results=1):
            continue
        parents = search_all_runs(client, [eid], "tags.`harness.kind` = 'sweep'", page_size)
        for parent in parents or [None]:
            tags = parent.data.tags if parent else {}
            rows.append(
                {
                    "experiment_id": eid,
                    "experiment": experiment.name,
                    "sweep": tags.get("harness.sweep") or experiment.name,
                    "parent_run_id": parent.info.run_id if parent else None,
                    "status": parent.info.status if parent else None,
                    "start_time": pd.to_datetime(parent.info.start_time, unit="ms") if parent else pd.NaT,
                }
            )
    columns = ["experiment_id", "experiment", "sweep", "parent_run_id", "status", "start_time"]
    return pd.DataFrame(rows, columns=columns)
