"""The runs of one sweep that count, and their histories: what `harness report` analyses.

    results = load_sweep_results(tracking_uri, experiment, sweep, objective)

Which runs count: finished training runs of the sweep (its `harness.sweep` tag when the
experiment holds several sweeps); failed, running, killed and pruned trials are listed in the
notes and left out. When a cell has several runs for one seed (search trials, or a rerun), the one
with the best objective at its selected step stands for that seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.errors import HarnessError
from results.artifacts import checkpoint_steps, histories, quiet_downloads
from results.errors import TrackingUnavailable
from results.labels import cell_label, row_order_key
from results.metrics import lc_unidentifiable, metric_name
from results.runs import CELL_KEYS, runs_frame, task_mixes
from results.store import connect, search_all_runs

CURVES = {  # step-wise validation metric -> axis label; one figure each
    "val/reward": "validation reward",
    "val/len_norm_reward": "length-normalised validation reward",
    "val/entropy": "validation entropy (nats/token)",
    "val/response_len": "validation response length (tokens)",
}
TRUTH_CURVE = "val/quality"  # a task's hidden ground truth on the validation prompts, where it has one
PHASES = ("generate", "score", "train", "sync")
TIME_KEYS = tuple(f"time/{phase}_s" for phase in PHASES)
# How long the trainer waited for rollouts: all of `time/generate_s` when it generates itself (colocated),
# less when a worker generated them ahead (worker placement). Runs from before it was logged lack it.
WAIT_KEY = "time/generate_wait_s"
DEFAULT_OBJECTIVE = ("val/len_norm_reward", "maximize")


@dataclass
class Cell:
    """One (method, s, reference sync, task mix, variant) cell and the runs (one per seed) standing for it."""

    task_mix: str
    method: str
    sync_every: str
    ref_sync_every: str
    label: str
    runs: pd.DataFrame
    variant: str = ""


@dataclass
class ReportData:
    tracking_uri: str
    experiment: str
    experiment_id: str
    sweep: str | None
    runs: pd.DataFrame  # the runs that count (one per cell and seed)
    n_runs_total: int  # every training run in the experiment
    series: dict[tuple[str, str], pd.Series]  # (run_id, key) -> values indexed by step
    checkpoint_steps: dict[str, list[int]]  # run_id -> steps with a checkpoint
    notes: list[str] = field(default_factory=list)
    hidden: dict[tuple[str, str], str] = field(default_factory=dict)  # (run_id, column) -> why it is blanked

    @property
    def mixes(self) -> list[str]:
        return task_mixes(self.runs)

    def cells(self, task_mix: str) -> list[Cell]:
        """The trained cells of one task mix, in the paper's row order."""
        mine = self.runs[(self.runs["task_mix"] == task_mix) & (self.runs["method"] != "seed")]
        cells = [
            Cell(task_mix, m, s, r, cell_label(m, s, r, task_mix, v), group, v)
            for (m, s, r, v), group in mine.groupby(
                ["method", "sync_every", "ref_sync_every", "variant"], sort=False, dropna=False
            )
        ]
        return sorted(cells, key=lambda c: (row_order_key(c.method, c.sync_every), c.ref_sync_every, str(c.variant)))

    def values(self, run_id: str, key: str) -> pd.Series:
        return self.series.get((run_id, key), pd.Series(dtype=float))


def load_report_data(
    tracking_uri: str, experiment: str, sweep: str | None = None, objective: tuple[str, str] = DEFAULT_OBJECTIVE
) -> ReportData:
    """Everything the report shows, read from MLflow; HarnessError when there is nothing to show."""
    try:
        client = connect(tracking_uri)
    except TrackingUnavailable as exc:
        raise HarnessError(
            f"harness report: {exc} Run the sweep first (`harness sweep SWEEP.yaml`) or pass "
            "the tracking URI it logged to."
        ) from None
    found = client.get_experiment_by_name(experiment)
    frame = runs_frame(client, [found.experiment_id]) if found is not None else pd.DataFrame()
    if found is None or frame.empty:
        what = "does not exist" if found is None else "holds no training runs"
        raise HarnessError(
            f"harness report: experiment {experiment!r} in tracking URI {tracking_uri!r} {what}; "
            "run the sweep first (`harness sweep SWEEP.yaml`), or pass the experiment name "
            "(--experiment, the sweep file's tracking.experiment) and tracking URI it logged to."
        )
    notes: list[str] = []
    n_total = len(frame)
    frame = usable_runs(client, frame, found.experiment_id, sweep, notes)
    if frame.empty:
        raise HarnessError(
            f"harness report: experiment {experiment!r} in tracking URI {tracking_uri!r} has no "
            "finished training run yet; wait for the sweep (`harness status SWEEP.yaml`) or rerun it."
        )
    trained = frame[frame["method"] != "seed"]["run_id"].tolist()
    keys = [*CURVES, *TIME_KEYS, WAIT_KEY, TRUTH_CURVE, *([objective[0]] if objective[0].startswith("val/") else [])]
    series = histories(client, trained, keys)
    for _, run in frame[frame["method"] != "seed"].iterrows():
        missing = [k for k in (*CURVES, *TIME_KEYS) if (run["run_id"], k) not in series]
        if missing:
            notes.append(
                f"Run {run['run_name']} ({run['run_id'][:8]}) logged no {', '.join(missing)}: "
                "its curves and compute sums leave those out."
            )
    report = ReportData(tracking_uri, experiment, found.experiment_id, sweep, frame, n_total, series, {}, notes)
    report.runs = one_run_per_seed(report, objective)
    hide_unidentifiable_lc(report)
    with quiet_downloads():
        report.checkpoint_steps = {
            rid: checkpoint_steps(client, rid) for rid in report.runs["run_id"] if rid in trained
        }
    return report


