"""Everything the dashboard knows, read from MLflow into pandas frames.

This module talks to MLflow only (no harness training code, no torch) so the dashboard runs on a
laptop against a remote tracking server. It has no Streamlit in it either: app.py wraps these
functions in short-TTL caches, and the tests call them directly against a real store.

    client = connect("http://mlflow:5000")
    sweeps = list_sweeps(client)                       # one row per sweep (experiment)
    runs = runs_frame(client, sweeps.experiment_id)    # one row per training run
    cells = seed_aggregate(runs)                       # mean +- SE over seeds per cell
    tables = paper_tables(runs)                        # {task_mix: paper-style table}

The MLflow conventions read here are the ones docs/DESIGN.md fixes: tags `harness.kind`
(`sweep` on a sweep's parent run, `train` on trials), axis tags `method`, `sync_every`,
`ref_sync_every`, `task_mix`, `seed`; metrics `selected_step`, `eval/<suite>/<metric>` with
`<metric>_se` (or `ci_low`/`ci_high`), `eval_final/...`; step-wise `train/*`, `val/*`, `time/*`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from harness.errors import DataError, HarnessError

AXES = ("method", "sync_every", "ref_sync_every", "task_mix", "seed")
CELL_KEYS = ("sweep", "method", "sync_every", "ref_sync_every", "task_mix")
META_COLUMNS = ("run_id", "run_name", "experiment_id", "parent_run_id", "sweep", "status", *AXES,
                "cell_key", "start_time", "duration_s", "error")
ERROR_CHARS = 400  # of the `harness.error` tag (a failed trial's log tail), for the table
EVAL_PREFIXES = ("eval/", "eval_final/")
SPREAD_SUFFIXES = ("_se", "/ci_low", "/ci_high")
NO_TASK_MIX = ("", "-", "none", "None")
MIX_ORDER = ("verifiable", "non_verifiable", "joint")  # the paper's order of task mixes
COUNT_METRICS = ("mean_length",)
# The metric a suite is ranked by, in order of preference (evaluators/ names them so).
HEADLINE_METRICS = ("pass_at_1", "lc_winrate", "score", "winrate", "accuracy", "rating")
DEFAULT_UI_URL = "http://localhost:5000"
GENERATION_COLUMNS = ("id", "sample_index", "prompt", "output", "length", "score", "verdict", "correct")


class TrackingUnavailable(HarnessError):
    """The tracking URI cannot be reached or does not hold an MLflow store."""


# -- connecting ------------------------------------------------------------------------------

def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative or absolute), else None."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    rest = tracking_uri[len("sqlite:"):]
    # sqlite:///rel.db is relative, sqlite:////abs.db absolute (SQLAlchemy's convention).
    return Path(rest[3:]) if rest.startswith("///") else Path(rest.lstrip("/"))


KNOWN_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(16)


def check_tracking_uri(tracking_uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast, with a message saying what to do, before MLflow retries for minutes.

    A missing sqlite file is an error rather than an invitation: MLflow would silently create an
    empty database there, and the dashboard is a reader.
    """
    if not tracking_uri.strip():
        raise TrackingUnavailable("The tracking URI is empty: enter one such as http://localhost:5000 "
                                  "or sqlite:///mlflow.db in the sidebar, or set MLFLOW_TRACKING_URI.")
    scheme = urlparse(tracking_uri).scheme.lower()
    if scheme and scheme.split("+")[0] not in KNOWN_SCHEMES:
        raise TrackingUnavailable(f"Tracking URI {tracking_uri!r} has the unknown scheme {scheme!r}; expected "
                                  f"one of {', '.join(s + '://' for s in KNOWN_SCHEMES)} "
                                  "(e.g. sqlite:///mlflow.db or http://localhost:5000).")
    db = sqlite_path(tracking_uri)
    if db is not None:
        if db.is_file() and db.stat().st_size and _head(db) != b"SQLite format 3\x00":
            raise TrackingUnavailable(f"Tracking URI {tracking_uri!r}: {db} is not an SQLite database; point the "
                                      "dashboard at the mlflow.db file your runs were logged to.")
        if not db.is_file():
            raise TrackingUnavailable(
                f"Tracking URI {tracking_uri!r}: there is no MLflow database at {db} "
                f"({'its folder does not exist' if not db.parent.is_dir() else 'no such file'}). "
                "Point the dashboard at the sqlite file your runs were logged to (the trainer's "
                "MLFLOW_TRACKING_URI), or at the tracking server's http:// address.")
        return
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout_s):
                pass
        except OSError as exc:
            raise TrackingUnavailable(
                f"Tracking URI {tracking_uri!r}: cannot connect to {parsed.hostname}:{port} ({exc}). "
                "Start the tracking server (`mlflow server --port PORT`) or fix the address.") from None
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else tracking_uri)
        if not folder.is_dir():
            raise TrackingUnavailable(f"Tracking URI {tracking_uri!r}: the folder {folder} does not exist; "
                                      "point the dashboard at your mlruns folder or tracking server.")


