"""The report's PNG figures (matplotlib, headless Agg backend, 150 dpi).

    paths = write_figures(report, out_dir / "figures")   # {figure id: Path}

One figure per validation curve (a subplot per task mix, a line per method and s: the mean over
seeds with a ± SE band when there are several), the final score against s (log axis, offline at
the right end, GRPO as its own marker, the seed model as a dotted line), and the wall-clock split
per phase (a stacked horizontal bar per cell). A panel with nothing logged says so instead of
being left out, so report.md never links a missing file.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from results.labels import sync_value  # noqa: E402
from results.metrics import suite_of  # noqa: E402
from results.numbers import compute_frame, curve, mix_scores  # noqa: E402
from results.sweep_results import CURVES, PHASES, ReportData  # noqa: E402

DPI = 150
# Fixed colours per paper row, so a method looks the same in every figure.
ROW_COLOURS = {
    "offline DPO": "#1f77b4",
    "semi-online DPO s=100": "#17becf",
    "semi-online DPO s=10": "#2ca02c",
    "semi-online DPO s=5": "#bcbd22",
    "online DPO": "#ff7f0e",
    "GRPO": "#d62728",
}
EXTRA_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#393b79", "#637939", "#843c39")
PHASE_COLOURS = {"generate": "#4c72b0", "score": "#dd8452", "train": "#55a868", "sync": "#c44e52"}
SUITE_MARKERS = ("o", "s", "^", "v", "P", "X")


def colour_map(report: ReportData) -> dict[str, str]:
    labels = [c.label for mix in report.mixes for c in report.cells(mix)]
    extra = iter(EXTRA_COLOURS * 4)
    return {label: ROW_COLOURS.get(label) or next(extra) for label in dict.fromkeys(labels)}


def panels(count: int, width: float = 5.0, height: float = 3.6):
    fig, axes = plt.subplots(
        1, max(count, 1), figsize=(width * max(count, 1), height), squeeze=False, layout="constrained"
    )
    return fig, list(axes[0])


def legend_below(ax, offset: float = -0.2) -> None:
    """Under the panel (below the x label), so a legend never hides a line however many cells there are."""
    ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, offset), ncol=2)


def empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(report: ReportData, key: str, colours: dict[str, str], path: Path) -> Path:
    """`key` against step: a subplot per task mix, mean over seeds with a ± SE band."""
    fig, axes = panels(len(report.mixes))
    for ax, mix in zip(axes, report.mixes or ["(no task mix)"]):
        drawn = 0
        for cell in report.cells(mix):
            points = curve(report, cell, key)
            if points.empty:
                continue
            style = "--" if cell.method == "grpo" else "-"
            ax.plot(
                points["step"],
                points["mean"],
                style,
                color=colours[cell.label],
                label=cell.label,
                marker="o",
                markersize=3,
                linewidth=1.6,
            )
            band = points.dropna(subset=["se"])
            if not band.empty:
                ax.fill_between(
                    band["step"],
                    band["mean"] - band["se"],
                    band["mean"] + band["se"],
                    color=colours[cell.label],
                    alpha=0.18,
                    linewidth=0,
                )
            drawn += 1
        ax.set_title(mix)
        if not drawn:
            empty_panel(ax, f"no {key} logged")
            continue
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(CURVES.get(key, key))
        ax.grid(alpha=0.3)
        legend_below(ax)
    fig.suptitle(f"{key} (mean over seeds, band ± SE)", fontsize=11)
    return save(fig, path)


def s_position(sync_every: str, offline_x: float) -> float:
    value = sync_value(sync_every)
    return offline_x if math.isinf(value) else value


def plot_score_vs_s(report: ReportData, path: Path) -> Path:
    """Headline score (selected checkpoint) against s per task mix and suite."""
    fig, axes = panels(len(report.mixes), width=5.4, height=4.0)
    for ax, mix in zip(axes, report.mixes or ["(no task mix)"]):
        cells, scores = mix_scores(report, mix) if report.mixes else (pd.DataFrame(), [])
        trained = cells[cells["method"] != "seed"] if not cells.empty else cells
        finite = [v for v in (sync_value(s) for s in trained.get("sync_every", [])) if math.isfinite(v)]
        offline_x = 10.0 * max(finite, default=10.0)
        ax.set_title(mix)
        if not scores or trained.empty:
            empty_panel(ax, "no evaluation scores logged")
            continue
        for index, score in enumerate(scores):
            marker = SUITE_MARKERS[index % len(SUITE_MARKERS)]
            colour = f"C{index}"
            dpo = trained[trained["method"] == "dpo"].copy()
            dpo["x"] = [s_position(s, offline_x) for s in dpo["sync_every"]]
            dpo = dpo.dropna(subset=[score]).sort_values("x")
            if not dpo.empty:
                ax.errorbar(
                    dpo["x"],
                    dpo[score],
                    yerr=dpo[f"{score}_se"].fillna(0),
                    color=colour,
                    marker=marker,
                    capsize=3,
                    label=f"DPO · {suite_of(score)}",
                )
            grpo = trained[trained["method"] == "grpo"].dropna(subset=[score])
            if not grpo.empty:
                ax.errorbar(
                    [s_position(s, offline_x) for s in grpo["sync_every"]],
                    grpo[score],
                    yerr=grpo[f"{score}_se"].fillna(0),
                    color=colour,
                    marker="D",
                    markersize=8,
                    markerfacecolor="none",
                    linestyle="none",
                    capsize=3,
                    label=f"GRPO · {suite_of(score)}",
                )
            seed = cells[(cells["method"] == "seed")].dropna(subset=[score])
            if not seed.empty:
                ax.axhline(
                    seed[score].iloc[0], color=colour, linestyle=":", linewidth=1.2, label=f"seed · {suite_of(score)}"
                )
        ticks = sorted(set(finite)) + [offline_x]
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks[:-1]] + ["inf\n(offline)"])
        ax.minorticks_off()
        ax.set_xlim(min(ticks) / 1.6, offline_x * 1.6)
        ax.set_xlabel("s (optimizer steps between generator syncs)")
        ax.set_ylabel("score at the selected checkpoint")
        ax.grid(alpha=0.3)
        legend_below(ax, offset=-0.3)  # clear of the two-line "inf (offline)" tick label
    fig.suptitle("Final score vs s (mean ± SE over seeds)", fontsize=11)
    return save(fig, path)


def plot_phase_split(report: ReportData, path: Path) -> Path:
    """Seconds per phase per cell: a stacked horizontal bar each, a panel per task mix."""
    frames = {mix: compute_frame(report, mix) for mix in report.mixes}
    heights = [max(len(f), 1) for f in frames.values()] or [1]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(8, 1.0 + 0.42 * sum(heights) + 0.5 * len(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    axes = [row[0] for row in axes]
    for ax, (mix, frame) in zip(axes, frames.items() or [("(no task mix)", pd.DataFrame())]):
        ax.set_title(mix, fontsize=10, loc="left")
        if frame.empty or frame["total_s"].isna().all():
            empty_panel(ax, "no time/* metrics logged")
            continue
        y = list(range(len(frame)))[::-1]  # paper order from the top
        left = pd.Series(0.0, index=frame.index)
        for phase in PHASES:
            values = frame[f"{phase}_s"].fillna(0.0)
            ax.barh(y, values, left=left, color=PHASE_COLOURS[phase], label=phase, height=0.7)
            left = left + values
        ax.set_yticks(y)
        ax.set_yticklabels(frame["label"])
        ax.set_xlabel("seconds (sum over steps, mean over seeds)")
        ax.grid(axis="x", alpha=0.3)
    handles, labels = next(
        ((a.get_legend_handles_labels()) for a in axes if a.get_legend_handles_labels()[0]), ([], [])
    )
    if handles:
        fig.legend(
            handles, labels, loc="upper center", ncol=len(PHASES), frameon=False, fontsize=9, bbox_to_anchor=(0.5, 1.0)
        )
    fig.suptitle("Wall-clock split per phase", fontsize=11, y=1.04)
    fig.tight_layout()
    return save(fig, path)


def write_figures(report: ReportData, folder: Path) -> dict[str, Path]:
    """Every figure of the report: {figure id: PNG path}, in the order report.md shows them."""
    colours = colour_map(report)
    paths = {}
    for key in CURVES:
        paths[key] = plot_curves(report, key, colours, folder / f"{key.replace('/', '_')}.png")
    paths["score vs s"] = plot_score_vs_s(report, folder / "score_vs_s.png")
    paths["phase split"] = plot_phase_split(report, folder / "phase_split.png")
    return paths
