"""`harness report SWEEP.yaml --out DIR`: the paper's tables and figures, regenerated from MLflow.

    path = report_command("sweeps/tiny_grid.yaml", "outputs/tiny_grid/report")

reads the sweep's experiment through dashboard.data (MLflow only: run metrics, metric histories
and the `checkpoints.json` artifact) and writes `DIR/report.md` plus PNG figures under
`DIR/figures/`. The report holds, per task mix, a results table in the layout of the paper's
Tables 1-3 (seed row first, then offline DPO, semi-online DPO s=100/10/5, online DPO, GRPO,
extensions; mean ± SE over seeds), a comparison with the paper's numbers where the suite is a
real benchmark, the compute split per phase (the efficiency comparison the paper gives only in
words), what length-normalised checkpoint selection changed, and observations with numbers
phrased only from signs and 2-SE margins (no hard-coded verdicts).

Which runs count: finished training runs of the sweep (its `harness.sweep` tag when the
experiment holds several sweeps); failed, running, killed and pruned trials are listed in the
notes and left out. When a cell has several runs for one seed (search trials, or a rerun), the one
with the best objective at its selected step stands for that seed.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from dashboard import data
from dashboard.paper import BENCHMARKS_BY_MIX, MODEL, paper_value
from harness.errors import HarnessError

CURVES = {  # step-wise validation metric -> axis label; one figure each
    "val/reward": "validation reward",
    "val/len_norm_reward": "length-normalised validation reward",
    "val/entropy": "validation entropy (nats/token)",
    "val/response_len": "validation response length (tokens)",
}
PHASES = ("generate", "score", "train", "sync")
TIME_KEYS = tuple(f"time/{phase}_s" for phase in PHASES)
# The evaluators' suite names of the paper's benchmarks (dashboard/paper.py's column names).
PAPER_BENCHMARK_OF_SUITE = {"math500": "Math500", "numinamath": "NuminaMath", "amc23": "AMC23",
                            "alpaca_eval": "AlpacaEval LC", "arena_hard": "Arena-Hard"}
# The tiny suites stand in for these paper benchmarks (same kind of task and metric, not the same
# task): the report puts them side by side with the caption saying so.
PAPER_ANALOGUE_OF_SUITE = {"tiny_math": "Math500", "tiny_chat": "AlpacaEval LC"}
DASH = "—"
DEFAULT_OBJECTIVE = ("val/len_norm_reward", "maximize")


@dataclass
class Cell:
    """One (method, s, reference sync, task mix) cell and the runs (one per seed) standing for it."""
    task_mix: str
    method: str
    sync_every: str
    ref_sync_every: str
    label: str
    runs: pd.DataFrame


@dataclass
class ReportData:
    tracking_uri: str
    experiment: str
    experiment_id: str
    sweep: str | None
    runs: pd.DataFrame                      # the runs that count (one per cell and seed)
    n_runs_total: int                       # every training run in the experiment
    series: dict[tuple[str, str], pd.Series]  # (run_id, key) -> values indexed by step
    checkpoint_steps: dict[str, list[int]]  # run_id -> steps with a checkpoint
    notes: list[str] = field(default_factory=list)

    @property
    def mixes(self) -> list[str]:
        return data.task_mixes(self.runs)

    def cells(self, task_mix: str) -> list[Cell]:
        """The trained cells of one task mix, in the paper's row order."""
        mine = self.runs[(self.runs["task_mix"] == task_mix) & (self.runs["method"] != "seed")]
        cells = [Cell(task_mix, m, s, r, data.method_label(m, s, r, task_mix), group)
                 for (m, s, r), group in mine.groupby(["method", "sync_every", "ref_sync_every"], sort=False)]
        return sorted(cells, key=lambda c: (data.row_order_key(c.method, c.sync_every), c.ref_sync_every))

    def values(self, run_id: str, key: str) -> pd.Series:
        return self.series.get((run_id, key), pd.Series(dtype=float))


# -- reading MLflow --------------------------------------------------------------------------

def resolve_experiment(sweep_path: str | None, experiment: str | None) -> tuple[str, str | None, tuple[str, str]]:
    """(experiment name, sweep name, (objective metric, direction)) from the sweep file and/or --experiment."""
    if sweep_path is None:
        if not experiment:
            raise HarnessError("harness report needs a sweep file (SWEEP.yaml) or --experiment NAME to know "
                               "which MLflow experiment to read.")
        return experiment, None, DEFAULT_OBJECTIVE
    from harness.sweep.spec import load_sweep

    sweep = load_sweep(sweep_path)
    objective = (sweep.spec.objective.metric, sweep.spec.objective.direction)
    return experiment or sweep.experiment, sweep.name, objective


