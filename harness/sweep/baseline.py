"""The seed-model baseline of a sweep: the starting checkpoint, evaluated once.

Every results table of the paper starts with the seed model's row. After its trials, a sweep
evaluates the cells' starting policy on the union of the suites its cells evaluate, with the
cells' own eval settings, and logs it as one more child of the sweep run: tags `method=seed`,
`sync_every=-`, `ref_sync_every=-`, `task_mix=-`, metrics `eval/<suite>/<metric>`. Reruns and
concurrent sweep processes find it and skip it (the check and the claim hold the storage lock).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.sweep.spec import Sweep
from harness.sweep.study import storage_lock

log = logging.getLogger("harness.sweep")
SEED_TAGS = {"harness.kind": "train", "method": "seed", "sync_every": "-", "ref_sync_every": "-",
             "task_mix": "-"}
STALE_AFTER_S = 3600  # a RUNNING baseline this old was left by a dead process: redo it


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
        tags = {**SEED_TAGS, "seed": "0", "mlflow.parentRunId": parent_run_id,
                "harness.sweep": sweep.name, "harness.study": sweep.study_name}
        return client.create_run(experiment_id, run_name="seed-model", tags=tags).info.run_id


def run_seed_baseline(sweep: Sweep, client, storage_url: str, parent_run_id: str) -> str | None:
    """Evaluate the seed policy once per sweep (see the module docstring); returns the run id."""
    plan = baseline_plan(sweep)
    if plan is None:
        return None
    run_id = claim(client, sweep, storage_url, parent_run_id)
    if run_id is None:
        return None
    cfg = plan.config
    log.info("evaluating the seed model (%s) on %s for the tables' first row", cfg.model.policy, ", ".join(plan.suites))
    out_dir = sweep.output_dir / "seed_baseline"
    try:
        results = evaluate_seed(cfg, plan.suites, out_dir)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    from evaluators.run import log_results

    client.log_param(run_id, "model.policy", cfg.model.policy)
    client.log_param(run_id, "eval.suites", ",".join(plan.suites))
    log_results(client, run_id, "eval", results, out_dir)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def evaluate_seed(cfg: RunConfig, suites: list[str], out_dir: Path) -> dict[str, dict[str, float]]:
    import torch

    from evaluators.run import evaluate_checkpoint
    from harness.runner import eval_options
    from harness.trainer import resolve_paths

    if cfg.model.cpu_threads:
        torch.set_num_threads(cfg.model.cpu_threads)
    policy_path, _ = resolve_paths(cfg)
    return evaluate_checkpoint(policy_path, suites, cfg.eval.samples, out_dir=out_dir, show_progress=False,
                               **eval_options(cfg))
