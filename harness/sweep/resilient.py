"""Riding out a database blip: the study's storage retries transient errors with backoff.

    storage = retrying_rdb_storage(url, engine_kwargs=..., heartbeat_interval=10, grace_period=60)

A server database that restarts (a failover, an upgrade, a crash) closes every connection; for
the seconds it is down, new ones are refused. Optuna's RDBStorage turns such errors into
`StorageInternalError` (the SQLAlchemy error is its `__cause__`). The storage returned here
repeats each storage call that failed that way, waiting 0.5 s, 1 s, 2 s ... up to 10 s between
tries, for up to `HARNESS_DB_RETRY_S` seconds (default 600), logging the outage once and its
end. Errors that are not about the connection (an integrity error, a finished trial) are raised
at once.

While the database is down nobody's heartbeat gets through, so right after it is back every
RUNNING trial looks stale. A worker therefore declares no trial dead by heartbeat until a full
grace period after its own last outage ended (`OUTAGE.seconds_since_outage()`, used by
study.fail_orphans): by then every live worker has beaten again (a worker's retries are at most
10 s apart, so a grace period of that plus a heartbeat interval or more is safe).

Repeating a write whose commit reached the server just before the connection dropped is
harmless here: a second `create_new_trial` is an extra enqueue, which the claim rule gives up
as a duplicate; a second state change is refused like any update of a finished trial.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable

from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage

log = logging.getLogger("harness.sweep")
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 10.0

# The storage methods a sweep calls (directly or through optuna.Study); each is retried.
RETRIED_METHODS = (
    "create_new_study",
    "get_study_id_from_name",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_study_directions",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_best_trial",
    "record_heartbeat",
    # Private: optuna.Study wraps an RDBStorage in its _CachedStorage, which calls these methods of
    # it (and fail_stale_trials calls the last one). Names checked against Optuna 5.0 (pyproject
    # pins >=4.9,<6); a name that is gone is skipped below, so a rename loses its retry, not the
    # sweep.
    "_get_trials",
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)


def retry_budget_s() -> float:
    return float(os.environ.get("HARNESS_DB_RETRY_S", "600"))


def is_transient(exc: BaseException) -> bool:
    """A lost or refused connection (the server restarting), not a wrong query or a rule.

    PendingRollbackError counts: when the server drops a connection mid-query, some Optuna calls
    (`_get_trials` "falling back to a slower alternative") query again on the same, now invalid,
    transaction, and that is the error that reaches us; the retry runs on a fresh session."""
    from sqlalchemy import exc as sa

    cause = exc.__cause__ if isinstance(exc, StorageInternalError) else exc
    if isinstance(cause, (sa.OperationalError, sa.InterfaceError, sa.PendingRollbackError)):
        return True
    return isinstance(cause, sa.DBAPIError) and bool(cause.connection_invalidated)


class Outage:
    """Logs one warning when the database goes away and one line when it is back."""

    def __init__(self) -> None:
        self.since: float | None = None  # the current outage began (None: no outage now)
        self.ended: float | None = None  # the last outage ended (the first call that went through)

    def seconds_since_outage(self) -> float:
        """Since this process's last outage ended: 0 during one, inf if it never had one."""
        if self.since is not None:
            return 0.0
        return float("inf") if self.ended is None else time.monotonic() - self.ended

    def failed(self, what: str, exc: BaseException, wait_s: float) -> None:
        if self.since is None:
            self.since = time.monotonic()
            reason = str(exc.__cause__ or exc).strip().splitlines()[0][:200]
            log.warning(
                "the study database is unreachable (%s: %s); retrying %s with backoff for up to %.0f s",
                type(exc.__cause__ or exc).__name__,
                reason,
                what,
                retry_budget_s(),
            )
        log.debug("database retry of %s in %.1f s", what, wait_s)

    def recovered(self) -> None:
        if self.since is not None:
            self.ended = time.monotonic()
            log.warning("the study database is back after %.1f s", self.ended - self.since)
            self.since = None


OUTAGE = Outage()


def call_with_retry(
    what: str, fn: Callable[..., Any], *args: Any, reset: Callable[[], None] | None = None, **kwargs: Any
) -> Any:
    """`reset` runs before each retry (the storage drops its session, whose connection is dead)."""
    deadline = time.monotonic() + retry_budget_s()
    wait = FIRST_WAIT_S
    while True:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + wait > deadline:
                raise
            OUTAGE.failed(what, exc, wait)
            time.sleep(wait)
            if reset is not None:
                reset()
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        OUTAGE.recovered()
        return result


def _retrying(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        return call_with_retry(name, method, self, *args, reset=self.scoped_session.remove, **kwargs)

    return wrapper


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose calls survive a database restart (see the module docstring)."""


for _name in RETRIED_METHODS:
    if hasattr(RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retrying(_name, getattr(RDBStorage, _name)))


def retrying_rdb_storage(url: str, **kwargs: Any) -> RDBStorage:
    """Connecting is retried too: a worker may start while the database restarts."""
    return call_with_retry("connecting", RetryingRDBStorage, url, **kwargs)