def usable_runs(client, frame: pd.DataFrame, experiment_id: str, sweep: str | None, notes: list[str]) -> pd.DataFrame:
    """The sweep's finished, unpruned runs; what is left out is said in `notes`."""
    if sweep and (frame["sweep"] == sweep).any() and (frame["sweep"] != sweep).any():
        notes.append(f"The experiment holds runs of other sweeps; only sweep {sweep!r} is shown.")
        frame = frame[frame["sweep"] == sweep]
    pruned = {r.info.run_id for r in search_all_runs(client, [experiment_id], "tags.`harness.pruned` = 'true'")}
    usable = (frame["status"] == "FINISHED") & ~frame["run_id"].isin(pruned)
    for _, run in frame[~usable].iterrows():
        why = "pruned" if run["run_id"] in pruned else str(run["status"]).lower()
        notes.append(f"Run {run['run_name']} ({run['run_id'][:8]}) is {why}: left out of every table and figure.")
    return frame[usable]


def objective_value(report: ReportData, run: pd.Series, metric: str) -> float:
    if not metric.startswith("val/"):
        return float(run.get(metric, math.nan))
    return value_at(report.values(run["run_id"], metric), run.get("selected_step", math.nan))


def one_run_per_seed(report: ReportData, objective: tuple[str, str]) -> pd.DataFrame:
    """Keep one run per (cell, seed): the best by the sweep's objective (search trials), noted."""
    frame = report.runs
    keys = [*CELL_KEYS, "seed"]
    sign = 1.0 if objective[1] == "maximize" else -1.0
    keep = []
    for _, group in frame.groupby(keys, sort=False, dropna=False):
        if len(group) == 1:
            keep.append(group.index[0])
            continue
        scores = group.apply(lambda r: sign * objective_value(report, r, objective[0]), axis=1).fillna(-math.inf)
        best = scores.idxmax()
        keep.append(best)
        row = group.loc[best]
        report.notes.append(
            f"{cell_label(row['method'], row['sync_every'], row['ref_sync_every'], row['task_mix'], row['variant'])} "
            f"({row['task_mix']}) seed {row['seed']} has {len(group)} runs; the one with the best "
            f"{objective[0]} at its selected step ({row['run_name']}) is shown."
        )
    return frame.loc[sorted(keep)].reset_index(drop=True)


def hide_unidentifiable_lc(report: ReportData) -> None:
    """Blank each run's LC win rates that are not identifiable (results.metrics.lc_unidentifiable), so no
    table, comparison or figure reads them; `report.hidden` and the notes say why."""
    runs = report.runs
    for column in [c for c in runs.columns if c.startswith("eval") and metric_name(c) == "lc_winrate"]:
        for index, run in runs.iterrows():
            reason = None if pd.isna(run[column]) else lc_unidentifiable(run, column)
            if reason:
                report.hidden[(run["run_id"], column)] = reason
                runs.at[index, column] = math.nan
                report.notes.append(
                    f"Run {run['run_name']} ({run['run_id'][:8]}): {column} not identifiable "
                    f"({reason}); left out (its raw win rate is in the other-metrics table)."
                )


def value_at(series: pd.Series, step: float) -> float:
    """The value logged at `step` (NaN when that step has none)."""
    if series.empty or step is None or pd.isna(step):
        return math.nan
    return float(series.loc[int(step)]) if int(step) in series.index else math.nan


def mean(values) -> float:
    values = [float(v) for v in values if v is not None and not pd.isna(v)]
    return sum(values) / len(values) if values else math.nan
