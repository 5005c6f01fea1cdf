"""MLflow conventions: where runs go, how they are named, and the metric schema.

Tracking URI: `MLFLOW_TRACKING_URI`, else an absolute `sqlite:///<cwd>/mlflow.db` (never the
deprecated file store); a sweep worker without the variable uses the URI its study recorded.
An `http(s)://` tracking server is waited for (`HARNESS_TRACKING_WAIT_S`, default 120 s) before
a run is created, then a clear error; nothing ever falls back to a local store. `NullTracker`
has the same methods and does nothing, so library code never branches on "logging off".
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError, redact

log = logging.getLogger("harness")

from harness.files import atomic_write_text, file_lock, resolve_cache_root  # noqa: F401 - atomic_write_text re-exported: the project's one atomic writer
from harness.tracking_uri import (
    TrackingServerUnreachable,
    sqlite_path,  # noqa: F401 - re-exported
    tracking_wait_s,
    wait_for_tracking_server,
)

# The per-step schema, shared by every method (see docs/metrics.md).
TRAIN_METRICS = (
    "train/loss",
    "train/reward_mean",
    "train/pairs",
    "train/entropy",
    "train/response_len",
    "train/kl",
    "train/generator_staleness",
    "train/ref_staleness",
    "train/generator_version",
)
TIME_METRICS = ("time/generate_s", "time/generate_wait_s", "time/score_s", "time/train_s", "time/sync_s")
VAL_METRICS = ("val/reward", "val/response_len", "val/len_norm_reward", "val/entropy")


def default_tracking_uri() -> str:
    """Where runs go and are read from, for every command and the dashboard (the one rule):
    MLFLOW_TRACKING_URI, else an absolute sqlite:///<cwd>/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def sweep_tracking_uri(recorded: str | None) -> str:
    """A sweep worker's tracking URI: MLFLOW_TRACKING_URI, else the one its study recorded when
    the sweep began (so a worker started without the variable still logs to the team's server
    and not to a new local mlflow.db), else the local default."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if recorded and recorded != uri:
            log.warning(
                "MLFLOW_TRACKING_URI=%s, but this sweep's study logged to %s so far; its runs will be "
                "split across the two stores",
                uri,
                recorded,
            )
        return uri
    if recorded:
        log.info("MLFLOW_TRACKING_URI is not set: logging to %s, where this sweep's study has logged", recorded)
        return recorded
    return default_tracking_uri()


def check_artifact_location(tracking_uri: str, artifact_uri: str) -> None:
    """A run on a tracking server must keep its artifacts on the server (`--serve-artifacts`,
    URIs `mlflow-artifacts:/...`) or an object store, not at a path the client would write on
    this machine's own disk."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    has_scheme = "://" in artifact_uri or artifact_uri.startswith("mlflow-artifacts:")
    scheme = artifact_uri.split(":", 1)[0] if has_scheme else ""
    if scheme in ("", "file"):
        raise HarnessError(
            f"MLFLOW_TRACKING_URI={tracking_uri}: the server gives runs the artifact location {artifact_uri!r}, a "
            f"local path that each worker would write on its own disk; expected served artifacts. Start the server "
            f"with `mlflow server --serve-artifacts --artifacts-destination DIR` (or an object-store artifact root)."
        )


@contextlib.contextmanager
def prepared_store(uri: str) -> Iterator[None]:
    """The first use of a SQLite store, serialised (two processes creating a fresh mlflow.db at
    once both run its schema migrations and one fails) and seeded (seed_sqlite_store). Other
    stores: nothing to do."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with file_lock(path):
        seed_sqlite_store(path)
        yield


def tracking_client(uri: str | None = None):
    """An MlflowClient whose store exists: a tracking server is waited for, a SQLite store is
    created (seeded) under the lock above."""
    from mlflow.tracking import MlflowClient

    uri = uri or default_tracking_uri()
    wait_for_tracking_server(uri)
    with prepared_store(uri):
        return MlflowClient(uri)  # the constructor creates (migrates) the store, or checks the seeded one


def seed_sqlite_store(path: Path) -> None:
    """A new SQLite store starts as a copy of an empty one MLflow migrated once per machine and
    MLflow version (`<cache>/mlflow/empty-<version>.db`): running its schema migrations took
    ~3 s on 2 cores, in every new store (each sweep folder, each test). The template holds no
    experiment, so MLflow creates its Default experiment in the copy, at this process's paths,
    as it would in a new file. Called under prepared_store's lock; an existing store is left alone."""
    if path.exists() and path.stat().st_size > 0:
        return
    import shutil
    import sqlite3
    import tempfile
    import mlflow
    from mlflow.tracking import MlflowClient

    template = resolve_cache_root() / "mlflow" / f"empty-{mlflow.__version__}.db"
    try:
        if not template.is_file():
            template.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
                built = Path(tmp) / "store.db"
                MlflowClient(f"sqlite:///{built}").search_experiments()  # MLflow's own migrations
                with contextlib.closing(sqlite3.connect(built)) as db:
                    db.execute("DELETE FROM experiments")
                    db.commit()
                os.replace(built, template)  # atomic: a concurrent builder's copy is as good
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".seeding")
        shutil.copyfile(template, partial)
        os.replace(partial, path)
    except OSError as exc:  # a read-only cache: MLflow creates the store itself, only slower
        log.debug("no SQLite store template (%s); MLflow migrates %s itself", exc, path)


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