def connect(tracking_uri: str) -> MlflowClient:
    """A client for a reachable store (one cheap query proves it), else TrackingUnavailable."""
    check_tracking_uri(tracking_uri)
    try:  # the constructor already fails on an unknown scheme or a file that is not a database
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # any failure here means "not a usable MLflow store"
        raise TrackingUnavailable(f"Tracking URI {tracking_uri!r} did not answer as an MLflow store: "
                                  f"{type(exc).__name__}: {str(exc)[:300]}") from None
    return client


def run_url(tracking_uri: str, experiment_id: str, run_id: str, ui_base_url: str | None = None) -> str:
    """A link to the run in the MLflow UI: the server itself for http(s) URIs, else ui_base_url."""
    scheme = urlparse(tracking_uri).scheme
    base = tracking_uri if scheme in ("http", "https") else (ui_base_url or DEFAULT_UI_URL)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


# -- searching -------------------------------------------------------------------------------

def search_all_runs(client: MlflowClient, experiment_ids: Iterable[str], filter_string: str = "",
                    page_size: int = 1000) -> list[Run]:
    """Every matching run, following page tokens (a big sweep has more runs than one page)."""
    ids = [str(e) for e in experiment_ids]
    if not ids:
        return []
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(ids, filter_string=filter_string, max_results=page_size,
                                  page_token=token, run_view_type=ViewType.ACTIVE_ONLY)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def all_experiments(client: MlflowClient, page_size: int = 1000) -> list:
    experiments, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=page_size,
                                         page_token=token)
        experiments.extend(page)
        token = page.token
        if not token:
            return experiments


def list_sweeps(client: MlflowClient, page_size: int = 1000) -> pd.DataFrame:
    """One row per sweep: experiment_id, experiment, sweep, parent_run_id, status, start_time.

    A sweep is an experiment; its name is the parent run's `harness.sweep` tag when there is one,
    else the experiment name (plain `harness train` runs). Experiments without runs are left out.
    """
    rows = []
    for experiment in all_experiments(client, page_size):
        eid = experiment.experiment_id
        if not client.search_runs([eid], max_results=1):
            continue
        parents = search_all_runs(client, [eid], "tags.`harness.kind` = 'sweep'", page_size)
        for parent in parents or [None]:
            tags = parent.data.tags if parent else {}
            rows.append({
                "experiment_id": eid, "experiment": experiment.name,
                "sweep": tags.get("harness.sweep") or experiment.name,
                "parent_run_id": parent.info.run_id if parent else None,
                "status": parent.info.status if parent else None,
                "start_time": pd.to_datetime(parent.info.start_time, unit="ms") if parent else pd.NaT,
            })
    columns = ["experiment_id", "experiment", "sweep", "parent_run_id", "status", "start_time"]
    return pd.DataFrame(rows, columns=columns)


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
        "run_id": info.run_id, "run_name": info.run_name or tags.get("mlflow.runName") or info.run_id[:8],
        "experiment_id": info.experiment_id, "parent_run_id": parent,
        "sweep": sweep_of_parent.get(parent or "") or experiment_sweep.get(info.experiment_id, ""),
        "status": info.status, **{axis: axis_value(run, axis) for axis in AXES},
        "cell_key": tags.get("cell_key", ""),
        "start_time": pd.to_datetime(info.start_time, unit="ms") if info.start_time else pd.NaT,
        "duration_s": (end_ms - info.start_time) / 1000.0 if info.start_time else math.nan,
        "error": tags.get("harness.error", "")[-ERROR_CHARS:],
    }
    row.update(run.data.metrics)  # latest value of every metric, eval and step-wise alike
    return row


