"""The tracking URI: the one check of it, the one reader of a SQLite URI's database path, and the
wait for a tracking server.

    check_tracking_uri(uri, where, must_exist=False)   # harness train / eval / report / leaderboard
    sqlite_path("sqlite:///mlflow.db") -> Path("mlflow.db")   # None for another scheme
    wait_for_tracking_server(uri, wait_s=None)         # http(s): poll /health with backoff

Imported by harness.preflight, the CLI and the evaluators (which must not import preflight), by
harness.tracking and by the results layer.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from harness.errors import ConfigError, HarnessError, redact
from harness.files import writable

# Schemes MLflow's tracking client accepts that this project supports.
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_SQLITE_MAGIC = b"SQLite format 3\x00"
log = logging.getLogger("harness.tracking")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI (sqlite:///rel.db relative, sqlite:////abs.db absolute:
    SQLAlchemy's convention), else None."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:") :]
    return Path(rest[3:]) if rest.startswith("///") else Path(rest.lstrip("/"))


def check_tracking_uri(uri: str | None, where: str, must_exist: bool = False) -> None:
    """A tracking URI MLflow can use: a known scheme; for sqlite a database file (or a new one in
    a writable folder; with `must_exist`, for commands that only read, the file must be there:
    MLflow would otherwise create an empty one); for http(s) a server that answers. Creates nothing."""
    if uri is None:
        return
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if not scheme or (len(scheme) == 1 and os.name == "nt"):  # a plain path: MLflow's file store
        scheme = "file"
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"{where} = {uri!r} has the unknown scheme {scheme!r}; expected one of "
            f"{', '.join(s + '://' for s in TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db)."
        )
    if scheme == "sqlite":
        _check_sqlite(uri, where, must_exist)
    elif scheme in ("http", "https"):
        try:
            _check_server(uri, parsed, where)
        except ConfigError:
            # A server may be restarting (a team's shared server): wait HARNESS_TRACKING_WAIT_S with
            # backoff before giving up; 0 fails at once with the message above.
            if tracking_wait_s() <= 0:
                raise
            wait_for_tracking_server(uri)
    elif scheme == "file":
        path = Path(parsed.path if parsed.scheme else uri)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{where} = {uri!r} is a file; a file store is a folder (or use sqlite:///PATH.db).")
        if must_exist and not path.is_dir():
            raise ConfigError(
                f"{where} = {uri!r}: no tracking store there ({path} does not exist), so there is "
                f"nothing to read; pass the store your runs logged to."
            )


def _check_sqlite(uri: str, where: str, must_exist: bool = False) -> None:
    path = sqlite_path(uri)
    if path is None or ":///" not in uri or str(path) in (".", ":memory:"):
        raise ConfigError(f"{where} = {uri!r} names no database file; expected sqlite:///PATH/mlflow.db.")
    if path.is_dir():
        raise ConfigError(
            f"{where} = {uri!r} points at a directory; expected a database file such as sqlite:///{path / 'mlflow.db'}."
        )
    if path.is_file():
        try:
            with path.open("rb") as handle:
                head = handle.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise ConfigError(f"{where} = {uri!r}: the database file cannot be read ({exc.strerror}).") from None
        if head and head != _SQLITE_MAGIC:
            raise ConfigError(
                f"{where} = {uri!r} points at {path}, which is not an SQLite database; "
                f"expected an MLflow database file (or a path where a new one may be created)."
            )
        return
    if must_exist:
        raise ConfigError(
            f"{where} = {uri!r}: no tracking store there ({path} does not exist), so there is "
            f"nothing to read; pass the store your runs logged to (--tracking-uri)."
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"{where} = {uri!r}: the folder {path.parent} does not exist, so the database cannot be created there."
        )
    if not writable(path.parent):
        raise ConfigError(
            f"{where} = {uri!r}: the folder {path.parent} is not writable, so the database cannot be created there."
        )


def _check_server(uri: str, parsed, where: str) -> None:
    port = parsed.port or (443 if parsed.scheme.lower() == "https" else 80)
    if not parsed.hostname:
        raise ConfigError(f"{where} = {uri!r} names no host; expected e.g. http://localhost:5000.")
    try:
        with socket.create_connection((parsed.hostname, port), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{where} = {uri!r}: no tracking server answers at {parsed.hostname}:{port} "
            f"({exc.strerror or exc}); start it (`mlflow server --port {port}`) or use "
            f"sqlite:///mlflow.db."
        ) from None


class TrackingServerUnreachable(HarnessError):
    """The MLflow tracking server did not answer within the wait."""


def tracking_wait_s() -> float:
    return float(os.environ.get("HARNESS_TRACKING_WAIT_S", "120"))


def health_request(uri: str) -> urllib.request.Request:
    """GET <server>/health; credentials in the URL (http://user:password@host) go as basic auth,
    which urllib does not do by itself (it would look the whole `user:password@host` up as a host)."""
    parsed = urllib.parse.urlsplit(uri.rstrip("/"))
    netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "") if parsed.hostname else parsed.netloc
    request = urllib.request.Request(urllib.parse.urlunsplit(parsed._replace(netloc=netloc)) + "/health")
    if parsed.username is not None:
        token = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    return request


def wait_for_tracking_server(uri: str, wait_s: float | None = None) -> None:
    """For an http(s) tracking URI, poll the server's /health with backoff (1 s, 2 s, ... 10 s)
    until it answers; raise TrackingServerUnreachable after `wait_s`. Other URIs return at once."""
    if not uri.startswith(("http://", "https://")):
        return
    wait_s = tracking_wait_s() if wait_s is None else wait_s
    started, pause, tries, last = time.monotonic(), 1.0, 0, ""
    while True:
        tries += 1
        try:
            with urllib.request.urlopen(health_request(uri), timeout=10) as answer:
                if answer.status == 200:
                    if tries > 1:
                        log.info("MLflow tracking server %s is up after %.0f s", uri, time.monotonic() - started)
                    return
                last = f"HTTP {answer.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        waited = time.monotonic() - started
        if waited + pause > wait_s:
            raise TrackingServerUnreachable(
                f"MLFLOW_TRACKING_URI={redact(uri)}: the MLflow tracking server did not answer at /health for "
                f"{waited:.0f} s ({tries} tries; last: {last}); expected a running `mlflow server` at that "
                f'address. Start it (see docs/SWEEPS.md, "Scaling out") or fix the URI; nothing was logged '
                f"and no local store was created instead (HARNESS_TRACKING_WAIT_S sets the wait)."
            )
        if tries == 1:
            log.warning("MLflow tracking server %s is not answering (%s); waiting up to %.0f s", uri, last, wait_s)
        time.sleep(pause)
        pause = min(pause * 2, 10.0)
