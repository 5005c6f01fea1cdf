"""Altair charts (they ship with Streamlit): metric curves with the selected checkpoint marked,
and the method x task-mix heatmap. Pure functions from frames to charts."""

from __future__ import annotations

import altair as alt
import pandas as pd


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """Exponential moving average (weight 0 = raw), the same smoothing TensorBoard offers."""
    return values if weight <= 0 else values.ewm(alpha=1.0 - weight, adjust=False).mean()


def checkpoint_marks(history: pd.DataFrame, selected: dict[str, float]) -> pd.DataFrame:
    """Per run, the curve's point at its selected step (the last logged step at or before it)."""
    rows = []
    for run, step in selected.items():
        if step is None or pd.isna(step):
            continue
        points = history[(history["run"] == run) & (history["step"] <= step)]
        if not points.empty:
            last = points.iloc[-1]
            rows.append({"run": run, "step": float(step), "value": float(last["value"])})
    return pd.DataFrame(rows, columns=["run", "step", "value"])


def curves_chart(
    history: pd.DataFrame, selected: dict[str, float], metric: str, smoothing: float = 0.0, height: int = 300
) -> alt.LayerChart:
    """Lines of `value` vs `step` per `run`; a dashed rule and a dot at each selected checkpoint."""
    history = history.sort_values(["run", "step"]).copy()
    history["value"] = history.groupby("run", group_keys=False)["value"].apply(lambda v: smooth(v, smoothing))
    marks = checkpoint_marks(history, selected)
    color = alt.Color("run:N", legend=alt.Legend(orient="right", labelLimit=320, title=None))
    x = alt.X("step:Q", title="optimizer step")
    lines = (
        alt.Chart(history)
        .mark_line(strokeWidth=1.8)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=color,
            tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", format=".4g")],
        )
    )
    rules = alt.Chart(marks).mark_rule(strokeDash=[4, 3], opacity=0.55).encode(x=x, color=color)
    dots = (
        alt.Chart(marks)
        .mark_point(filled=True, size=90, opacity=1)
        .encode(
            x=x,
            y="value:Q",
            color=color,
            tooltip=["run:N", alt.Tooltip("step:Q", title="selected step"), alt.Tooltip("value:Q", format=".4g")],
        )
    )
    return (lines + rules + dots).properties(title=metric, height=height)


def heatmap_chart(cells: pd.DataFrame, metric: str, row_order: list[str], column_order: list[str]) -> alt.LayerChart:
    """cells: label, task_mix, value, text -> colored grid with the value printed in each cell."""
    x = alt.X("task_mix:N", sort=column_order, title=None, axis=alt.Axis(orient="top", labelAngle=0))
    y = alt.Y("label:N", sort=row_order, title=None, axis=alt.Axis(labelLimit=260, labelFontSize=12))
    rect = (
        alt.Chart(cells)
        .mark_rect()
        .encode(
            x=x,
            y=y,
            color=alt.Color("value:Q", title=metric, scale=alt.Scale(scheme="viridis")),
            tooltip=["label:N", "task_mix:N", alt.Tooltip("value:Q", format=".4g"), "text:N"],
        )
    )
    middle = float(cells["value"].median()) if not cells.empty else 0.0
    text = (
        alt.Chart(cells)
        .mark_text(fontSize=13)
        .encode(
            x=x,
            y=y,
            text="text:N",
            color=alt.condition(f"datum.value > {middle}", alt.value("black"), alt.value("white")),
        )
    )
    return (rect + text).properties(height=max(120, 44 * len(row_order)))
