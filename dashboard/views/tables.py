"""Table views: Leaderboard, Paper tables, Grid.

Each `render_*` takes the app's context (`ctx.runs` = the filtered runs frame, `ctx.uri`,
`ctx.ui_url`); the frame-building helpers are plain functions so tests can check them directly.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import data, paper
from dashboard.views import charts

AXIS_COLUMNS = ["method", "sync_every", "ref_sync_every", "task_mix"]


def display_name(column: str) -> str:
    """`eval/tiny_math/pass_at_1` -> `tiny_math/pass_at_1`; final scores say so, a ground truth too."""
    if column.endswith("/" + data.TRUTH_METRIC):
        column += " (truth)"
    if column.startswith("eval_final/"):
        return "final " + column[len("eval_final/") :]
    return column[len("eval/") :] if column.startswith("eval/") else column


def ordered_mixes(mixes) -> list[str]:
    return sorted(mixes, key=data.mix_sort_key)


def table_height(rows: int, cap: int = 24) -> int:
    """Pixels that show up to `cap` rows without an inner scrollbar (35 px a row + header)."""
    return 38 + 35 * min(max(rows, 1), cap)


def by_first_row(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns in the order their first value appears going down the (paper-ordered) rows, so
    the math suites come first when verifiable runs are listed first."""

    def first(column: str) -> int:
        filled = frame[column].notna().to_numpy().nonzero()[0]
        return int(filled[0]) if len(filled) else len(frame)

    return sorted(columns, key=lambda c: (first(c), c))


def score_columns(frame: pd.DataFrame, all_metrics: bool, final: bool) -> list[str]:
    """The headline score per suite (or every score), each followed by its spread columns; a headline
    by its suite's hidden ground truth (`quality`) and SE where the task has one."""
    chosen = []
    trained = frame[frame["method"] != "seed"] if "method" in frame else frame
    for is_final in [False, True] if final else [False]:
        scores = data.eval_score_columns(frame, is_final) if all_metrics else data.headline_columns(frame, is_final)
        for score in by_first_row(trained, scores):
            spreads = data.spread_columns(frame, score)
            chosen += [score] + (spreads if all_metrics else spreads[:1])
            truth = None if all_metrics else data.truth_column(frame, score)
            if truth:
                chosen += [truth] + data.spread_columns(frame, truth)[:1]
    return chosen


def leaderboard_frame(
    runs: pd.DataFrame,
    uri: str,
    ui_url: str,
    *,
    aggregate: bool = False,
    all_metrics: bool = False,
    final: bool = False,
) -> pd.DataFrame:
    """What the Leaderboard shows: one row per run (or per cell when aggregating seeds)."""
    many_sweeps = runs["sweep"].nunique() > 1
    axes = AXIS_COLUMNS + (["variant"] if "variant" in runs and runs["variant"].astype(bool).any() else [])
    if aggregate:
        cells = data.seed_aggregate(runs)
        scores = score_columns(cells, all_metrics, final)
        head = (["sweep"] if many_sweeps else []) + ["label", *axes, "n_seeds", "seeds"]
        table = cells[head + ["selected_step"] * ("selected_step" in cells) + scores + ["duration_s"]]
    else:
        scores = score_columns(runs, all_metrics, final)
        not_done = (runs["status"] != "FINISHED").any()
        head = (
            ["run", "mlflow"] + (["sweep"] if many_sweeps else []) + [*axes, "seed"] + (["status"] if not_done else [])
        )
        table = runs.assign(
            run=data.run_labels(runs),
            mlflow=[data.run_url(uri, e, r, ui_url) for e, r in zip(runs["experiment_id"], runs["run_id"])],
        )
        errors = ["error"] if runs["error"].astype(bool).any() else []
        table = table[head + ["selected_step"] * ("selected_step" in runs) + scores + ["duration_s"] + errors]
    table = table.assign(duration_s=table["duration_s"] / 60.0).rename(columns={"duration_s": "minutes"})
    return table.rename(columns=display_name).reset_index(drop=True)