def metric_column_order(columns: Iterable[str]) -> list[str]:
    """selected_step, then eval/* (each score followed by its spread), eval_final/*, the rest."""
    columns = list(columns)

    def key(name: str):
        group = 0 if name == "selected_step" else 1 if name.startswith("eval/") else \
            2 if name.startswith("eval_final/") else 3
        base = name
        if name.endswith("_se"):
            base = name[:-3]
        elif name.endswith(("/ci_low", "/ci_high")):
            base = name.rsplit("/", 1)[0] + "/score"  # Arena-Hard's CI belongs to its score
        return (group, base, name != base, name)
    return sorted(columns, key=key)


def runs_frame(client: MlflowClient, experiment_ids: Iterable[str], page_size: int = 1000) -> pd.DataFrame:
    """One row per training run (and seed baseline) of the given experiments.

    Columns: META_COLUMNS (axes as strings, as logged; `error` = the end of a failed trial's
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
    metrics = metric_column_order(c for c in frame.columns if c not in META_COLUMNS)
    frame = frame[list(META_COLUMNS) + metrics]
    order = frame.apply(lambda r: (r["sweep"], mix_sort_key(r["task_mix"]), row_order_key(r["method"], r["sync_every"]),
                                   r["ref_sync_every"], seed_sort_key(r["seed"]), r["run_name"]), axis=1)
    return frame.iloc[sorted(range(len(frame)), key=lambda i: order.iloc[i])].reset_index(drop=True)


def experiment_sweep_names(client: MlflowClient, experiment_ids: set[str], parents: list[Run]) -> dict[str, str]:
    """Experiment id -> sweep name: its only sweep parent's tag, else the experiment's name."""
    names = {}
    for eid in experiment_ids:
        tagged = {p.data.tags.get("harness.sweep") for p in parents if p.info.experiment_id == eid}
        tagged.discard(None)
        names[eid] = tagged.pop() if len(tagged) == 1 else client.get_experiment(eid).name
    return names


def mix_sort_key(task_mix: str) -> tuple:
    """No mix (the seed baseline) first, then verifiable, non_verifiable, joint, others."""
    if task_mix in NO_TASK_MIX:
        return (-1, "")
    return (MIX_ORDER.index(task_mix) if task_mix in MIX_ORDER else len(MIX_ORDER), str(task_mix))


def seed_sort_key(seed: str):
    return (0, int(seed), "") if str(seed).isdigit() else (1, 0, str(seed))


# -- labels and paper order ------------------------------------------------------------------

def sync_value(sync_every: str) -> float:
    try:
        return float(sync_every)
    except (TypeError, ValueError):
        return math.nan


def row_order_key(method: str, sync_every: str) -> tuple:
    """seed, offline DPO, semi-online DPO (s large to small), online DPO, GRPO (s=1 first), others."""
    s = sync_value(sync_every)
    s = 0.0 if math.isnan(s) else s
    if method == "seed":
        return (0, 0.0, "")
    if method == "dpo":
        return (1, -s, "")
    if method == "grpo":
        return (2, s, "")
    return (3, s, method)


def default_ref_sync(method: str, sync_every: str, task_mix: str) -> str:
    """The paper's reference setting: it follows the generator only for verifiable (semi-)online DPO."""
    follows = method == "dpo" and task_mix == "verifiable" and sync_every != "inf"
    return sync_every if follows else "inf"


def method_label(method: str, sync_every: str, ref_sync_every: str = "", task_mix: str = "") -> str:
    """The paper's row names ("offline DPO", "semi-online DPO s=10", "GRPO"), plus a note when
    the reference sync differs from the paper's setting for that method and task mix."""
    if method == "seed":
        return "seed"
    if method == "dpo":
        label = "offline DPO" if sync_every == "inf" else "online DPO" if sync_every == "1" \
            else f"semi-online DPO s={sync_every}"
    elif method == "grpo":
        label = "GRPO" if sync_every == "1" else f"GRPO s={sync_every}"
    else:
        label = f"{method} s={sync_every}"
    if ref_sync_every and task_mix and ref_sync_every != default_ref_sync(method, sync_every, task_mix):
        label += " (ref fixed)" if ref_sync_every == "inf" else f" (ref sync {ref_sync_every})"
    return label


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """Run names, made unique with a short run id where two runs share one."""
    names = frame["run_name"].astype(str)
    duplicated = names.duplicated(keep=False)
    return names.where(~duplicated, names + " · " + frame["run_id"].astype(str).str[:8])


# -- aggregation -----------------------------------------------------------------------------

