"""The rules under the multi-host sweep, each on its own, against a real PostgreSQL server
(tests/servers.py): a database restart is ridden out, heartbeats are not judged right after one,
a silent worker's trial is declared dead after the grace period; and the tracking-URI rules."""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState

from harness.errors import HarnessError
from harness.sweep import resilient
from harness.sweep.study import claim_next, enqueue_missing, fail_orphans, heartbeat, open_study
from harness.tracking import check_artifact_location, sweep_tracking_uri
from servers import postgres  # noqa: F401 (fixture)

GRACE_S = 3


def test_study_calls_survive_a_restart_and_heartbeats_are_not_judged_right_after_it(postgres, monkeypatch):
    if not postgres.restartable:
        pytest.skip("HARNESS_TEST_POSTGRES_URL names an external server: it is not restarted")
    url = postgres.create_database("units")
    owner = open_study(url, "units", heartbeat_s=1, grace_s=GRACE_S)
    enqueue_missing(owner, [("cell0", 0)], {}, retry_failed=True)
    trial = claim_next(owner)
    monkeypatch.setattr(resilient, "OUTAGE", resilient.Outage())
    monkeypatch.setattr("harness.sweep.study.OUTAGE", resilient.OUTAGE)

    import threading

    restart = threading.Thread(target=postgres.restart, kwargs={"down_s": GRACE_S + 1})
    restart.start()
    time.sleep(0.5)
    watcher = open_study(url, "units", heartbeat_s=1, grace_s=GRACE_S)  # connects during the outage
    restart.join()
    # Nobody could beat for longer than the grace period, yet nothing is declared dead right away...
    assert fail_orphans(watcher, own=set()) == 0
    assert resilient.OUTAGE.seconds_since_outage() < GRACE_S
    # ... and once a grace period has passed with the owner beating again, still nothing is.
    deadline = time.monotonic() + GRACE_S + 1
    while time.monotonic() < deadline:
        heartbeat(owner, trial.number)
        time.sleep(0.5)
    assert fail_orphans(watcher, own=set()) == 0
    # The owner goes silent: after the grace period its trial is orphaned (FAIL, no outcome attr).
    time.sleep(GRACE_S + 1.5)
    assert fail_orphans(watcher, own=set()) == 1
    orphan = watcher.trial(trial.number)
    assert orphan.state == TrialState.FAIL and "harness.outcome" not in orphan.user_attrs


def test_a_connection_dropped_inside_a_transaction_is_retried_on_a_fresh_session(postgres, monkeypatch):
    """The server terminates the storage's connection mid-transaction (what a restart does to a
    worker that is querying): the session is left with an invalid transaction, and Optuna's next
    query on it raises PendingRollbackError. Seen on a worker during the multi-host test's
    restart; it must be retried like any lost connection, not crash the worker."""
    from sqlalchemy import text

    monkeypatch.setattr(resilient, "OUTAGE", resilient.Outage())
    url = postgres.create_database("dropped")
    handle = open_study(url, "dropped")
    storage = resilient.retrying_rdb_storage(url)
    session = storage.scoped_session()
    session.execute(text("SELECT 1"))  # a transaction is open on this thread's session
    database = url.rsplit("/", 1)[1]
    postgres.execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' "
        "AND pid <> pg_backend_pid()"
    )
    with pytest.raises(Exception):
        session.execute(text("SELECT 1"))  # the drop is noticed; the transaction is now invalid
    studies = storage.get_all_studies()  # first try: PendingRollbackError; the retry, on a new session, works
    assert [s.study_name for s in studies] == ["dropped"] and handle is not None
    assert resilient.OUTAGE.ended is not None  # it went through the retry path


def test_a_new_sqlite_store_is_seeded_from_a_migrated_template_and_behaves_like_a_new_one(tmp_path, monkeypatch):
    import mlflow
    from harness.tracking import tracking_client

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    first = tracking_client(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")  # builds the template
    assert (tmp_path / "cache" / "mlflow" / f"empty-{mlflow.__version__}.db").is_file()
    began = time.monotonic()
    second = tracking_client(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")  # a copy of it
    print(f"seeded store opened in {time.monotonic() - began:.2f} s")
    for client in (first, second):  # MLflow made its Default experiment at this process's paths
        [default] = client.search_experiments()
        assert default.name == "Default" and default.artifact_location == str(tmp_path / "mlruns" / "0")
    run = second.create_run(second.create_experiment("seeded"))
    second.log_metric(run.info.run_id, "m", 1.5, step=3)
    assert [(m.step, m.value) for m in second.get_metric_history(run.info.run_id, "m")] == [(3, 1.5)]
    again = tracking_client(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")  # an existing store is left alone
    assert {e.name for e in again.search_experiments()} == {"Default", "seeded"}


def test_a_non_connection_error_is_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("not about the connection")

    with pytest.raises(ValueError):
        resilient.call_with_retry("probe", broken)
    assert calls == [1]


def test_a_worker_without_a_tracking_uri_logs_where_its_study_does(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert sweep_tracking_uri("http://mlflow.internal:5000") == "http://mlflow.internal:5000"
    assert sweep_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://other:5000")
    assert sweep_tracking_uri("http://mlflow.internal:5000") == "http://other:5000"  # explicit wins


def test_a_tracking_server_without_served_artifacts_is_refused():
    check_artifact_location("http://mlflow:5000", "mlflow-artifacts:/1/abc/artifacts")
    check_artifact_location("http://mlflow:5000", "s3://bucket/1/abc/artifacts")
    check_artifact_location("sqlite:////tmp/mlflow.db", "/tmp/mlruns/1/abc/artifacts")  # one machine: fine
    for local in ("/srv/mlruns/1/abc/artifacts", "file:///srv/mlruns/1/abc/artifacts"):
        with pytest.raises(HarnessError, match="--serve-artifacts"):
            check_artifact_location("http://mlflow:5000", local)