def load_report_data(tracking_uri: str, experiment: str, sweep: str | None = None,
                     objective: tuple[str, str] = DEFAULT_OBJECTIVE) -> ReportData:
    """Everything the report shows, read from MLflow; HarnessError when there is nothing to show."""
    try:
        client = data.connect(tracking_uri)
    except data.TrackingUnavailable as exc:
        raise HarnessError(f"harness report: {exc} Run the sweep first (`harness sweep SWEEP.yaml`) or pass "
                           "the tracking URI it logged to.") from None
    found = client.get_experiment_by_name(experiment)
    frame = data.runs_frame(client, [found.experiment_id]) if found is not None else pd.DataFrame()
    if found is None or frame.empty:
        what = "does not exist" if found is None else "holds no training runs"
        raise HarnessError(f"harness report: experiment {experiment!r} in tracking URI {tracking_uri!r} {what}; "
                           "run the sweep first (`harness sweep SWEEP.yaml`), or pass the experiment name "
                           "(--experiment, the sweep file's tracking.experiment) and tracking URI it logged to.")
    notes: list[str] = []
    n_total = len(frame)
    frame = usable_runs(client, frame, found.experiment_id, sweep, notes)
    if frame.empty:
        raise HarnessError(f"harness report: experiment {experiment!r} in tracking URI {tracking_uri!r} has no "
                           "finished training run yet; wait for the sweep (`harness status SWEEP.yaml`) or rerun it.")
    trained = frame[frame["method"] != "seed"]["run_id"].tolist()
    keys = [*CURVES, *TIME_KEYS, *([objective[0]] if objective[0].startswith("val/") else [])]
    series = histories(client, trained, keys)
    for _, run in frame[frame["method"] != "seed"].iterrows():
        missing = [k for k in (*CURVES, *TIME_KEYS) if (run["run_id"], k) not in series]
        if missing:
            notes.append(f"Run {run['run_name']} ({run['run_id'][:8]}) logged no {', '.join(missing)}: "
                         "its curves and compute sums leave those out.")
    report = ReportData(tracking_uri, experiment, found.experiment_id, sweep, frame, n_total, series, {}, notes)
    report.runs = one_run_per_seed(report, objective)
    with quiet_downloads():
        report.checkpoint_steps = {rid: checkpoint_steps(client, rid) for rid in report.runs["run_id"]
                                   if rid in trained}
    return report


def usable_runs(client, frame: pd.DataFrame, experiment_id: str, sweep: str | None, notes: list[str]) -> pd.DataFrame:
    """The sweep's finished, unpruned runs; what is left out is said in `notes`."""
    if sweep and (frame["sweep"] == sweep).any() and (frame["sweep"] != sweep).any():
        notes.append(f"The experiment holds runs of other sweeps; only sweep {sweep!r} is shown.")
        frame = frame[frame["sweep"] == sweep]
    pruned = {r.info.run_id for r in data.search_all_runs(client, [experiment_id], "tags.`harness.pruned` = 'true'")}
    usable = (frame["status"] == "FINISHED") & ~frame["run_id"].isin(pruned)
    for _, run in frame[~usable].iterrows():
        why = "pruned" if run["run_id"] in pruned else str(run["status"]).lower()
        notes.append(f"Run {run['run_name']} ({run['run_id'][:8]}) is {why}: left out of every table and figure.")
    return frame[usable]


@contextmanager
def quiet_downloads():
    """No tqdm bar per checkpoints.json download (one per run would flood the terminal)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def histories(client, run_ids: list[str], keys: list[str]) -> dict[tuple[str, str], pd.Series]:
    """(run_id, key) -> values by step. A resumed run may log a step twice: the last write wins."""
    long = data.metric_histories(client, run_ids, list(dict.fromkeys(keys)))
    long = long.drop_duplicates(["run_id", "key", "step"], keep="last")
    return {(rid, key): group.set_index("step")["value"].astype(float)
            for (rid, key), group in long.groupby(["run_id", "key"], sort=False)}


def checkpoint_steps(client, run_id: str) -> list[int]:
    """Steps listed in the run's checkpoints.json artifact ([] when it has none)."""
    with tempfile.TemporaryDirectory(prefix="harness-report-") as scratch:
        try:
            entries = json.loads(Path(client.download_artifacts(run_id, "checkpoints.json", scratch)).read_text())
        except Exception:  # noqa: BLE001 - no artifact or unreadable: fall back to the val steps
            return []
    entries = entries.get("checkpoints", []) if isinstance(entries, dict) else entries
    return sorted(int(e["step"]) for e in entries if isinstance(e, dict) and "step" in e)