def column_config(table: pd.DataFrame) -> dict:
    config = {
        "run": st.column_config.TextColumn("run", pinned=True),
        "label": st.column_config.TextColumn("method / s", pinned=True),
        "mlflow": st.column_config.LinkColumn("mlflow", display_text="open ↗", width="small"),
        "sync_every": st.column_config.TextColumn("s", help="generator sync interval (inf = offline)"),
        "ref_sync_every": st.column_config.TextColumn("ref s", help="reference sync interval"),
        "task_mix": st.column_config.TextColumn("task mix"),
        "variant": st.column_config.TextColumn("variant", help="other config params that set the cell apart"),
        "selected_step": st.column_config.NumberColumn("selected step", format="%d"),
        "minutes": st.column_config.NumberColumn("minutes", format="%.1f"),
    }
    for column in table.columns:
        if "/" in column:  # spreads get short headers: they always follow their score
            label = (
                "± SE"
                if column.endswith("_se")
                else "CI low"
                if column.endswith("/ci_low")
                else "CI high"
                if column.endswith("/ci_high")
                else column
            )
            config[column] = st.column_config.NumberColumn(label, format="%.2f", help=column)
    return config


def status_notes(runs: pd.DataFrame) -> None:
    """Say why rows lack scores: still training, failed, or finished but never evaluated."""
    scored = (
        runs[data.eval_score_columns(runs)].notna().any(axis=1)
        if data.eval_score_columns(runs)
        else pd.Series(False, index=runs.index)
    )
    running = runs[runs["status"].isin(["RUNNING", "SCHEDULED"])]
    if len(running):
        st.info(
            f"{len(running)} run(s) still running: {', '.join(data.run_labels(runs)[running.index][:6])}. "
            "They get evaluation scores when training ends; press Refresh (data is cached for 30 s)."
        )
    failed = runs[runs["status"].isin(["FAILED", "KILLED"])]
    if len(failed):
        st.warning(
            f"{len(failed)} run(s) failed or were killed: {', '.join(data.run_labels(runs)[failed.index][:6])}. "
            "The error column has the end of each one's log; open it in MLflow for the rest."
        )
    unevaluated = runs[(runs["status"] == "FINISHED") & ~scored]
    if len(unevaluated):
        names = ", ".join(data.run_labels(runs)[unevaluated.index][:6])
        st.warning(
            f"{len(unevaluated)} finished run(s) have no eval/* metrics: {names}. Evaluate them with "
            "`harness eval RUN_ID --suites ...` (the config's eval.suites was probably empty)."
        )


def render_leaderboard(ctx) -> None:
    runs = ctx.runs
    status_notes(runs)
    left, middle, right = st.columns(3)
    aggregate = left.toggle("Aggregate seeds (mean ± SE)", key="aggregate")
    all_metrics = middle.toggle("All eval metrics", key="all_metrics")
    final = right.toggle("Final-checkpoint scores too", key="final_scores")
    table = leaderboard_frame(runs, ctx.uri, ctx.ui_url, aggregate=aggregate, all_metrics=all_metrics, final=final)
    count = f"{len(table)} cells from {len(runs)} runs" if aggregate else f"{len(table)} runs"
    st.caption(
        f"{count} · click a column header to sort · scores are each run's selected checkpoint "
        "(highest length-normalized validation reward)" + (" · SE across seeds" if aggregate else "")
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config=column_config(table),
        key="leaderboard_table",
        height=table_height(len(table)),
        placeholder="—",
    )
    st.download_button(
        "Download CSV", table.to_csv(index=False).encode("utf-8"), file_name="leaderboard.csv", mime="text/csv"
    )


# -- paper tables ----------------------------------------------------------------------------


def format_score(mean: float, se: float) -> str:
    if mean is None or pd.isna(mean):
        return "—"
    return f"{mean:.1f} ± {se:.1f}" if se is not None and not pd.isna(se) else f"{mean:.1f}"


def paper_display(table: pd.DataFrame, many_sweeps: bool) -> pd.DataFrame:
    """Our `mean ± SE` strings next to the paper's numbers, one row per method."""
    out = pd.DataFrame({"method": table["label"]})
    if many_sweeps:
        out["sweep"] = table["sweep"]
    out["seeds"] = table["n_seeds"]
    for column in table.columns:
        if column.startswith("eval/") and not column.endswith("_se"):
            out[display_name(column)] = [format_score(m, s) for m, s in zip(table[column], table[f"{column}_se"])]
    for column in table.columns:
        if column.startswith("paper: "):
            out[column] = [("—" if v is None or pd.isna(v) else f"{v:.1f}") for v in table[column]]
    return out


