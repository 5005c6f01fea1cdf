"""What the dashboard reads, all from the results layer (results/): MLflow -> pandas frames.

The dashboard's one import surface: views and app.py say `data.runs_frame(...)`, and every name
here is the results layer's own (no logic lives here). app.py wraps the loaders in short-TTL
caches; the tests call them directly against a real store.

    client = connect("http://mlflow:5000")
    sweeps = list_sweeps(client)                       # one row per sweep (experiment)
    runs = runs_frame(client, sweeps.experiment_id)    # one row per training run
    cells = seed_aggregate(runs)                       # mean +- SE over seeds per cell
    tables = paper_tables(runs)                        # {task_mix: paper-style table}
"""

from __future__ import annotations

from results.aggregate import paper_tables, seed_aggregate
from results.artifacts import (
    GENERATION_COLUMNS,
    list_generation_suites,
    load_generations,
    metric_histories,
    param_diff,
    run_params,
)
from results.errors import DataError, TrackingUnavailable
from results.labels import AXES, method_label, mix_sort_key, row_order_key, run_labels, seed_sort_key
from results.metrics import (
    TRUTH_METRIC,
    eval_score_columns,
    headline_columns,
    spread_columns,
    step_metric_keys,
    truth_column,
)
from results.runs import META_COLUMNS, runs_frame, task_mixes, with_seed_rows
from results.store import DEFAULT_UI_URL, connect, default_tracking_uri, list_sweeps, run_url, sqlite_path

__all__ = [
    "AXES",
    "DEFAULT_UI_URL",
    "DataError",
    "GENERATION_COLUMNS",
    "META_COLUMNS",
    "TrackingUnavailable",
    "connect",
    "default_tracking_uri",
    "eval_score_columns",
    "headline_columns",
    "list_generation_suites",
    "list_sweeps",
    "load_generations",
    "method_label",
    "metric_histories",
    "mix_sort_key",
    "paper_tables",
    "param_diff",
    "row_order_key",
    "run_labels",
    "run_params",
    "run_url",
    "runs_frame",
    "seed_aggregate",
    "seed_sort_key",
    "spread_columns",
    "sqlite_path",
    "step_metric_keys",
    "task_mixes",
    "TRUTH_METRIC",
    "truth_column",
    "with_seed_rows",
]
