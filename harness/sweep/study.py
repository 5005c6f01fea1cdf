"""The Optuna side of a sweep: storage, the study, units enqueued once, safe claims, orphans.

A *unit* is one (cell, slot): the grid cell and, with a `search:` block, the index of the search
trial within it. Each attempt at a unit is one Optuna trial carrying user attrs `cell_key` and
`slot`. Workers never call `study.ask()` (it would create trials nobody enqueued) and never use
GridSampler (several workers on one storage run its points twice or lose them): the coordinator
enqueues each missing unit once, and workers claim WAITING trials only.

Claims are atomic per storage: PostgreSQL/MySQL lock the row (SELECT ... FOR UPDATE); the journal
file orders claims in its log; SQLite's driver does not hold a transaction across Optuna's read
and write, so claims (and enqueues) on SQLite and journal files also hold an flock on a file next
to the storage. A claimed trial that duplicates a unit already complete, launched, or claimed
under a lower trial number (two coordinators enqueueing at once on a server database) is given
up at once with outcome `duplicate`, so no unit ever runs twice.

Whoever finishes a trial first sets the user attr `harness.outcome` (completed, failed, pruned,
duplicate, interrupted); a FAIL without it was *orphaned*: its coordinator died (same host: the
owner process is gone; any host: Optuna's heartbeat went stale on RDB storages, our own heartbeat
attr on journal files).

Only Optuna's public API is used: trials are named by number (`study.tell(number, ...)`, the
storage's `get_trial_id_from_study_id_trial_number`), claims go through the storage's public
`set_trial_state_values`, heartbeats through `record_heartbeat` and `fail_stale_trials` with a
`heartbeat_stale_trial_callback` (Optuna >= 4.9). Optuna's own `RetryFailedTrialCallback` is not
used: it would copy the dead owner's attrs and attempt count into the retry, so re-enqueueing
stays in `enqueue_missing`, the one rule for "does this unit need a new attempt".
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from harness.errors import ConfigError
from harness.files import file_lock
from harness.procs import process_start_time
from harness.tracking_uri import sqlite_path
from harness.sweep.resilient import OUTAGE, retrying_rdb_storage

HEARTBEAT_S = 10  # Optuna's heartbeat interval (RDB storages) and our journal heartbeat
GRACE_S = 60  # a RUNNING trial silent this long is dead
JOURNAL_BEAT = "harness.heartbeat"  # our heartbeat on journal files (a user attr: wall-clock seconds)
OUTCOME = "harness.outcome"
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
ACTIVE_STATES = (TrialState.RUNNING, TrialState.WAITING)
RETRYABLE_OUTCOMES = (None, "interrupted", "lease_lost")  # retried even within one invocation
ENQUEUED_PARAMS = "harness.params"  # search params a retry must reuse (user attr set at enqueue)

log = logging.getLogger("harness.sweep")
optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def _heartbeat_api() -> Iterator[None]:
    """Optuna's heartbeat has been "experimental" since 2.9; we rely on it knowingly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# -- storage ---------------------------------------------------------------------------------


def default_storage_url(output_dir: Path) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'study.db'}"


def storage_kind(url: str) -> str:
    """'sqlite', 'journal' (a file) or 'server' (PostgreSQL, MySQL: any SQLAlchemy URL)."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith("journal:") or (("://" not in url) and url.endswith((".log", ".journal", ".jsonl"))):
        return "journal"
    if "://" in url and url.split("://", 1)[0].split("+")[0] in ("postgresql", "postgres", "mysql", "mariadb"):
        return "server"
    raise ConfigError(
        f"--storage {url!r}: expected a SQLAlchemy URL (postgresql://user:pass@host/db, "
        f"mysql://..., sqlite:////abs/path/study.db) or a journal file (journal:PATH or a path "
        f"ending in .log)."
    )


def storage_file(url: str) -> Path | None:
    kind = storage_kind(url)
    if kind == "sqlite":
        return sqlite_path(url)
    if kind == "journal":
        return Path(url.removeprefix("journal:").removeprefix("//")).resolve()
    return None


def open_storage(
    url: str, create: bool = True, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S
) -> BaseStorage | None:
    """The storage at `url`; None when `create` is False and its file does not exist. RDB
    storages retry transient connection errors (harness/sweep/resilient.py)."""
    kind, path = storage_kind(url), storage_file(url)
    if path is not None and not create and not path.is_file():
        return None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "journal":
        return JournalStorage(JournalFileBackend(str(path)))
    engine = {"connect_args": {"timeout": 120}} if kind == "sqlite" else {"pool_pre_ping": True}
    with _heartbeat_api():
        return retrying_rdb_storage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=int(heartbeat_s),
            grace_period=int(grace_s),
            heartbeat_stale_trial_callback=note_stale_trial,
        )


def note_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat-stale callback: say which host's trial went silent, and when."""
    attrs = trial.user_attrs
    log.warning(
        "trial #%d (%s) on host %s sent no heartbeat within the grace period: its worker is gone; "
        "it will be retried from its last checkpoint",
        trial.number,
        attrs.get("cell_key", "?"),
        attrs.get("harness.host", "?"),
    )


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Serialise enqueue and claim on file storages (no-op on server databases)."""
    path = storage_file(url)
    if path is None:
        yield
        return
    with file_lock(path):
        yield


@dataclass
class StudyHandle:
    study: optuna.Study
    storage: BaseStorage
    study_id: int
    url: str
    grace_s: float = GRACE_S
    _ids: dict[int, int] = field(default_factory=dict)

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial `number`, through the storage's public lookup (cached)."""
        if number not in self._ids:
            self._ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return self._ids[number]

    def trial(self, number: int) -> FrozenTrial:
        return self.storage.get_trial(self.trial_id(number))