# While a tracking server is down, a buffered write is retried at most this often (each try is a
# connection attempt; MLflow's own retries are cut to a few seconds for a run's writes).
RETRY_EVERY_S = 10.0


def is_unreachable(exc: BaseException) -> bool:
    """A write that failed because the tracking server did not answer (down, restarting, 5xx)."""
    text = str(exc)
    return any(
        s in text
        for s in (
            "Max retries exceeded",
            "Connection refused",
            "Connection aborted",
            "Read timed out",
            "RemoteDisconnected",
            "too many 50",
            "response code 50",
            "Failed to establish a new connection",
        )
    )


class MlflowTracker:
    """One MLflow run, created (or resumed by id) through the client API.

    The client API is used instead of `mlflow.start_run` so that no active-run global and no
    `MLFLOW_RUN_ID` environment variable can leak into subprocesses (sweep trials).

    Every write goes through `_send`: when the tracking server stops answering mid-run, writes
    queue up in memory, in order, training goes on, and they are sent once it answers again (tried
    every RETRY_EVERY_S). `finish` waits up to HARNESS_TRACKING_WAIT_S for the server, then fails
    with one paragraph saying what could not be sent; what was logged before the outage stays on
    the server, and the run is never created twice.
    """

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = tracking_client(self.tracking_uri)
        self._queue: collections.deque = collections.deque()
        self._down_since: float | None = None
        self._retry_at = 0.0
        if self.tracking_uri.startswith(("http://", "https://")):
            # MLflow retries a failed request 7 times with exponential backoff (minutes) before it
            # raises; the buffer below retries instead, so a write gives up within seconds.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
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
        check_artifact_location(self.tracking_uri, run.info.artifact_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        try:
            existing = self.client.get_run(self.run_id).data.params if not self._queue else {}
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            existing = {}  # re-sending a param with its same value is harmless
        fresh = [Param(key, redact(_param_value(value))) for key, value in params.items() if key not in existing]
        for start in range(0, len(fresh), 90):
            self._send(self.client.log_batch, self.run_id, params=fresh[start : start + 90])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), stamp, step or 0)
            for key, value in metrics.items()
            if value is not None and not math.isnan(float(value))
        ]
        for start in range(0, len(batch), 500):
            self._send(self.client.log_batch, self.run_id, metrics=batch[start : start + 500])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._send(self.client.set_tag, self.run_id, key, redact(str(value)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._send(self.client.log_text, self.run_id, text, artifact_file)

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2), artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        """The run's final status, after every buffered write (waits for a down server, bounded)."""
        self._queue.append((self.client.set_terminated, (self.run_id,), {"status": status}))
        wait_s = tracking_wait_s()
        deadline = time.monotonic() + wait_s
        while not self._drain():
            if time.monotonic() >= deadline:
                raise TrackingServerUnreachable(
                    f"MLFLOW_TRACKING_URI={redact(self.tracking_uri)}: the tracking server has not answered for "
                    f"{time.monotonic() - self._down_since:.0f} s, and {len(self._queue)} writes to run {self.run_id} "
                    f"(metrics, tags, artifacts, its final status {status}) could not be sent within "
                    f"HARNESS_TRACKING_WAIT_S={wait_s:.0f} s. What was logged before the outage is on the server; "
                    f"the checkpoints are on disk. Start the server and rerun with --resume to continue the same run."
                )
            time.sleep(min(RETRY_EVERY_S, max(0.5, deadline - time.monotonic())))
            self._retry_at = 0.0

    def _send(self, call, *args, **kwargs) -> None:
        self._queue.append((call, args, kwargs))
        if self._down_since is None or time.monotonic() >= self._retry_at:
            self._drain()

    def _drain(self) -> bool:
        """Send the queued writes in order; False (and keep them) while the server does not answer."""
        while self._queue:
            call, args, kwargs = self._queue[0]
            try:
                call(*args, **kwargs)
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "MLflow tracking server %s is not answering; training goes on and its metrics "
                        "wait in memory until it is back (%s)",
                        redact(self.tracking_uri),
                        str(exc).splitlines()[0][:200],
                    )
                self._retry_at = time.monotonic() + RETRY_EVERY_S
                return False
            self._queue.popleft()
        if self._down_since is not None:
            log.info(
                "MLflow tracking server %s is back after %.0f s; every buffered write was sent",
                redact(self.tracking_uri),
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        return True


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
