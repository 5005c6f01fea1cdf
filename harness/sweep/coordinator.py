"""The sweep coordinator's loop: claim waiting trials, run up to --jobs at a time, record results.

One loop on the main thread (so trials' parent-death signal is tied to a thread that lives as
long as the sweep): claim WAITING trials, start `harness train` for each (a subprocess or a
submitit job), poll them, keep their Optuna heartbeat, report validation curves for pruning,
and mark each COMPLETE / FAIL / PRUNED. runner.py opens the study and the MLflow parent run and
hands them to a `Coordinator`; several coordinators may share one storage (see study.py for why
no unit runs twice).
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from harness.errors import REQUEUE_EXIT_CODE, HarnessError
from harness.sweep import records
from harness.sweep.baseline import run_seed_baseline
from harness.sweep.launch import child_env
from harness.sweep.objective import (
    distributions,
    prune_metric,
    read_run_file,
    sample_params,
    selected_objective,
    should_prune,
)
from harness.sweep.spec import Cell, Sweep, search_overrides
from harness.sweep.grid import show_value
from harness.sweep.trial import Running, describe_exit, log_tail, prepare_trial_dir, trial_command, trial_dir_of
from harness.sweep.status import ProgressLine, counts, durations, unit_rows
from harness.sweep.study import (
    ENQUEUED_PARAMS,
    HEARTBEAT_S,
    OUTCOME,
    StudyHandle,
    claim_next,
    enqueue_missing,
    fail_orphans,
    finish,
    group_units,
    heartbeat,
    set_attrs,
    unit_of,
    unit_state,
    units_to_reap,
)

log = logging.getLogger("harness.sweep")
POLL_S = 0.5
IDLE_POLL_S = 2.0  # standing by for other workers' trials
RECONCILE_S = 15.0
PRUNE_POLL_S = 5.0


@dataclass
class SweepResult:
    completed: int = 0
    failed: int = 0
    pruned: int = 0
    interrupted: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if any(str(r["state"]).startswith("FAIL") for r in self.rows) else 0


class Coordinator:
    def __init__(
        self,
        sweep: Sweep,
        handle: StudyHandle,
        launcher,
        jobs: int,
        parent_run_id: str,
        client,
        progress: ProgressLine,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.sweep, self.handle, self.launcher, self.jobs = sweep, handle, launcher, jobs
        self.parent_run_id, self.client, self.progress = parent_run_id, client, progress
        self.env = child_env(client.tracking_uri)
        self.running: dict[int, Running] = {}
        self.result = SweepResult()
        self.stop_signal: int | None = None
        self.heartbeat_s, self.waiting_noted = heartbeat_s, False
        self.units = [(c.key, s) for c in sweep.cells for s in range(sweep.slots)]
        self.axes = {c.key: {a: show_value(a, v) for a, v in c.axes.items()} for c in sweep.cells}

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> SweepResult:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        last_beat = last_reconcile = time.monotonic()  # run_sweep has just reconciled
        last_count = 0.0
        reconcile_s = min(RECONCILE_S, max(1.0, self.handle.grace_s / 3))  # orphans found soon after grace
        try:
            while self.stop_signal is None:
                for item in list(self.running.values()):
                    code = item.handle.poll()
                    if code is not None:
                        self.complete(item, code)
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_s:
                    self.beat()
                    last_beat = now
                if now - last_reconcile >= reconcile_s:
                    self.reconcile(retry_failed=False)
                    last_reconcile = now
                self.check_pruning()
                self.fill_slots()
                if not self.running and not self.running_elsewhere():
                    break
                if now - last_count >= 2.0:
                    self.show_progress()
                    last_count = now
                time.sleep(POLL_S if self.running else IDLE_POLL_S)
            if self.stop_signal is not None:
                self.interrupt()
            elif self.sweep.spec.seed_baseline:
                self.seed_baseline()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.finalize()
        return self.result

    def seed_baseline(self) -> None:
        """The seed model's scores (harness/sweep/baseline.py); its failure fails no trial."""
        try:
            run_id = run_seed_baseline(
                self.sweep,
                self.client,
                self.handle.url,
                self.parent_run_id,
                self.launcher,
                self.env,
                should_stop=lambda: self.stop_signal is not None,
            )
        except Exception as exc:  # noqa: BLE001 - reported, and the trials' results stand
            self.progress.note(
                f"the seed-model baseline failed ({type(exc).__name__}: {exc}); rerun the sweep command to retry it"
            )
            return
        if run_id:
            self.progress.note(f"seed-model baseline logged (MLflow run {run_id})")

    def running_elsewhere(self) -> int:
        """Trials of this sweep running on other workers. An idle worker stays while there are
        any: if their worker dies, this one takes them over once their heartbeat goes stale."""
        mine = set(self.units)
        others = [t for t in self.handle.trials((TrialState.RUNNING,)) if unit_of(t) in mine]
        if others and not self.waiting_noted:
            hosts = sorted({str(t.user_attrs.get("harness.host", "?")) for t in others})
            self.progress.note(
                f"nothing left to claim; standing by while {len(others)} trial(s) run on "
                f"{', '.join(hosts)} (any whose worker dies is taken over here)"
            )
        self.waiting_noted = bool(others)
        return len(others)

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def fill_slots(self) -> None:
        while len(self.running) < self.jobs and self.stop_signal is None:
            trial = claim_next(self.handle, set(self.units))
            if trial is None:
                return
            try:
                self.start(trial)
            except Exception as exc:  # e.g. the output folder is not writable: record, go on
                log.error("could not start trial %d: %s", trial.number, exc)
                finish(
                    self.handle,
                    trial.number,
                    TrialState.FAIL,
                    attrs={OUTCOME: "failed", "harness.error": f"launch failed: {exc}"},
                )

    def show_progress(self, force: bool = False) -> None:
        trials = self.handle.trials()
        self.progress.update(counts(self.sweep, trials), durations(trials), force=force)

    # -- one trial ---------------------------------------------------------------------------
    def start(self, trial: FrozenTrial) -> None:
        cell_key, slot = unit_of(trial)
        cell = self.sweep.cell(cell_key)
        trial_dir = trial_dir_of(self.sweep, cell_key, slot)
        prepare_trial_dir(trial_dir, cell, self.client.tracking_uri)
        params = self.search_params(trial, cell)
        command = trial_command(
            self.sweep,
            cell,
            slot,
            trial.number,
            search_overrides(params),
            trial_dir,
            self.parent_run_id,
            resume=(trial_dir / "run.json").is_file(),
        )
        log_path = trial_dir / "trial.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "a") as handle:
            handle.write(
                f"\n===== harness sweep {self.sweep.name}: trial #{trial.number}, attempt "
                f"{trial.user_attrs.get('attempt', 1)}, {datetime.now().isoformat(timespec='seconds')} =====\n"
                f"{shlex.join(command)}\n"
            )
        set_attrs(
            self.handle,
            trial.number,
            {
                "harness.launched": True,
                "output_dir": str(trial_dir),
                "log_path": str(log_path),
                "launcher": self.launcher.name,
            },
        )
        process = self.launcher.start(command, self.env, str(Path.cwd()), log_path, trial_dir / "trial.pid")
        set_attrs(self.handle, trial.number, {"harness.job_id": process.ident})
        self.running[trial.number] = Running(trial, cell, slot, trial_dir, log_path, offset, process)
        log.debug("started trial #%d (%s slot %d) as %s", trial.number, cell_key, slot, process.ident)

    def search_params(self, trial: FrozenTrial, cell: Cell) -> dict[str, Any]:
        search = self.sweep.spec.search
        if search is None or not search.params:
            return {}
        fixed = trial.user_attrs.get(ENQUEUED_PARAMS) or {}  # a retry reuses its first attempt's
        cell_trials = [t for t in self.handle.trials() if unit_of(t) and unit_of(t)[0] == cell.key]
        params = (
            fixed
            if set(fixed) == set(search.params)
            else sample_params(search, self.sweep.spec.objective.direction, cell_trials, trial.number)
        )
        for name, dist in distributions(search).items():
            self.handle.storage.set_trial_param(
                self.handle.trial_id(trial.number), name, dist.to_internal_repr(params[name]), dist
            )
        return {name: params[name] for name in search.params}

    def complete(self, item: Running, code: int) -> None:
        del self.running[item.number]
        item.run_id = item.run_id or read_run_file(item.trial_dir).get("run_id")
        attrs: dict[str, Any] = {
            "exit_code": code,
            "duration_s": round(time.monotonic() - item.started, 1),
            "mlflow_run_id": item.run_id,
        }
        search = self.sweep.spec.search
        if item.run_id and search is not None and search.trials_per_cell > 1:
            # The whole validation curve, so the pruner can compare later trials with this one.
            self.report_curve(item, prune_metric(self.sweep.spec.objective))
        if code == 0:
            try:
                value, step = selected_objective(item.trial_dir, self.sweep.spec.objective, self.client, item.run_id)
            except (HarnessError, ValueError, KeyError, StopIteration) as exc:
                return self.fail(item, attrs, f"no objective: {exc}")
            if finish(
                self.handle,
                item.number,
                TrialState.COMPLETE,
                value,
                {**attrs, OUTCOME: "completed", "selected_step": step},
            ):
                self.result.completed += 1
                records.tag_run(
                    self.client,
                    item.run_id,
                    {"harness.trial": item.trial.number, "harness.objective": value, "harness.selected_step": step},
                )
            return None
        if code == REQUEUE_EXIT_CODE and self.stop_signal is None:
            return self.requeue(item)
        return self.fail(item, attrs, describe_exit(code))

    def requeue(self, item: Running) -> None:
        """The trial was preempted (SIGTERM/SIGUSR1: a checkpoint, then exit 75): start it again at
        once; its run.json makes the new attempt `--resume` into the same MLflow run."""
        requeues = int(item.trial.user_attrs.get("harness.requeues", 0)) + 1
        set_attrs(self.handle, item.number, {"harness.requeues": requeues})
        self.progress.note(
            f"trial #{item.trial.number} ({item.cell.key}) was preempted after a checkpoint; "
            f"requeued (requeue {requeues}), it resumes into MLflow run {item.run_id}"
        )
        self.start(self.handle.trial(item.number))

    def fail(self, item: Running, attrs: dict[str, Any], reason: str) -> None:
        tail = log_tail(item.log_path, item.log_offset)
        finish(
            self.handle,
            item.number,
            TrialState.FAIL,
            attrs={**attrs, OUTCOME: "failed", "harness.error": reason, "log_tail": tail},
        )
        self.result.failed += 1
        label = f"{item.cell.key}-{item.slot}-trial{item.trial.number}"
        records.record_failure(self.client, item.run_id, self.parent_run_id, label, reason, tail, item.log_path)
        self.progress.note(f"trial #{item.trial.number} ({item.cell.key}) failed: {reason}; log {item.log_path}")

    # -- liveness, orphans, pruning ----------------------------------------------------------
    def beat(self) -> None:
        for item in list(self.running.values()):
            heartbeat(self.handle, item.number)
            self.note_run_id(item)
            if self.handle.trial(item.number).state != TrialState.RUNNING:
                # Another worker declared us dead (a stall longer than the grace period) and may
                # already be retrying this unit: stop our copy.
                log.warning("trial #%d was taken over by another worker; stopping it here", item.trial.number)
                item.handle.stop()
                del self.running[item.number]

    def note_run_id(self, item: Running) -> None:
        """Record the trial's MLflow run id as soon as `harness train` has written run.json."""
        if item.run_id is None:
            item.run_id = read_run_file(item.trial_dir).get("run_id")
            if item.run_id:
                set_attrs(self.handle, item.number, {"mlflow_run_id": item.run_id})

    def reconcile(self, retry_failed: bool) -> None:
        """Fail trials whose coordinator died, stop their leftover processes, enqueue the units
        that need a (new) attempt."""
        fail_orphans(self.handle, set(self.running))
        grouped = group_units(self.handle.trials())
        mine = set(self.units)
        for unit in units_to_reap(self.handle):
            if unit in mine:
                last = grouped[unit][-1]
                if self.launcher.reap(trial_dir_of(self.sweep, *unit) / "trial.pid", last.user_attrs):
                    log.info("stopped a leftover process of trial #%d (%s)", last.number, unit[0])
        added = enqueue_missing(self.handle, self.units, self.axes, retry_failed=retry_failed)
        if added:
            log.info("enqueued %d trial(s)", added)

    def check_pruning(self) -> None:
        search = self.sweep.spec.search
        if search is None or search.pruner.type == "none" or search.trials_per_cell < 2:
            return
        now = time.monotonic()
        metric = prune_metric(self.sweep.spec.objective)
        for item in list(self.running.values()):
            if now - item.last_prune_check < PRUNE_POLL_S:
                continue
            item.last_prune_check = now
            self.note_run_id(item)
            if item.run_id and self.report_curve(item, metric):
                self.maybe_prune(item)

    def report_curve(self, item: Running, metric: str) -> bool:
        history = records.best_effort("read the validation curve", self.client.get_metric_history, item.run_id, metric)
        fresh = [m for m in history or [] if m.step not in item.reported and m.step > 0 and math.isfinite(m.value)]
        for point in fresh:
            self.handle.storage.set_trial_intermediate_value(self.handle.trial_id(item.number), point.step, point.value)
            item.reported.add(point.step)
        return bool(fresh)

    def maybe_prune(self, item: Running) -> None:
        cell_trials = [t for t in self.handle.trials() if unit_of(t) and unit_of(t)[0] == item.cell.key]
        current = self.handle.trial(item.number)
        if not should_prune(self.sweep.spec.search, self.sweep.spec.objective.direction, cell_trials, current):
            return
        item.handle.stop()
        del self.running[item.number]
        if finish(
            self.handle,
            item.number,
            TrialState.PRUNED,
            None,
            {OUTCOME: "pruned", "mlflow_run_id": item.run_id, "pruned_at_step": current.last_step},
        ):
            self.result.pruned += 1
            records.tag_run(self.client, item.run_id, {"harness.trial": item.trial.number, "harness.pruned": "true"})

    # -- the end -----------------------------------------------------------------------------
    def interrupt(self) -> None:
        self.result.interrupted = True
        self.progress.note(f"signal {self.stop_signal}: stopping {len(self.running)} running trial(s)")
        for item in list(self.running.values()):
            item.handle.stop()
            self.note_run_id(item)
            finish(self.handle, item.number, TrialState.FAIL, attrs={OUTCOME: "interrupted"})
        self.running.clear()

    def finalize(self) -> None:
        self.show_progress(force=True)
        self.progress.close()
        trials = self.handle.trials()
        self.result.rows = unit_rows(self.sweep, trials)
        records.log_summary(self.client, self.parent_run_id, self.result.rows, self.sweep.output_dir)
        states = [unit_state(a) for u, a in group_units(trials).items() if u in set(self.units)]
        if self.result.interrupted and "RUNNING" not in states:
            records.finish_parent(self.client, self.parent_run_id, "KILLED")
        elif len(states) == len(self.units) and all(s in ("COMPLETE", "PRUNED", "FAIL") for s in states):
            records.finish_parent(self.client, self.parent_run_id, "FAILED" if "FAIL" in states else "FINISHED")