def metric_name(column: str) -> str:
    """`eval/math500/pass_at_1_se` -> `pass_at_1_se`."""
    return column.rsplit("/", 1)[-1]


def is_score_column(column: str) -> bool:
    """An evaluation score: not a spread (_se, ci_low/high) nor a count (n_*, mean_length)."""
    name = metric_name(column)
    return (column.startswith(EVAL_PREFIXES) and not column.endswith(SPREAD_SUFFIXES)
            and not name.startswith("n_") and name not in COUNT_METRICS)


def eval_score_columns(frame: pd.DataFrame, final: bool | None = False) -> list[str]:
    """Evaluation scores: eval/* (final=False), eval_final/* (final=True), or both (None)."""
    prefixes = EVAL_PREFIXES if final is None else (("eval_final/",) if final else ("eval/",))
    return [c for c in frame.columns if c.startswith(prefixes) and is_score_column(c)]


def headline_columns(frame: pd.DataFrame, final: bool = False) -> list[str]:
    """One score per suite, the one the paper reports (pass_at_1, lc_winrate, score, ...)."""
    by_suite: dict[str, list[str]] = {}
    for column in eval_score_columns(frame, final):
        by_suite.setdefault(column.rsplit("/", 1)[0], []).append(column)
    chosen = []
    for suite, columns in by_suite.items():
        ranked = sorted(columns, key=lambda c: (HEADLINE_METRICS.index(metric_name(c))
                                                if metric_name(c) in HEADLINE_METRICS else len(HEADLINE_METRICS), c))
        chosen.append(ranked[0])
    return chosen


def spread_columns(frame: pd.DataFrame, score: str) -> list[str]:
    """The logged spread of a score: `<score>_se`, plus `ci_low`/`ci_high` for an Arena-Hard `score`."""
    base = score.rsplit("/", 1)[0]
    cis = (f"{base}/ci_low", f"{base}/ci_high") if metric_name(score) == "score" else ()
    return [c for c in (f"{score}_se", *cis) if c in frame.columns]


def step_metric_keys(frame: pd.DataFrame) -> list[str]:
    """Names of the step-wise metrics any run logged (train/*, val/*, time/*, ...)."""
    return sorted(c for c in frame.columns if "/" in c and not c.startswith(EVAL_PREFIXES))


def logged_se(group: pd.DataFrame, score: str) -> float:
    """A single run's own standard error: its `_se` metric, or a 95% CI's half width / 1.96."""
    if f"{score}_se" in group and not pd.isna(group[f"{score}_se"].iloc[0]):
        return float(group[f"{score}_se"].iloc[0])
    base = score.rsplit("/", 1)[0]
    if metric_name(score) == "score" and f"{base}/ci_low" in group and f"{base}/ci_high" in group:
        return float((group[f"{base}/ci_high"].iloc[0] - group[f"{base}/ci_low"].iloc[0]) / (2 * 1.96))
    return math.nan


