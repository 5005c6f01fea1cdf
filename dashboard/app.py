"""The Streamlit leaderboard over MLflow: `streamlit run dashboard/app.py -- --tracking-uri URI`.

Reads MLflow only, through the results layer (dashboard.data), so it runs on a laptop against a
remote tracking server. The tracking URI comes from `--tracking-uri`, else MLFLOW_TRACKING_URI,
else ./mlflow.db (the harness's rule, results.store.default_tracking_uri), and can be changed in
the sidebar. Views: Leaderboard, Paper tables, Grid, Curves, Compare,
Samples. MLflow answers are cached for 30 s (Refresh clears the cache).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import streamlit as st

# Fail fast on a dead server instead of MLflow's minutes of retries; no download progress bars.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

try:
    from dashboard import data
except ImportError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dashboard import data
from dashboard.views import runs as run_views
from dashboard.views import tables as table_views

VIEWS = {
    "Leaderboard": table_views.render_leaderboard,
    "Paper tables": table_views.render_paper_tables,
    "Grid": table_views.render_grid,
    "Curves": run_views.render_curves,
    "Compare": run_views.render_compare,
    "Samples": run_views.render_samples,
}
TTL_S = 30


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Our flags after `--`; unknown ones are ignored (under tests argv is pytest's)."""
    parser = argparse.ArgumentParser(prog="dashboard/app.py", allow_abbrev=False, add_help=False)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--mlflow-ui-url", default=None)
    return parser.parse_known_args(argv)[0]


# -- cached MLflow access (data.py stays free of Streamlit) ----------------------------------


@st.cache_resource(ttl=300, show_spinner=False)
def client_for(uri: str):
    return data.connect(uri)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def cached_sweeps(uri: str):
    return data.list_sweeps(client_for(uri))


@st.cache_data(ttl=TTL_S, show_spinner="Reading runs from MLflow…")
def cached_runs(uri: str, experiment_ids: tuple[str, ...]):
    return data.runs_frame(client_for(uri), experiment_ids)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def cached_histories(uri: str, run_ids: tuple[str, ...], keys: tuple[str, ...]):
    return data.metric_histories(client_for(uri), run_ids, keys)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def cached_params(uri: str, run_ids: tuple[str, ...]):
    return data.run_params(client_for(uri), run_ids)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def cached_suites(uri: str, run_id: str, prefix: str):
    return data.list_generation_suites(client_for(uri), run_id, prefix)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def cached_generations(uri: str, run_id: str, suite: str, prefix: str):
    return data.load_generations(client_for(uri), run_id, suite, prefix)


def context(uri: str, ui_url: str, runs) -> SimpleNamespace:
    """What the views get: the filtered runs and loaders bound to this tracking URI."""
    return SimpleNamespace(
        uri=uri,
        ui_url=ui_url,
        runs=runs,
        histories=lambda run_ids, keys: cached_histories(uri, tuple(run_ids), tuple(keys)),
        params=lambda run_ids: cached_params(uri, tuple(run_ids)),
        suites=lambda run_id, prefix="eval": cached_suites(uri, run_id, prefix),
        generations=lambda run_id, suite, prefix="eval": cached_generations(uri, run_id, suite, prefix),
    )


# -- sidebar ---------------------------------------------------------------------------------


def sidebar_settings(args: argparse.Namespace) -> tuple[str, str, str]:
    side = st.sidebar
    side.title("RL bridge leaderboard")
    view = side.radio("View", list(VIEWS), key="view")
    uri = side.text_input(
        "MLflow tracking URI", value=args.tracking_uri or data.default_tracking_uri(), key="tracking_uri"
    ).strip()
    ui_url = side.text_input(
        "MLflow UI URL (links, for sqlite/file stores)",
        value=args.mlflow_ui_url or os.environ.get("MLFLOW_UI_URL", data.DEFAULT_UI_URL),
        key="ui_url",
    ).strip()
    if side.button("Refresh", help=f"MLflow answers are cached for {TTL_S} s"):
        st.cache_data.clear()
        st.cache_resource.clear()
    return view, uri, ui_url


def filter_runs(sweeps, uri: str):
    """Sweep and axis filters in the sidebar; returns (all runs of the chosen sweeps, filtered)."""
    side = st.sidebar
    names = list(dict.fromkeys(sweeps["sweep"]))
    chosen = side.multiselect("Sweeps", names, default=names, key="sweeps")
    experiment_ids = tuple(sorted(set(sweeps.loc[sweeps["sweep"].isin(chosen), "experiment_id"])))
    runs = cached_runs(uri, experiment_ids)
    runs = runs[runs["sweep"].isin(chosen)]
    filtered = runs
    for axis in data.AXES:
        options = sorted(runs[axis].dropna().unique(), key=data.seed_sort_key)
        picked = side.multiselect(axis, options, default=[], placeholder="all", key=f"filter_{axis}")
        if picked:
            filtered = filtered[filtered[axis].isin(picked)]
    return runs, filtered.reset_index(drop=True)


def main() -> None:
    st.set_page_config(page_title="RL bridge leaderboard", page_icon="📊", layout="wide")
    view, uri, ui_url = sidebar_settings(parse_args(sys.argv[1:]))
    st.header(view)
    try:
        client_for(uri)
        sweeps = cached_sweeps(uri)
    except data.TrackingUnavailable as exc:
        st.warning(f"{exc}\n\nChange the tracking URI in the sidebar, then press Refresh.")
        return
    if sweeps.empty:
        st.info(
            f"No runs in the tracking store {uri} yet. Start a sweep (`harness sweep SWEEP.yaml`) or a "
            "run (`harness train CONFIG.yaml`) that logs here, then press Refresh."
        )
        return
    runs, filtered = filter_runs(sweeps, uri)
    if runs.empty:
        st.info("No training runs in the selected sweep(s) yet: trials appear here once they start.")
        return
    if filtered.empty:
        st.info("No run matches the sidebar filters; clear some of them.")
        return
    VIEWS[view](context(uri, ui_url, filtered))


main()
