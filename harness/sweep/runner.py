"""The sweep runner: check the flags, open the study and the MLflow parent run, then run the
coordinator's loop (coordinator.py) until no trial is waiting or running.

    result = run_sweep(load_sweep("sweeps/tiny_grid.yaml"), jobs=2)

Rerunning the same command resumes; several coordinators may share one storage (see study.py for
why no unit runs twice).
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.sweep import records
from harness.sweep.coordinator import Coordinator, SweepResult
from harness.sweep.gpus import assign_local_gpus, trial_gpu_split
from harness.sweep.launch import make_launcher
from harness.sweep.spec import Sweep
from harness.sweep.status import ProgressLine, unit_rows
from harness.sweep.study import GRACE_S, HEARTBEAT_S, default_storage_url, open_study, storage_kind, storage_lock
from harness.tracking import sweep_tracking_uri


def local_gpus(
    sweep: Sweep, launcher: str, jobs: int, gpus_per_trial: int | None, gpus: str | None, enqueue_only: bool = False
):
    """(GPU split per trial, the node's GPU pool) for the local launcher, or None (no assignment);
    refuses --jobs x GPUs per trial beyond the node's GPUs before anything is created."""
    if launcher != "local":
        if gpus_per_trial is not None or gpus is not None:
            raise HarnessError(
                f"--gpus-per-trial / --gpus are for --launcher local; with --launcher {launcher} "
                f"a trial's GPUs come from the sweep file's `{launcher}` block (train_gpus, "
                f"generator_gpus, gpus_per_node)."
            )
        return None
    split = trial_gpu_split(sweep, gpus_per_trial, gpus)
    pool = None if enqueue_only else assign_local_gpus(split, jobs, gpus)
    return (split, pool) if pool is not None else None


def run_sweep(
    sweep: Sweep,
    jobs: int = 1,
    storage: str | None = None,
    launcher: str = "local",
    progress: bool = True,
    enqueue_only: bool = False,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
    gpus_per_trial: int | None = None,
    gpus: str | None = None,
) -> SweepResult:
    """Run (or resume) a sweep until no trial is waiting or running; see the module docstring.
    `gpus_per_trial` / `gpus`: the local launcher's GPU assignment (harness/sweep/gpus.py)."""
    url = storage or default_storage_url(sweep.output_dir)
    storage_kind(url)  # a bad URL fails before anything is created
    if jobs < 1:
        raise HarnessError(f"--jobs {jobs}: expected an integer >= 1.")
    if not 1 <= heartbeat_s < grace_s:
        raise HarnessError(
            f"--heartbeat-s {heartbeat_s} / --grace-s {grace_s}: expected 1 <= heartbeat < grace "
            f"(a trial silent for the grace period is taken over; defaults {HEARTBEAT_S} / {GRACE_S})."
        )
    runner = make_launcher(
        launcher,
        sweep.output_dir / "submitit",
        sweep.spec.submitit,
        f"harness-{sweep.name}",
        source=f"{sweep.path}: the `submitit` block",
        gpus=local_gpus(sweep, launcher, jobs, gpus_per_trial, gpus, enqueue_only),
    )
    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    handle = open_study(url, sweep.study_name, sweep.spec.objective.direction, heartbeat_s=heartbeat_s, grace_s=grace_s)
    # Every worker logs where the study's first worker did, unless told otherwise; an HTTP server
    # is waited for; a fresh SQLite store is created here, once, before any trial starts.
    client = records.client_for(sweep_tracking_uri(handle.study.user_attrs.get("mlflow_tracking_uri")))
    with storage_lock(url):
        parent = records.ensure_parent_run(client, handle.study, sweep, url)
        handle.study.set_user_attr("sweep", sweep.name)
        handle.study.set_user_attr("sweep_file", str(sweep.path.resolve()))
    line = ProgressLine(sweep.name, jobs, enabled=progress)
    coordinator = Coordinator(sweep, handle, runner, jobs, parent, client, line, heartbeat_s=heartbeat_s)
    coordinator.reconcile(retry_failed=True)
    if enqueue_only:
        coordinator.result.rows = unit_rows(sweep, handle.trials())
        return coordinator.result
    return coordinator.run()