def objective_value(report: ReportData, run: pd.Series, metric: str) -> float:
    if not metric.startswith("val/"):
        return float(run.get(metric, math.nan))
    return value_at(report.values(run["run_id"], metric), run.get("selected_step", math.nan))


def one_run_per_seed(report: ReportData, objective: tuple[str, str]) -> pd.DataFrame:
    """Keep one run per (cell, seed): the best by the sweep's objective (search trials), noted."""
    frame = report.runs
    keys = [*data.CELL_KEYS, "seed"]
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
        report.notes.append(f"{data.method_label(row['method'], row['sync_every'], row['ref_sync_every'], row['task_mix'])} "
                            f"({row['task_mix']}) seed {row['seed']} has {len(group)} runs; the one with the best "
                            f"{objective[0]} at its selected step ({row['run_name']}) is shown.")
    return frame.loc[sorted(keep)].reset_index(drop=True)


# -- numbers ---------------------------------------------------------------------------------

def value_at(series: pd.Series, step: float) -> float:
    """The value logged at `step` (NaN when that step has none)."""
    if series.empty or step is None or pd.isna(step):
        return math.nan
    return float(series.loc[int(step)]) if int(step) in series.index else math.nan


def mean(values) -> float:
    values = [float(v) for v in values if v is not None and not pd.isna(v)]
    return sum(values) / len(values) if values else math.nan


def fmt(value: float, digits: int = 1) -> str:
    return DASH if value is None or pd.isna(value) else f"{value:.{digits}f}"


def fmt_pm(value: float, se: float, digits: int = 1) -> str:
    if value is None or pd.isna(value):
        return DASH
    return fmt(value, digits) if se is None or pd.isna(se) else f"{value:.{digits}f} ± {se:.{digits}f}"


def per_seed(cell: Cell, column: str) -> str:
    """A run-level value of each seed, "20" when they agree, else "20 / 30" (seed order)."""
    runs = cell.runs.sort_values("seed", key=lambda s: s.map(data.seed_sort_key))
    values = [fmt(v, 0) for v in runs[column]] if column in runs else [DASH]
    return values[0] if len(set(values)) == 1 else " / ".join(values)


def suite_of(column: str) -> str:
    return column.split("/")[1]


def mix_scores(report: ReportData, task_mix: str) -> tuple[pd.DataFrame, list[str]]:
    """(seed-aggregated cells incl. the seed baseline, headline score columns) for one task mix."""
    cells = data.seed_aggregate(data.with_seed_rows(report.runs, task_mix))
    trained = cells[cells["method"] != "seed"]
    scores = [s for s in data.headline_columns(cells) if trained[s].notna().any()] or data.headline_columns(cells)
    return cells, scores


def cell_row(cells: pd.DataFrame, cell: Cell) -> pd.Series:
    match = cells[(cells["method"] == cell.method) & (cells["sync_every"] == cell.sync_every)
                  & (cells["ref_sync_every"] == cell.ref_sync_every)]
    return match.iloc[0]


