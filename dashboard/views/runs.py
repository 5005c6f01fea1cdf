"""Per-run views: Curves, Compare, Samples.

Loaders on `ctx` (cached in app.py): `ctx.histories(run_ids, keys)`, `ctx.params(run_ids)`,
`ctx.suites(run_id, prefix)`, `ctx.generations(run_id, suite, prefix)` (prefix `eval` or `eval_final`). Model text (prompts, outputs, verdicts)
is only ever shown through st.dataframe, st.text and st.code, never as markdown or HTML.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.views import charts
from dashboard.views.tables import display_name

DEFAULT_CURVES = ("val/len_norm_reward", "train/entropy", "val/response_len", "val/reward")
MAX_DEFAULT_RUNS = 8


def labelled(runs: pd.DataFrame) -> dict[str, str]:
    """label -> run_id, in leaderboard order."""
    return dict(zip(data.run_labels(runs), runs["run_id"]))


def default_runs(runs: pd.DataFrame, count: int) -> list[str]:
    """The first trained runs (the seed baseline has no curves)."""
    trained = runs[runs["method"] != "seed"]
    return list(data.run_labels(runs)[trained.index][:count])


def history_for(ctx, labels: dict[str, str], chosen: list[str], metric: str) -> pd.DataFrame:
    history = ctx.histories([labels[c] for c in chosen], [metric])
    by_id = {run_id: label for label, run_id in labels.items()}
    return history.assign(run=history["run_id"].map(by_id))


def selected_steps(runs: pd.DataFrame, labels: dict[str, str], chosen: list[str]) -> dict[str, float]:
    if "selected_step" not in runs:
        return {}
    step_of = dict(zip(runs["run_id"], runs["selected_step"]))
    return {label: step_of.get(labels[label]) for label in chosen}


def draw_curves(ctx, labels: dict[str, str], chosen: list[str], metrics: list[str], smoothing: float) -> None:
    marks = selected_steps(ctx.runs, labels, chosen)
    for metric in metrics:  # one full-width chart per metric: the legend needs the room
        history = history_for(ctx, labels, chosen, metric)
        if history.empty:
            st.info(f"None of the chosen runs logged {metric}.")
            continue
        st.altair_chart(charts.curves_chart(history, marks, metric, smoothing), width="stretch")


def render_curves(ctx) -> None:
    keys = data.step_metric_keys(ctx.runs)
    if not keys:
        st.info("The selected runs have logged no step-wise metrics yet (train/*, val/*, time/*).")
        return
    labels = labelled(ctx.runs)
    chosen = st.multiselect("Runs", list(labels), default=default_runs(ctx.runs, MAX_DEFAULT_RUNS), key="curve_runs")
    defaults = [k for k in DEFAULT_CURVES if k in keys][:2] or keys[:1]
    metrics = st.multiselect("Metrics", keys, default=defaults, key="curve_metrics")
    smoothing = st.slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="curve_smoothing")
    if not chosen or not metrics:
        st.info("Pick at least one run and one metric.")
        return
    st.caption(
        f"{len(chosen)} runs · dashed line and dot: each run's selected checkpoint. Paper: entropy "
        "collapses on math for every method but offline DPO; response length grows on chat."
    )
    draw_curves(ctx, labels, chosen, metrics, smoothing)


# -- compare ---------------------------------------------------------------------------------


def metric_comparison(runs: pd.DataFrame, labels: dict[str, str], chosen: list[str]) -> pd.DataFrame:
    """Rows = selected step, eval scores with SE, run minutes; columns = runs (+ difference of two)."""
    picked = runs.set_index("run_id").loc[[labels[c] for c in chosen]]
    rows = ["selected_step"] * ("selected_step" in runs)
    for score in data.eval_score_columns(runs, None):
        rows += [score] + [c for c in data.spread_columns(runs, score) if c.endswith("_se")]
    table = picked[rows + ["duration_s"]].rename(columns={"duration_s": "run seconds"}).T.astype(float)
    table.columns = chosen
    table = table.dropna(how="all")
    if len(chosen) == 2:
        table[f"{chosen[1]} − {chosen[0]}"] = table[chosen[1]] - table[chosen[0]]
    table.index = [display_name(i) for i in table.index]
    table.index.name = "metric"
    return table


def render_compare(ctx) -> None:
    labels = labelled(ctx.runs)
    chosen = st.multiselect("Runs to compare", list(labels), default=default_runs(ctx.runs, 2), key="compare_runs")
    if len(chosen) < 2:
        st.info("Pick two or more runs to compare.")
        return
    st.subheader("Params that differ")
    params = ctx.params([labels[c] for c in chosen])
    diff = data.param_diff(params).rename(columns={labels[c]: c for c in chosen})
    if diff.empty:
        st.info("These runs logged identical params.")
    else:
        st.dataframe(diff, key="compare_params")
    st.subheader("Metrics")
    st.dataframe(
        metric_comparison(ctx.runs, labels, chosen),
        key="compare_metrics",
        column_config={c: st.column_config.NumberColumn(format="%.4g") for c in chosen},
    )
    keys = data.step_metric_keys(ctx.runs)
    if keys:
        st.subheader("Curves")
        default = next((k for k in DEFAULT_CURVES if k in keys), keys[0])
        metric = st.selectbox("Metric", keys, index=keys.index(default), key="compare_metric")
        draw_curves(ctx, labels, chosen, [metric], 0.0)


# -- samples ---------------------------------------------------------------------------------


def filter_generations(frame: pd.DataFrame, which: str, needle: str = "") -> pd.DataFrame:
    """which: All / Correct / Incorrect (by `correct`, else score > 0); needle: substring of output."""
    if which != "All":
        if frame["correct"].notna().any():
            good = frame["correct"].fillna(False).astype(bool)
        else:
            good = pd.to_numeric(frame["score"], errors="coerce").fillna(0) > 0
        frame = frame[good if which == "Correct" else ~good]
    if needle:
        frame = frame[frame["output"].astype(str).str.contains(needle, case=False, regex=False)]
    return frame


def show_generation(row: pd.Series) -> None:
    """One generation in full; st.text / st.code render the model's text literally."""
    facts = [
        f"{name}: {row[name]}"
        for name in ("id", "sample_index", "score", "verdict", "correct", "length", "gold", "finish_reason")
        if name in row and not pd.isna(row[name])
    ]
    st.text(" · ".join(facts))
    st.caption("Prompt")
    st.code(str(row["prompt"]), language=None, wrap_lines=True)
    st.caption("Output")
    st.code(str(row["output"]), language=None, wrap_lines=True)


