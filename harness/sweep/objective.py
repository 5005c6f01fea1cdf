"""What a finished trial scored, and the per-cell search: sampling and pruning.

The objective is read after the trial process ends: the checkpoint picked by the selection rule
(harness.selection, by default the highest `val/len_norm_reward`, as in the paper) from the
trial's `checkpoints.json`, and the objective metric at it (`val/*` metrics from that file,
anything else, such as `eval/math500/pass_at_1`, from the trial's MLflow run).

Search trials sample within their own cell: the sampler and the pruner see an in-memory study
holding only that cell's finished trials, so a verifiable DPO cell never learns from a chat GRPO
cell, while all trials still live in the one shared study.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.errors import DataError
from harness.selection import LISTING_FILE, history_rows, negative_reward_warning, read_listing, select_from_listing
from harness.sweep.spec import ObjectiveSpec, SearchSpec

PRUNE_METRIC_DEFAULT = "val/len_norm_reward"
log = logging.getLogger("harness.sweep")


def read_run_file(trial_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((trial_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def selected_objective(
    trial_dir: Path, objective: ObjectiveSpec, client=None, run_id: str | None = None
) -> tuple[float, int]:
    """(objective value, selected step) of a finished trial."""
    listing = trial_dir / LISTING_FILE
    if not listing.is_file():
        raise DataError(f"{listing}: missing; the trial wrote no checkpoint to select from.")
    entries = read_listing(listing)
    # Only entries the trainer validated can be picked by a metric rule.
    step, _ = select_from_listing(entries, rule=objective.rule)
    warning = negative_reward_warning(history_rows(entries), objective.rule)
    if warning:
        log.warning("%s: %s", trial_dir, warning)
        if client is not None and run_id:
            client.set_tag(run_id, "harness.selection_warning", warning)
    if objective.metric.startswith("val/"):
        value = next(e for e in entries if e.step == step).metrics.get(objective.metric)
    else:
        value = client.get_run(run_id).data.metrics.get(objective.metric) if client and run_id else None
    if value is None or not math.isfinite(float(value)):
        raise DataError(
            f"{trial_dir}: objective `{objective.metric}` is {value!r} at the selected step {step} "
            f"(rule {objective.rule}); expected a finite number."
        )
    return float(value), step


def prune_metric(objective: ObjectiveSpec) -> str:
    return objective.metric if objective.metric.startswith("val/") else PRUNE_METRIC_DEFAULT


def distributions(search: SearchSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, p in search.params.items():
        if p.type == "float":
            out[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            out[name] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[name] = CategoricalDistribution(p.choices)
    return out


def cell_study(direction: str, cell_trials: list[FrozenTrial], sampler=None) -> optuna.Study:
    """An in-memory study holding one cell's finished trials."""
    study = optuna.create_study(direction=direction, sampler=sampler)
    finished = [t for t in cell_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.add_trials(finished)
    return study


def sample_params(search: SearchSpec, direction: str, cell_trials: list[FrozenTrial], number: int) -> dict[str, Any]:
    seed = search.seed + number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if search.sampler == "tpe":
            startup = min(10, max(1, search.trials_per_cell // 3))
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        else:
            sampler = optuna.samplers.RandomSampler(seed=seed)
        dists = distributions(search)
        known = [t for t in cell_trials if set(t.distributions) == set(dists)]
        return dict(cell_study(direction, known, sampler).ask(dists).params)


def should_prune(search: SearchSpec, direction: str, cell_trials: list[FrozenTrial], current: FrozenTrial) -> bool:
    if search.pruner.type == "none":
        return False
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=search.pruner.startup_trials, n_warmup_steps=search.pruner.warmup_steps
    )
    return pruner.prune(cell_study(direction, cell_trials), current)