def seed_aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (sweep, method, sync_every, ref_sync_every, task_mix) over its seeds.

    Each eval score becomes its mean over the seeds that have it, and `<score>_se` the standard
    error of that mean (sample std / sqrt(n)); with a single seed the run's own logged SE is kept
    (from `_se`, or a 95% CI as half-width / 1.96). Other metrics and duration_s are averaged. Adds `n_seeds`,
    `seeds` and `label` (the paper's row name). Rows are in paper order.
    """
    scores = eval_score_columns(frame, final=None)
    spreads = {c for s in scores for c in spread_columns(frame, s)}
    others = [c for c in frame.columns if (c not in META_COLUMNS or c == "duration_s")
              and c not in scores and c not in spreads]
    rows = []
    for keys, group in frame.groupby(list(CELL_KEYS), sort=False, dropna=False):
        row = dict(zip(CELL_KEYS, keys))
        row["label"] = method_label(row["method"], row["sync_every"], row["ref_sync_every"], row["task_mix"])
        row["n_seeds"] = len(group)
        row["seeds"] = ",".join(sorted(group["seed"].astype(str), key=seed_sort_key))
        for score in scores:
            values = group[score].dropna()
            row[score] = values.mean() if len(values) else math.nan
            if len(values) >= 2:
                row[f"{score}_se"] = values.std(ddof=1) / math.sqrt(len(values))
            else:
                row[f"{score}_se"] = logged_se(group.loc[values.index], score) if len(values) else math.nan
        for column in others:
            row[column] = pd.to_numeric(group[column], errors="coerce").mean()
        rows.append(row)
    head = [*CELL_KEYS, "label", "n_seeds", "seeds"]
    if not rows:
        return pd.DataFrame(columns=head)
    out = pd.DataFrame(rows)
    out = out[head + metric_column_order(c for c in out.columns if c not in head)]
    order = out.apply(lambda r: (r["sweep"], mix_sort_key(r["task_mix"]), row_order_key(r["method"], r["sync_every"]),
                                 r["ref_sync_every"]), axis=1)
    return out.iloc[sorted(range(len(out)), key=lambda i: order.iloc[i])].reset_index(drop=True)


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


def paper_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{task_mix: table} with the paper's rows (seed, offline DPO, semi-online DPO s=100/10/5,
    online DPO, GRPO, then extensions) and one column per eval score with `_se`, plus the paper's
    headline numbers for the matching rows as `paper: <benchmark>` columns."""
    from dashboard.paper import paper_columns  # local: keeps the module import graph flat

    tables = {}
    for mix in task_mixes(frame):
        cells = seed_aggregate(with_seed_rows(frame, mix))
        trained = cells[cells["method"] != "seed"]
        scores = [s for s in headline_columns(cells) if trained[s].notna().any()] or headline_columns(cells)
        columns = ["label", "sweep", "n_seeds"] + [c for s in scores for c in (s, f"{s}_se")]
        table = cells[columns].reset_index(drop=True)
        for name, values in paper_columns(mix, table["label"]).items():
            table[name] = values
        tables[mix] = table
    return tables


# -- per-run details -------------------------------------------------------------------------

def metric_histories(client: MlflowClient, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Long frame run_id, key, step, value, timestamp of every logged point (sorted by step)."""
    rows = []
    for run_id in run_ids:
        for key in keys:
            for m in client.get_metric_history(run_id, key):
                rows.append((run_id, key, m.step, m.value, m.timestamp))
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return frame.sort_values(["run_id", "key", "step", "timestamp"]).reset_index(drop=True)


def run_params(client: MlflowClient, run_ids: Iterable[str]) -> pd.DataFrame:
    """Params side by side: index = param name, one column per run id ("" where not logged)."""
    columns = {run_id: client.get_run(run_id).data.params for run_id in run_ids}
    frame = pd.DataFrame(columns).fillna("")
    frame.index.name = "param"
    return frame.sort_index()


def param_diff(params: pd.DataFrame) -> pd.DataFrame:
    """Only the params whose value differs between the runs."""
    if params.empty:
        return params
    return params[params.nunique(axis=1) > 1]


def list_generation_suites(client: MlflowClient, run_id: str, prefix: str = "eval") -> list[str]:
    """Suites with a `<prefix>/<suite>/generations.jsonl` artifact (prefix eval = selected
    checkpoint, eval_final = final checkpoint)."""
    suites = []
    for entry in client.list_artifacts(run_id, prefix):
        if entry.is_dir:
            names = {Path(f.path).name for f in client.list_artifacts(run_id, entry.path)}
            if "generations.jsonl" in names:
                suites.append(Path(entry.path).name)
    return sorted(suites)


def load_generations(client: MlflowClient, run_id: str, suite: str, prefix: str = "eval") -> pd.DataFrame:
    """The rows of `<prefix>/<suite>/generations.jsonl`, with GENERATION_COLUMNS always present
    (the evaluator's `sample_index` is also accepted as `sample`)."""
    artifact = f"{prefix}/{suite}/generations.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, artifact, tmp)
        except Exception as exc:  # MLflow raises different types per artifact store
            raise DataError(f"Run {run_id} has no artifact {artifact} ({type(exc).__name__}); "
                            f"expected the evaluator's generations for suite {suite!r}.") from None
        rows = read_jsonl(Path(local), f"run {run_id} artifact {artifact}")
    frame = pd.DataFrame(rows)
    if "sample_index" not in frame and "sample" in frame:
        frame = frame.rename(columns={"sample": "sample_index"})
    for column in GENERATION_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(GENERATION_COLUMNS) + [c for c in frame.columns if c not in GENERATION_COLUMNS]]


def read_jsonl(path: Path, where: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}, line {number}: not valid JSON ({exc.msg}); expected one "
                                "object per line with id, prompt, output, length, score.") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}, line {number}: got {type(row).__name__}, expected a JSON object.")
            rows.append(row)
    return rows


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else MLflow's own default."""
    import mlflow
    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