def render_samples(ctx) -> None:
    labels = labelled(ctx.runs)
    names = list(labels)
    default = default_runs(ctx.runs, 1)
    run = st.selectbox("Run", names, index=names.index(default[0]) if default else 0, key="samples_run")
    checkpoint = st.radio("Checkpoint", ["selected", "final"], horizontal=True, key="samples_checkpoint")
    prefix = "eval" if checkpoint == "selected" else "eval_final"
    suites = ctx.suites(labels[run], prefix)
    if not suites:
        st.info(
            f"This run has no {prefix}/<suite>/generations.jsonl artifact yet: the evaluator writes it "
            "when the run is evaluated (at the end of training, or with `harness eval RUN_ID`)."
        )
        return
    suite = st.selectbox("Suite", suites, key="samples_suite")
    try:
        generations = ctx.generations(labels[run], suite, prefix)
    except data.DataError as exc:
        st.warning(str(exc))
        return
    left, right = st.columns([1, 2])
    which = left.radio("Show", ["All", "Correct", "Incorrect"], horizontal=True, key="samples_filter")
    needle = right.text_input("Output contains", key="samples_search")
    shown = filter_generations(generations, which, needle).reset_index(drop=True)
    st.caption(f"{len(shown)} of {len(generations)} generations")
    if shown.empty:
        return
    st.dataframe(
        shown,
        hide_index=False,
        key="samples_table",
        placeholder="—",
        column_config={
            "prompt": st.column_config.TextColumn(width="medium"),
            "output": st.column_config.TextColumn(width="large"),
        },
    )
    index = st.number_input("Row to read in full", 0, len(shown) - 1, 0, key="samples_row")
    show_generation(shown.iloc[int(index)])
