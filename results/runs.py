"""MLflow runs to one frame: a row per training run (and seed baseline), axes and latest metrics.

    runs = runs_frame(client, experiment_ids)     # META_COLUMNS, then metrics in a stable order

The conventions read are docs/DESIGN.md's: tags `harness.kind` (`sweep` on a sweep's parent,
`train` on trials), axis tags `method`, `sync_every`, `ref_sync_every`, `task_mix`, `seed`; a cell is
those axes plus `variant`, the other config params that set its runs apart (`cell_variants`).
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from results.labels import AXES, NO_TASK_MIX, mix_sort_key, row_order_key, seed_sort_key
from results.metrics import metric_column_order
from results.store import search_all_runs

CELL_KEYS = ("sweep", "method", "sync_every", "ref_sync_every", "task_mix", "variant")
META_COLUMNS = (
    "run_id",
    "run_name",
    "experiment_id",
    "parent_run_id",
    "sweep",
    "status",
    *AXES,
    "variant",
    "cell_key",
    "start_time",
    "duration_s",
    "error",
)
# Params that say where and how a run ran, not what it trained: never a reason for a row of its own.
PLACEMENT_PARAMS = (
    "output_dir",
    "tracking.",
    "model.device",
    "model.cpu_threads",
    "rollout.devices",
    "rollout.snapshot_dir",
    "rollout.worker_",
    "rollout.queue_depth",
    "rollout.batch_size",
    "train.collective_timeout_s",
)
ERROR_CHARS = 400  # of the `harness.error` tag (a failed trial's log tail), for the table


def is_training_run(run: Run) -> bool:
    """Trials and the seed baseline; sweep parents and unrelated runs are not leaderboard rows."""
    kind = run.data.tags.get("harness.kind")
    if kind == "sweep":
        return False
    return kind == "train" or "method" in run.data.tags or "method" in run.data.params


def axis_value(run: Run, name: str) -> str:
    """Tags win over params (the sweep tags cells); both are strings in MLflow."""
    value = run.data.tags.get(name, run.data.params.get(name))
    return "" if value is None else str(value)


def run_row(run: Run, sweep_of_parent: dict[str, str], experiment_sweep: dict[str, str]) -> dict:
    info, tags = run.info, run.data.tags
    parent = tags.get("mlflow.parentRunId")
    end_ms = info.end_time or int(time.time() * 1000)
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name or tags.get("mlflow.runName") or info.run_id[:8],
        "experiment_id": info.experiment_id,
        "parent_run_id": parent,
        "sweep": sweep_of_parent.get(parent or "") or experiment_sweep.get(info.experiment_id, ""),
        "status": info.status,
        **{axis: axis_value(run, axis) for axis in AXES},
        "cell_key": tags.get("cell_key", ""),
        "start_time": pd.to_datetime(info.start_time, unit="ms") if info.start_time else pd.NaT,
        "duration_s": (end_ms - info.start_time) / 1000.0 if info.start_time else math.nan,
        "error": tags.get("harness.error", "")[-ERROR_CHARS:],
    }
    row.update(run.data.metrics)  # latest value of every metric, eval and step-wise alike
    return row


def cell_variants(frame: pd.DataFrame, params: dict[str, dict[str, str]]) -> pd.Series:
    """Each run's `variant`: "key=value, ..." of the config params that differ between runs of one
    (sweep, method, s, ref s, task mix), so an ablation (`grpo.entropy_coef`) is a cell of its own.
    Not counted: the axes, PLACEMENT_PARAMS, params some of those runs did not log, and params that
    differ between runs of one sweep cell (`cell_key` tag: a search's trials, whose best per seed
    stands for the cell)."""
    variants = pd.Series("", index=frame.index, dtype=object)
    axes = [k for k in CELL_KEYS if k != "variant"]
    for _, group in frame.groupby(axes, sort=False, dropna=False):
        mine = {i: params.get(frame.at[i, "run_id"]) or {} for i in group.index}
        logged = [set(p) for p in mine.values() if p]  # a key some runs lack (an older run) tells nothing
        keys = (
            {k for k in set.intersection(*logged) if k not in AXES and not k.startswith(PLACEMENT_PARAMS)}
            if logged
            else set()
        )
        searched = {
            k
            for _, trials in group.groupby("cell_key")
            if len(trials) > 1 and trials["cell_key"].iloc[0]
            for k in keys
            if len({mine[i].get(k) for i in trials.index if mine[i]}) > 1
        }
        differing = sorted(k for k in keys - searched if len({p[k] for p in mine.values() if p}) > 1)
        for i, p in mine.items():
            variants[i] = ", ".join(f"{k}={p[k]}" for k in differing) if p else ""
    return variants


def runs_frame(client: MlflowClient, experiment_ids: Iterable[str], page_size: int = 1000) -> pd.DataFrame:
    """One row per training run (and seed baseline) of the given experiments.

    Columns: META_COLUMNS (axes as strings, as logged; `variant` see cell_variants; `error` = the end of a failed trial's
    `harness.error` tag), then `selected_step`, every `eval/*` and
    `eval_final/*` metric and the latest value of each step-wise metric. Missing metrics are NaN.
    Rows are in paper order within each sweep and task mix.
    """
    runs = search_all_runs(client, experiment_ids, page_size=page_size)
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "sweep"]
    sweep_of_parent = {p.info.run_id: p.data.tags.get("harness.sweep", "") for p in parents}
    experiment_sweep = experiment_sweep_names(client, {r.info.experiment_id for r in runs}, parents)
    rows = [run_row(r, sweep_of_parent, experiment_sweep) for r in runs if is_training_run(r)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(META_COLUMNS))
    frame["variant"] = cell_variants(frame, {r.info.run_id: dict(r.data.params) for r in runs})
    metrics = metric_column_order(c for c in frame.columns if c not in META_COLUMNS)
    frame = frame[list(META_COLUMNS) + metrics]
    order = frame.apply(
        lambda r: (
            r["sweep"],
            mix_sort_key(r["task_mix"]),
            row_order_key(r["method"], r["sync_every"]),
            r["ref_sync_every"],
            seed_sort_key(r["seed"]),
            r["run_name"],
        ),
        axis=1,
    )
    return frame.iloc[sorted(range(len(frame)), key=lambda i: order.iloc[i])].reset_index(drop=True)


def experiment_sweep_names(client: MlflowClient, experiment_ids: set[str], parents: list[Run]) -> dict[str, str]:
    """Experiment id -> sweep name: its only sweep parent's tag, else the experiment's name."""
    names = {}
    for eid in experiment_ids:
        tagged = {p.data.tags.get("harness.sweep") for p in parents if p.info.experiment_id == eid}
        tagged.discard(None)
        names[eid] = tagged.pop() if len(tagged) == 1 else client.get_experiment(eid).name
    return names


def task_mixes(frame: pd.DataFrame) -> list[str]:
    """The task mixes trained on (the seed baseline's "-" is not one)."""
    mixes = frame.loc[frame["method"] != "seed", "task_mix"].dropna().astype(str)
    return sorted((m for m in mixes.unique() if m not in NO_TASK_MIX), key=mix_sort_key)


def with_seed_rows(frame: pd.DataFrame, task_mix: str) -> pd.DataFrame:
    """The runs of one task mix, plus seed baselines that belong to no mix (they fit every table)."""
    is_seed = frame["method"] == "seed"
    mine = frame["task_mix"] == task_mix
    shared = is_seed & frame["task_mix"].isin(NO_TASK_MIX)
    return frame[mine | shared].assign(task_mix=task_mix)