def compute_frame(report: ReportData, task_mix: str) -> pd.DataFrame:
    """Per cell: seconds per phase (summed over steps, mean over seeds), total, generate share,
    speedup vs online DPO (its total / this total) and the runs' wall clock."""
    rows = []
    for cell in report.cells(task_mix):
        row = {"label": cell.label, "method": cell.method, "sync_every": cell.sync_every, "n_seeds": len(cell.runs)}
        for phase, key in zip(PHASES, TIME_KEYS):
            sums = [report.values(rid, key).sum() if (rid, key) in report.series else math.nan
                    for rid in cell.runs["run_id"]]
            row[f"{phase}_s"] = mean(sums)
        row["total_s"] = sum(row[f"{p}_s"] for p in PHASES)
        row["generate_share"] = row["generate_s"] / row["total_s"] if row["total_s"] else math.nan
        row["wall_s"] = mean(cell.runs["duration_s"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    online = frame[(frame["method"] == "dpo") & (frame["sync_every"] == "1")]["total_s"]
    frame["speedup_vs_online"] = (online.iloc[0] / frame["total_s"]) if len(online) else math.nan
    return frame


def run_selection(report: ReportData, run: pd.Series) -> dict[str, float]:
    """Selected / final / max-val-reward steps of one run and the validation length at each."""
    rid = run["run_id"]
    lengths, rewards = report.values(rid, "val/response_len"), report.values(rid, "val/reward")
    eligible = report.checkpoint_steps.get(rid) or [s for s in rewards.index if s > 0]
    eligible = [s for s in eligible if s in rewards.index]
    top = max((rewards.loc[s] for s in eligible), default=math.nan)
    best = min((s for s in eligible if rewards.loc[s] == top), default=math.nan)  # ties: earlier, as selection does
    final = max(report.checkpoint_steps.get(rid) or list(lengths.index), default=math.nan)
    selected = run.get("selected_step", math.nan)
    return {"selected": selected, "final": final, "max_reward": best,
            "len_selected": value_at(lengths, selected), "len_final": value_at(lengths, final),
            "len_max_reward": value_at(lengths, best)}


def selection_frame(report: ReportData, task_mix: str) -> pd.DataFrame:
    """Per cell: selected vs final checkpoint scores (mean over seeds) and validation lengths."""
    cells, scores = mix_scores(report, task_mix)
    rows = []
    for cell in report.cells(task_mix):
        agg = cell_row(cells, cell)
        picks = [run_selection(report, run) for _, run in cell.runs.iterrows()]
        row = {"label": cell.label, "selected_step": per_seed(cell, "selected_step"),
               "final_step": " / ".join(sorted({fmt(p["final"], 0) for p in picks}))}
        for score in scores:
            final = score.replace("eval/", "eval_final/", 1)
            row[f"{score}|selected"] = agg.get(score, math.nan)
            row[f"{score}|final"] = agg.get(final, math.nan)
            row[f"{score}|diff"] = row[f"{score}|selected"] - row[f"{score}|final"]
        for key in ("len_selected", "len_final", "len_max_reward"):
            row[key] = mean(p[key] for p in picks)
        rows.append(row)
    return pd.DataFrame(rows)


def curve(report: ReportData, cell: Cell, key: str) -> pd.DataFrame:
    """step, mean, se (NaN with one seed), n: a metric's history over the cell's seeds."""
    series = [report.values(rid, key) for rid in cell.runs["run_id"]]
    series = [s for s in series if not s.empty]
    if not series:
        return pd.DataFrame(columns=["step", "mean", "se", "n"])
    wide = pd.concat(series, axis=1)
    n = wide.notna().sum(axis=1)
    se = wide.std(axis=1, ddof=1) / n.pow(0.5)
    return pd.DataFrame({"step": wide.index, "mean": wide.mean(axis=1).values,
                         "se": se.where(n > 1).values, "n": n.values}).sort_values("step")


def endpoints(report: ReportData, cell: Cell, key: str) -> tuple[float, float]:
    """(first, last) logged value of a step metric, mean over the cell's seeds."""
    pairs = [(s.iloc[0], s.iloc[-1]) for s in (report.values(r, key).sort_index() for r in cell.runs["run_id"])
             if not s.empty]
    return mean(p[0] for p in pairs), mean(p[1] for p in pairs)


# -- observations ----------------------------------------------------------------------------

def compare(a: float, a_se: float, b: float, b_se: float) -> str:
    """`+X.X ± Y.Y points (higher, beyond 2 SE)`: the wording comes from sign and margin only."""
    if pd.isna(a) or pd.isna(b):
        return "not comparable (a score is missing)"
    diff = a - b
    se = math.sqrt((0 if pd.isna(a_se) else a_se) ** 2 + (0 if pd.isna(b_se) else b_se) ** 2)
    if pd.isna(a_se) or pd.isna(b_se):
        return f"{diff:+.1f} points (SE unknown)"
    if abs(diff) > 2 * se:
        verdict = ("higher" if diff > 0 else "lower") + ", beyond 2 SE"
    else:
        verdict = "within 2 SE"
    return f"{diff:+.1f} ± {se:.1f} points ({verdict})"


def score_observations(report: ReportData, task_mix: str) -> list[str]:
    cells, scores = mix_scores(report, task_mix)
    trained = {c.label: cell_row(cells, c) for c in report.cells(task_mix)}
    lines = []
    for base_label in ("offline DPO", "online DPO"):
        base = trained.get(base_label)
        if base is None:
            continue
        for label, row in trained.items():
            if label == base_label or (base_label == "online DPO" and label == "offline DPO"):
                continue
            for score in scores:
                lines.append(f"{label} − {base_label} on {suite_of(score)}: "
                             f"{compare(row[score], row[f'{score}_se'], base[score], base[f'{score}_se'])}")
    return lines


def curve_observations(report: ReportData, task_mix: str, key: str, what: str, digits: int) -> list[str]:
    lines = []
    for cell in report.cells(task_mix):
        first, last = endpoints(report, cell, key)
        if pd.isna(first):
            continue
        ratio = last / first if first else math.nan
        lines.append(f"{what}, {cell.label}: {fmt(first, digits)} at the first validation → {fmt(last, digits)} "
                     f"at the last (× {fmt(ratio, 2)})")
    return lines


def selection_observations(report: ReportData, task_mix: str) -> list[str]:
    lines = []
    for _, row in selection_frame(report, task_mix).iterrows():
        if pd.isna(row["len_selected"]):
            continue
        lines.append(f"{row['label']}: validation length {fmt(row['len_selected'])} at the selected checkpoint vs "
                     f"{fmt(row['len_max_reward'])} at the max-val-reward checkpoint and {fmt(row['len_final'])} "
                     f"at the final one (selected − max-reward: {row['len_selected'] - row['len_max_reward']:+.1f})")
    return lines


def compute_observations(frame: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in frame.iterrows():
        if pd.isna(row["total_s"]):
            continue
        lines.append(f"{row['label']}: {row['total_s']:.1f} s in the four phases, {100 * row['generate_share']:.0f}% "
                     f"generating; online DPO / this = × {fmt(row.get('speedup_vs_online', math.nan), 2)}")
    return lines


# -- markdown --------------------------------------------------------------------------------

def md_table(header: list[str], rows: list[list[str]]) -> str:
    def clean(cell) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(report: ReportData, task_mix: str) -> tuple[str, list[str]]:
    """The paper-layout table of one task mix, and notes on cells with missing scores."""
    cells, scores = mix_scores(report, task_mix)
    header = ["method", *(suite_of(s) + " " + data.metric_name(s) for s in scores), "selected step", "n seeds"]
    rows, notes = [], []
    by_label = {c.label: c for c in report.cells(task_mix)}
    for _, agg in cells.iterrows():
        cell = by_label.get(agg["label"])
        step = per_seed(cell, "selected_step") if cell is not None else DASH
        rows.append([agg["label"], *(fmt_pm(agg[s], agg[f"{s}_se"]) for s in scores), step, str(agg["n_seeds"])])
        if cell is not None:
            for score in (*scores, *(s.replace("eval/", "eval_final/", 1) for s in scores)):
                if score not in cell.runs:
                    notes.append(f"{agg['label']}: no run logged {score} (shown as —).")
                    continue
                missing = cell.runs[cell.runs[score].isna()]["run_name"].tolist()
                if missing:
                    notes.append(f"{agg['label']}: {score} missing in {', '.join(missing)}"
                                 + (" (shown as —)." if len(missing) == len(cell.runs) else
                                    "; the mean is over the other seeds."))
    if not scores:
        notes.append("No evaluation metrics (eval/<suite>/<metric>) in any run of this mix: the table has no "
                     "score columns. Run `harness eval RUN_ID` or list eval suites in the run config.")
    if not (cells["method"] == "seed").any():
        notes.append("No seed-model baseline run (method=seed) in this experiment, so there is no seed row; "
                     "step-0 validation values are not benchmark scores and do not stand in for it.")
    return md_table(header, rows), notes


LENGTH_METRICS = ("avg_len", "mean_length")
DIAGNOSTIC_METRICS = ("lc_difficulty_term",)


def detail_columns(cells: pd.DataFrame, scores: list[str]) -> list[str]:
    """Each headline suite's other scores (e.g. the raw win rate next to the length-controlled one)
    and its mean response length, which the headline alone hides."""
    columns = []
    for score in scores:
        base = score.rsplit("/", 1)[0] + "/"
        columns += sorted(c for c in cells.columns if c.startswith(base) and c != score
                          and data.metric_name(c) not in DIAGNOSTIC_METRICS
                          and (data.is_score_column(c) or data.metric_name(c) in LENGTH_METRICS))
    return columns


def detail_table(report: ReportData, task_mix: str) -> str | None:
    """The secondary metrics of one task mix, same rows as the results table; None if there are none."""
    cells, scores = mix_scores(report, task_mix)
    columns = detail_columns(cells, scores)
    if not columns:
        return None
    rows = [[agg["label"], *(fmt_pm(agg[c], agg[f"{c}_se"]) if f"{c}_se" in agg else fmt(agg[c]) for c in columns)]
            for _, agg in cells.iterrows()]
    return md_table(["method", *(suite_of(c) + " " + data.metric_name(c) for c in columns)], rows)


def paper_table(report: ReportData, task_mix: str) -> str:
    """Our scores next to the paper's: for suites that are the paper's benchmarks, and for the tiny
    suites next to the benchmark they stand in for (captioned as an analogy)."""
    cells, scores = mix_scores(report, task_mix)
    benchmarks = BENCHMARKS_BY_MIX.get(task_mix, ())
    if not benchmarks:
        return "The paper reports no results table for this task mix, so there is nothing to compare with."
    real = [s for s in scores if PAPER_BENCHMARK_OF_SUITE.get(suite_of(s)) in benchmarks]
    analogues = [s for s in scores if PAPER_ANALOGUE_OF_SUITE.get(suite_of(s)) in benchmarks]
    others = [suite_of(s) for s in scores if s not in real and s not in analogues]
    lines = []
    if others:
        lines.append(f"{', '.join(others)}: not one of the paper's benchmarks for this mix, so the paper has no "
                     "numbers for {}.".format("it" if len(others) == 1 else "them"))
    if real:
        lines.append(f"The paper's numbers are {MODEL} at paper scale; ours come from this sweep's model and "
                     "data, so compare orderings, not levels.\n\n" + side_by_side(cells, real, PAPER_BENCHMARK_OF_SUITE))
    if analogues:
        pairs = ", ".join(f"{suite_of(s)} for {PAPER_ANALOGUE_OF_SUITE[suite_of(s)]}" for s in analogues)
        lines.append(f"The tiny suites stand in for the paper's benchmarks ({pairs}): the same kind of task and "
                     f"metric on a 3M-parameter model, not the same task. Only the orderings of the rows can be "
                     f"compared with the paper's ({MODEL}).\n\n" + side_by_side(cells, analogues, PAPER_ANALOGUE_OF_SUITE))
    return "\n\n".join(lines)


def side_by_side(cells: pd.DataFrame, scores: list[str], paper_name: dict[str, str]) -> str:
    header = ["method"] + [h for s in scores for h in (f"{suite_of(s)} (ours)", f"{paper_name[suite_of(s)]} (paper)")]
    rows = [[agg["label"]] + [v for s in scores for v in (
        fmt_pm(agg[s], agg[f"{s}_se"]), fmt(paper_value(agg["label"], paper_name[suite_of(s)])))]
        for _, agg in cells.iterrows()]
    return md_table(header, rows)


def compute_table(frame: pd.DataFrame) -> str:
    header = ["method", *(f"{p} s" for p in PHASES), "total s", "generate share", "online ÷ this", "run wall clock s", "n seeds"]
    rows = [[r["label"], *(fmt(r[f"{p}_s"]) for p in PHASES), fmt(r["total_s"]),
             DASH if pd.isna(r["generate_share"]) else f"{100 * r['generate_share']:.0f}%",
             fmt(r["speedup_vs_online"], 2), fmt(r["wall_s"]), str(r["n_seeds"])] for _, r in frame.iterrows()]
    return md_table(header, rows)


def selection_table(frame: pd.DataFrame) -> str:
    scores = [c.split("|")[0] for c in frame.columns if c.endswith("|selected")]
    header = ["method", "selected step", "final step"]
    header += [h for s in scores for h in (f"{suite_of(s)} selected", f"{suite_of(s)} final", f"{suite_of(s)} Δ")]
    header += ["val length @selected", "val length @final", "val length @max val reward"]
    rows = []
    for _, r in frame.iterrows():
        diff = [v for s in scores for v in (fmt(r[f"{s}|selected"]), fmt(r[f"{s}|final"]),
                                             DASH if pd.isna(r[f"{s}|diff"]) else f"{r[f'{s}|diff']:+.1f}")]
        rows.append([r["label"], r["selected_step"], r["final_step"], *diff,
                     fmt(r["len_selected"]), fmt(r["len_final"]), fmt(r["len_max_reward"])])
    return md_table(header, rows)


def bullet_list(lines: list[str], empty: str = "nothing to show") -> str:
    return "\n".join(f"- {line}" for line in lines) if lines else f"- ({empty})"


def command_line(sweep_path: str | None, out_dir: str, tracking_uri: str | None, experiment: str | None) -> str:
    parts = ["harness", "report", *([sweep_path] if sweep_path else []), "--out", out_dir]
    parts += ["--tracking-uri", tracking_uri] if tracking_uri else []
    parts += ["--experiment", experiment] if experiment else []
    return " ".join(shlex.quote(p) for p in parts)


def render(report: ReportData, command: str, figures: dict[str, str]) -> str:
    """report.md's text; `figures` maps figure id -> path relative to report.md."""
    runs = report.runs
    seeds = sorted(runs.loc[runs["method"] != "seed", "seed"].astype(str).unique(), key=data.seed_sort_key)
    out = [f"# Report: {report.sweep or report.experiment}", "", "```", command, "```", "",
           f"- tracking URI: `{report.tracking_uri}`", f"- experiment: `{report.experiment}` (id {report.experiment_id})",
           f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
           f"- runs: {len(runs)} used of {report.n_runs_total} training runs in the experiment; "
           f"seeds: {', '.join(seeds) or 'none'} ({len(seeds)})",
           f"- task mixes: {', '.join(report.mixes) or 'none'}", "",
           "Scores are mean ± SE: the SE across seeds when a cell has more than one, else the run's own "
           "logged SE. Differences below are phrased from their sign and whether |difference| > 2 SE.", ""]
    notes = list(report.notes)
    out += ["## Results", ""]
    for mix in report.mixes:
        table, mix_notes = results_table(report, mix)
        notes += [f"{mix}: {n}" for n in mix_notes]
        out += [f"### {mix}", "", table, ""]
        details = detail_table(report, mix)
        if details:
            out += [f"#### {mix}: other metrics of the same checkpoints", "", details, ""]
        out += [f"#### {mix}: comparison with the paper", "", paper_table(report, mix), ""]
    out += ["## Figures", ""]
    out += [f"![{name}]({path})" + "\n" for name, path in figures.items()]
    out += ["## Compute", "", "Seconds per phase summed over a run's steps (`time/*_s`), mean over seeds; "
            "\"online ÷ this\" is online DPO's total over the cell's total (> 1: cheaper than online).", ""]
    for mix in report.mixes:
        frame = compute_frame(report, mix)
        out += [f"### {mix}", "", compute_table(frame) if not frame.empty else "(no trained cells)", ""]
    out += ["## Selection", "", "The selected checkpoint (highest length-normalised validation reward) against "
            "the final one: scores (`eval/` vs `eval_final/`), and the validation response length at the selected, "
            "final and highest-validation-reward checkpoints.", ""]
    for mix in report.mixes:
        frame = selection_frame(report, mix)
        out += [f"### {mix}", "", selection_table(frame) if not frame.empty else "(no trained cells)", ""]
    out += ["## Observations", ""]
    for mix in report.mixes:
        lines = score_observations(report, mix)
        lines += curve_observations(report, mix, "val/entropy", "entropy", 3)
        lines += curve_observations(report, mix, "val/response_len", "response length", 1)
        lines += selection_observations(report, mix)
        lines += compute_observations(compute_frame(report, mix))
        out += [f"### {mix}", "", bullet_list(lines), ""]
    out += ["## Notes", "", bullet_list(notes, "none: every run has every metric"), ""]
    return "\n".join(out)


# -- entry point -----------------------------------------------------------------------------

def report_command(sweep_path: str | None, out_dir: str, tracking_uri: str | None = None,
                   experiment: str | None = None) -> Path:
    """Write `out_dir/report.md` and `out_dir/figures/*.png` from MLflow; returns report.md's path."""
    from harness.report_figures import write_figures
    from harness.tracking import default_tracking_uri

    name, sweep, objective = resolve_experiment(sweep_path, experiment)
    uri = tracking_uri or default_tracking_uri()
    report = load_report_data(uri, name, sweep, objective)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(report, out / "figures")
    text = render(report, command_line(sweep_path, out_dir, tracking_uri, experiment),
                  {name: path.relative_to(out).as_posix() for name, path in figures.items()})
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