def open_study(
    url: str,
    name: str,
    direction: str = "maximize",
    create: bool = True,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
) -> StudyHandle | None:
    # Creating a fresh SQLite file's tables from two processes at once fails in one: hold the lock.
    with storage_lock(url) if create else contextlib.nullcontext():
        storage = open_storage(url, create=create, heartbeat_s=heartbeat_s, grace_s=grace_s)
        if storage is not None and create:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction=direction,
                load_if_exists=True,
                sampler=optuna.samplers.RandomSampler(),
            )
    if storage is None:
        return None
    if not create:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None
    return StudyHandle(study, storage, storage.get_study_id_from_name(name), url, grace_s)


# -- units -----------------------------------------------------------------------------------


def unit_of(trial: FrozenTrial) -> tuple[str, int] | None:
    key = trial.user_attrs.get("cell_key")
    return None if key is None else (key, int(trial.user_attrs.get("slot", 0)))


def group_units(trials: list[FrozenTrial]) -> dict[tuple[str, int], list[FrozenTrial]]:
    """unit -> its attempts (duplicates left out), oldest first."""
    units: dict[tuple[str, int], list[FrozenTrial]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        unit = unit_of(trial)
        if unit is not None and trial.user_attrs.get(OUTCOME) != "duplicate":
            units.setdefault(unit, []).append(trial)
    return units


def unit_state(attempts: list[FrozenTrial]) -> str:
    """COMPLETE, PRUNED, RUNNING, WAITING, FAIL, or PENDING (never enqueued)."""
    states = {t.state for t in attempts}
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        if state in states:
            return state.name
    return "FAIL" if attempts else "PENDING"


def representative(attempts: list[FrozenTrial]) -> FrozenTrial | None:
    """The trial that speaks for a unit: its COMPLETE/PRUNED one, else its latest attempt."""
    for trial in attempts:
        if trial.state in DONE_STATES:
            return trial
    return attempts[-1] if attempts else None


def outcome_of(trial: FrozenTrial) -> str | None:
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get(OUTCOME) or "orphaned"
    return trial.user_attrs.get(OUTCOME)


def enqueue_missing(
    handle: StudyHandle, units: list[tuple[str, int]], axes: dict[str, dict[str, str]], retry_failed: bool
) -> int:
    """Enqueue one WAITING trial for each unit that has none active and none done. A unit whose
    last attempt failed is retried only when `retry_failed` (a rerun); orphaned or interrupted
    ones always. A retry keeps the failed attempt's sampled search params (same checkpoints)."""
    with storage_lock(handle.url):
        grouped = group_units(handle.trials())
        count = 0
        for cell_key, slot in units:
            attempts = grouped.get((cell_key, slot), [])
            if unit_state(attempts) not in ("FAIL", "PENDING"):
                continue
            if attempts and not retry_failed and outcome_of(attempts[-1]) not in (*RETRYABLE_OUTCOMES, "orphaned"):
                continue
            params = dict(attempts[-1].params) if attempts else {}
            handle.study.enqueue_trial(
                params,
                user_attrs={
                    "cell_key": cell_key,
                    "slot": slot,
                    "axes": axes.get(cell_key, {}),
                    "attempt": len(attempts) + 1,
                    ENQUEUED_PARAMS: params,
                },
            )
            count += 1
        return count


# -- claiming --------------------------------------------------------------------------------


def owner_attrs() -> dict[str, Any]:
    return {
        "harness.host": socket.gethostname(),
        "harness.owner_pid": os.getpid(),
        "harness.owner_start": process_start_time(os.getpid()),
    }


def claim_next(handle: StudyHandle, units: set[tuple[str, int]] | None = None) -> FrozenTrial | None:
    """Move one WAITING trial (of `units`, if given) to RUNNING for this process, or return None.
    The storage's WAITING -> RUNNING update is atomic (it returns False to all but one claimant)."""
    owner = owner_attrs()
    with storage_lock(handle.url):
        for trial in sorted(handle.trials((TrialState.WAITING,)), key=lambda t: t.number):
            if unit_of(trial) is None or (units is not None and unit_of(trial) not in units):
                continue
            trial_id = handle.trial_id(trial.number)
            try:
                if not handle.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            heartbeat(handle, trial.number)
            for key, value in owner.items():
                handle.storage.set_trial_user_attr(trial_id, key, value)
            if is_duplicate(handle, trial):
                finish(handle, trial.number, TrialState.FAIL, attrs={OUTCOME: "duplicate"})
                continue
            return handle.trial(trial.number)
    return None


def is_duplicate(handle: StudyHandle, mine: FrozenTrial) -> bool:
    for other in handle.trials():
        if other.number == mine.number or unit_of(other) != unit_of(mine):
            continue
        if other.user_attrs.get(OUTCOME) == "duplicate":
            continue
        if other.state in DONE_STATES:
            return True
        if other.state == TrialState.RUNNING and (
            other.user_attrs.get("harness.launched") or other.number < mine.number
        ):
            return True
        if other.state == TrialState.WAITING and other.number < mine.number:
            return True
    return False


def finish(
    handle: StudyHandle, number: int, state: TrialState, value: float | None = None, attrs: dict[str, Any] | None = None
) -> bool:
    """Record attrs, then the final state through `study.tell` (a PRUNED trial's value is its last
    reported one). False when someone else already finished the trial (it was declared orphaned
    while we ran: our lease was lost)."""
    try:
        set_attrs(handle, number, attrs or {}, strict=True)
        if handle.trial(number).state.is_finished():
            return False
        handle.study.tell(number, value if state == TrialState.COMPLETE else None, state=state)
        return True
    except UpdateFinishedTrialError:
        return False


def set_attrs(handle: StudyHandle, number: int, attrs: dict[str, Any], strict: bool = False) -> None:
    """User attrs on a trial; on a finished one they are dropped (raised when `strict`)."""
    try:
        for key, value in attrs.items():
            handle.storage.set_trial_user_attr(handle.trial_id(number), key, value)
    except UpdateFinishedTrialError:
        if strict:
            raise


# -- liveness --------------------------------------------------------------------------------


def heartbeat(handle: StudyHandle, number: int) -> None:
    if isinstance(handle.storage, RDBStorage):
        handle.storage.record_heartbeat(handle.trial_id(number))
    else:
        set_attrs(handle, number, {JOURNAL_BEAT: time.time()})


def owner_is_dead(trial: FrozenTrial) -> bool:
    """True only when we can tell for sure: the owner ran on this host and is gone."""
    attrs = trial.user_attrs
    if attrs.get("harness.host") != socket.gethostname() or "harness.owner_pid" not in attrs:
        return False
    return process_start_time(int(attrs["harness.owner_pid"])) != attrs.get("harness.owner_start")


def fail_orphans(handle: StudyHandle, own: set[int]) -> int:
    """Mark RUNNING trials (other than the numbers in `own`) whose coordinator is dead as FAIL
    (no outcome attr = orphaned); returns how many."""
    before = {t.number for t in handle.trials((TrialState.RUNNING,))}
    trust_heartbeats = OUTAGE.seconds_since_outage() > handle.grace_s  # see resilient.py
    if trust_heartbeats:
        with _heartbeat_api():
            optuna.storages.fail_stale_trials(handle.study)  # RDB storages: stale Optuna heartbeat
    now = time.time()
    for trial in handle.trials((TrialState.RUNNING,)):
        if trial.number in own or unit_of(trial) is None:
            continue
        if owner_is_dead(trial) or (trust_heartbeats and is_silent(handle, trial, now)):
            with contextlib.suppress(UpdateFinishedTrialError):
                handle.storage.set_trial_state_values(handle.trial_id(trial.number), TrialState.FAIL)
    after = {t.number for t in handle.trials((TrialState.RUNNING,))}
    return len(before - after - own)


def is_silent(handle: StudyHandle, trial: FrozenTrial, now: float) -> bool:
    """Stale without Optuna's help: our journal heartbeat is older than the grace period, or the
    claim never completed (RUNNING for longer than the grace period with no owner recorded:
    its claimant lost the database between the two writes, or died there)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    if "harness.host" not in trial.user_attrs:
        return now - started > handle.grace_s
    beat = trial.user_attrs.get(JOURNAL_BEAT)
    return not isinstance(handle.storage, RDBStorage) and beat is not None and now - beat > handle.grace_s


def units_to_reap(handle: StudyHandle) -> list[tuple[str, int]]:
    """Units whose latest attempt was orphaned and that have nothing active or done."""
    found = []
    for unit, attempts in group_units(handle.trials()).items():
        if unit_state(attempts) == "FAIL" and outcome_of(attempts[-1]) == "orphaned":
            found.append(unit)
    return found