def render_paper_tables(ctx) -> None:
    tables = data.paper_tables(ctx.runs)
    if not tables:
        st.info("No trained task mix among the selected runs yet; the paper tables fill in as runs finish.")
        return
    st.caption(
        f"Ours: mean ± SE over seeds (one seed: the evaluator's SE) at the selected checkpoint. "
        f"Paper: {paper.MODEL}, headline table of {paper.PAPER}. Different models and suites: "
        "compare the ordering of methods, not absolute values."
    )
    many_sweeps = ctx.runs["sweep"].nunique() > 1
    for mix in ordered_mixes(tables):
        st.subheader(mix)
        if mix not in paper.BENCHMARKS_BY_MIX:
            st.caption("The paper's headline table has no rows for this task mix.")
        shown = paper_display(tables[mix], many_sweeps)
        st.dataframe(shown, hide_index=True, key=f"paper_{mix}", height=table_height(len(shown)))


# -- grid ------------------------------------------------------------------------------------


def grid_metric_options(runs: pd.DataFrame) -> list[str]:
    """Headline scores first, then other scores, selected step, run time, last step-wise values."""
    headline = by_first_row(runs[runs["method"] != "seed"], data.headline_columns(runs))
    rest = [c for c in data.eval_score_columns(runs, None) if c not in headline]
    extra = [c for c in ("selected_step", "duration_s") if c in runs]
    return headline + rest + extra + data.step_metric_keys(runs)


def grid_cells(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """label, task_mix, value, se, text for the heatmap: seed-aggregated, seed row in every mix."""
    parts = [data.with_seed_rows(runs, mix) for mix in data.task_mixes(runs)]
    if not parts:
        return pd.DataFrame(columns=["label", "task_mix", "value", "se", "text", "order"])
    cells = data.seed_aggregate(pd.concat(parts, ignore_index=True))
    se = cells[f"{metric}_se"] if f"{metric}_se" in cells else pd.Series(math.nan, index=cells.index)
    out = pd.DataFrame(
        {
            "label": cells["label"],
            "task_mix": cells["task_mix"],
            "value": pd.to_numeric(cells[metric], errors="coerce"),
            "se": se,
        }
    )
    out["order"] = [data.row_order_key(m, s) for m, s in zip(cells["method"], cells["sync_every"])]
    out = out.dropna(subset=["value"])
    out["text"] = [f"{v:.3g} ± {s:.2g}" if not pd.isna(s) else f"{v:.3g}" for v, s in zip(out["value"], out["se"])]
    return out


def render_grid(ctx) -> None:
    options = grid_metric_options(ctx.runs)
    if not options:
        st.info("The selected runs have logged no metrics yet.")
        return
    metric = st.selectbox(
        "Metric",
        options,
        format_func=display_name,
        key="grid_metric",
        help="eval scores, or the last logged value of a step-wise metric",
    )
    cells = grid_cells(ctx.runs, metric)
    if cells.empty:
        st.info(f"No run among the selected ones has logged {metric} yet.")
        return
    if ctx.runs["sweep"].nunique() > 1:
        st.warning(
            "Several sweeps are selected: cells with the same method and s are shown per sweep "
            "in the table below but overlap in the heatmap; pick one sweep in the sidebar."
        )
    rows = list(dict.fromkeys(cells.sort_values("order")["label"]))
    columns = ordered_mixes(cells["task_mix"].unique())
    st.altair_chart(
        charts.heatmap_chart(cells.drop(columns="order"), display_name(metric), rows, columns), width="stretch"
    )
    note = " (each run's last logged value)" if metric in data.step_metric_keys(ctx.runs) else ""
    st.caption(f"{display_name(metric)}{note}: mean over seeds ± SE; the seed model is shown in every column.")
    pivot = cells.pivot_table(index="label", columns="task_mix", values="text", aggfunc="first")
    pivot = pivot.reindex(index=rows, columns=columns)
    pivot.index.name = "method / s"
    st.dataframe(pivot, key="grid_table", placeholder="—")
