"""The seed-model baseline of a sweep: the starting checkpoint, evaluated once.

Every results table of the paper starts with the seed model's row. After its trials, a sweep
evaluates the cells' starting policy on the union of the suites its cells evaluate, with the
cells' own eval settings, and logs it as one more child of the sweep run: tags `method=seed`,
`sync_every=-`, `ref_sync_every=-`, `task_mix=-`, metrics `eval/<suite>/<metric>`. Reruns and
concurrent sweep processes find it and skip it (the check and the claim hold the storage lock).

The evaluation is a process of its own, `harness eval POLICY --config CONFIG --log-run RUN_ID`,
started by the sweep's launcher like a trial (a Slurm job under `--launcher submitit`), so the
coordinator never loads a model: this package imports neither the trainer nor the evaluators.
Its output goes to `<output_dir>/seed_baseline/eval.log`.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.sweep.spec import Sweep
from harness.sweep.study import storage_lock
from harness.tracking import atomic_write_text

log = logging.getLogger("harness.sweep")
SEED_TAGS = {"harness.kind": "train", "method": "seed", "sync_every": "-", "ref_sync_every": "-", "task_mix": "-"}
STALE_AFTER_S = 3600  # a RUNNING baseline this old was left by a dead process: redo it
POLL_S = 0.5


@dataclass(frozen=True)
class BaselinePlan:
    config: RunConfig  # model and eval settings (the first cell's: cells differ only in training)
    suites: list[str]


def baseline_plan(sweep: Sweep) -> BaselinePlan | None:
    """What the baseline evaluates, or None when no cell evaluates anything or cells start from
    different policies (then there is no single seed row)."""
    suites: list[str] = []
    for cell in sweep.cells:
        suites += [s for s in cell.config.eval.suites if s not in suites]
    policies = {cell.config.model.policy for cell in sweep.cells}
    if not suites or len(policies) != 1:
        return None
    return BaselinePlan(sweep.cells[0].config, suites)


def find_baseline(client, experiment_id: str, parent_run_id: str) -> list:
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.method = 'seed'"
    return client.search_runs([experiment_id], filter_string=query)


def claim(client, sweep: Sweep, storage_url: str, parent_run_id: str) -> str | None:
    """Create the baseline's run unless one is done or in progress; returns its id, or None."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    with storage_lock(storage_url):
        for run in find_baseline(client, experiment_id, parent_run_id):
            age_s = time.time() - run.info.start_time / 1000
            if run.info.status == "FINISHED" or (run.info.status == "RUNNING" and age_s < STALE_AFTER_S):
                return None
        tags = {
            **SEED_TAGS,
            "seed": "0",
            "mlflow.parentRunId": parent_run_id,
            "harness.sweep": sweep.name,
            "harness.study": sweep.study_name,
        }
        return client.create_run(experiment_id, run_name="seed-model", tags=tags).info.run_id


def eval_command(plan: BaselinePlan, run_id: str, out_dir: Path) -> list[str]:
    """`harness eval POLICY --config CONFIG --log-run RUN_ID --out DIR`, the config written alongside:
    the eval process takes the cells' eval settings from it (harness/eval_config.py)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.yaml"
    cfg = plan.config.model_copy(update={"eval": plan.config.eval.model_copy(update={"suites": plan.suites})})
    atomic_write_text(config_path, cfg.to_yaml())
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "eval",
        cfg.model.policy,
        "--config",
        str(config_path),
        "--log-run",
        run_id,
        "--out",
        str(out_dir),
    ]


def run_seed_baseline(
    sweep: Sweep,
    client,
    storage_url: str,
    parent_run_id: str,
    launcher,
    env: dict[str, str],
    should_stop: Callable[[], bool] = lambda: False,
) -> str | None:
    """Evaluate the seed policy once per sweep (see the module docstring) as a `harness eval`
    process started by the sweep's launcher; returns the run id."""
    plan = baseline_plan(sweep)
    if plan is None:
        return None
    run_id = claim(client, sweep, storage_url, parent_run_id)
    if run_id is None:
        return None
    log.info(
        "evaluating the seed model (%s) on %s for the tables' first row",
        plan.config.model.policy,
        ", ".join(plan.suites),
    )
    out_dir = sweep.output_dir / "seed_baseline"
    status = "FAILED"
    try:
        client.log_param(run_id, "model.policy", plan.config.model.policy)
        client.log_param(run_id, "eval.suites", ",".join(plan.suites))
        command = eval_command(plan, run_id, out_dir)
        log_path = out_dir / "eval.log"
        with open(log_path, "a") as handle:
            handle.write(f"\n===== harness sweep {sweep.name}: seed-model baseline =====\n{shlex.join(command)}\n")
        process = launcher.start(command, env, str(Path.cwd()), log_path, out_dir / "eval.pid")
        code = wait(process, should_stop)
        if code is None:
            status = "KILLED"
            raise HarnessError("the seed-model baseline was interrupted")
        if code != 0:
            raise HarnessError(f"`harness eval` exited with code {code}; see {log_path}")
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    return run_id


def wait(process, should_stop: Callable[[], bool]) -> int | None:
    """The process's exit code; None when stopped because the sweep was interrupted."""
    while True:
        code = process.poll()
        if code is not None:
            return code
        if should_stop():
            process.stop()
            return None
        time.sleep(POLL_S)
