"""report.md: the results layer's frames written as markdown tables and lists."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from harness.errors import redact

from results.formatting import DASH, fmt, fmt_pm, md_table
from results.labels import seed_sort_key
from results.metrics import (
    LC_MAX_SE,
    LC_MIN_LENGTH_OVERLAP,
    digits_for,
    is_score_column,
    metric_name,
    suite_of,
    truth_column,
)
from results.numbers import compute_frame, mix_scores, per_seed, selection_frame
from results.report.comparisons import paired_table, picks_paired_table, truth_at_picks, truth_at_picks_table
from results.paper import BENCHMARKS_BY_MIX, MODEL, PAPER_ANALOGUE_OF_SUITE, PAPER_BENCHMARK_OF_SUITE, paper_value
from results.report.observations import (
    compute_observations,
    curve_observations,
    score_observations,
    selection_observations,
)
from results.sweep_results import PHASES, ReportData


def results_table(report: ReportData, task_mix: str) -> tuple[str, list[str]]:
    """The paper-layout table of one task mix (each headline score followed by its suite's ground truth,
    if any; an LC win rate blanked where not identifiable, sweep_results.hide_unidentifiable_lc), and notes
    on cells with missing scores."""
    cells, scores = mix_scores(report, task_mix)
    columns = [c for s in scores for c in (s, truth_column(cells, s)) if c]
    header = [
        "method",
        *(suite_of(c) + " " + (f"{metric_name(c)} (truth)" if c not in scores else metric_name(c)) for c in columns),
        "selected step",
        "n seeds",
    ]
    rows, notes = [], []
    by_label = {c.label: c for c in report.cells(task_mix)}
    for _, agg in cells.iterrows():
        cell = by_label.get(agg["label"])
        step = per_seed(cell, "selected_step") if cell is not None else DASH
        runs = cell.runs if cell is not None else report.runs[report.runs["method"] == "seed"]
        hidden = {column for column in columns for rid in runs["run_id"] if (rid, column) in report.hidden}
        rows.append(
            [
                agg["label"],
                *(
                    f"{DASH} (not identifiable)"
                    if pd.isna(agg[c]) and c in hidden
                    else fmt_pm(agg[c], agg[f"{c}_se"], digits_for(c))
                    for c in columns
                ),
                step,
                str(agg["n_seeds"]),
            ]
        )
        if cell is not None:
            for score in (*scores, *(s.replace("eval/", "eval_final/", 1) for s in scores)):
                if score not in cell.runs:
                    notes.append(f"{agg['label']}: no run logged {score} (shown as —).")
                    continue
                missing = [
                    r["run_name"]
                    for _, r in cell.runs[cell.runs[score].isna()].iterrows()
                    if (r["run_id"], score) not in report.hidden
                ]  # hidden: noted with the reason
                if missing:
                    notes.append(
                        f"{agg['label']}: {score} missing in {', '.join(missing)}"
                        + (
                            " (shown as —)."
                            if len(missing) == len(cell.runs)
                            else "; the mean is over the other seeds."
                        )
                    )
    if not scores:
        notes.append(
            "No evaluation metrics (eval/<suite>/<metric>) in any run of this mix: the table has no "
            "score columns. Run `harness eval RUN_ID` or list eval suites in the run config."
        )
    if not (cells["method"] == "seed").any():
        notes.append(
            "No seed-model baseline run (method=seed) in this experiment, so there is no seed row; "
            "step-0 validation values are not benchmark scores and do not stand in for it."
        )
    return md_table(header, rows), notes


LENGTH_METRICS = ("avg_len", "mean_length")
DIAGNOSTIC_METRICS = ("lc_difficulty_term", "lc_length_overlap", "quality")  # quality: in the results table


def detail_columns(cells: pd.DataFrame, scores: list[str]) -> list[str]:
    """Each headline suite's other scores (e.g. the raw win rate next to the length-controlled one)
    and its mean response length, which the headline alone hides."""
    columns = []
    for score in scores:
        base = score.rsplit("/", 1)[0] + "/"
        columns += sorted(
            c
            for c in cells.columns
            if c.startswith(base)
            and c != score
            and metric_name(c) not in DIAGNOSTIC_METRICS
            and (is_score_column(c) or metric_name(c) in LENGTH_METRICS)
        )
    return columns


def detail_table(report: ReportData, task_mix: str) -> str | None:
    """The secondary metrics of one task mix, same rows as the results table; None if there are none."""
    cells, scores = mix_scores(report, task_mix)
    columns = detail_columns(cells, scores)
    if not columns:
        return None
    rows = [
        [agg["label"], *(fmt_pm(agg[c], agg[f"{c}_se"]) if f"{c}_se" in agg else fmt(agg[c]) for c in columns)]
        for _, agg in cells.iterrows()
    ]
    return md_table(["method", *(suite_of(c) + " " + metric_name(c) for c in columns)], rows)


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
        lines.append(
            f"{', '.join(others)}: not one of the paper's benchmarks for this mix, so the paper has no "
            "numbers for {}.".format("it" if len(others) == 1 else "them")
        )
    if real:
        lines.append(
            f"The paper's numbers are {MODEL} at paper scale; ours come from this sweep's model and "
            "data, so compare orderings, not levels.\n\n" + side_by_side(cells, real, PAPER_BENCHMARK_OF_SUITE)
        )
    if analogues:
        pairs = ", ".join(f"{suite_of(s)} for {PAPER_ANALOGUE_OF_SUITE[suite_of(s)]}" for s in analogues)
        lines.append(
            f"The tiny suites stand in for the paper's benchmarks ({pairs}): the same kind of task and "
            f"metric on a 3M-parameter model, not the same task. Only the orderings of the rows can be "
            f"compared with the paper's ({MODEL}).\n\n" + side_by_side(cells, analogues, PAPER_ANALOGUE_OF_SUITE)
        )
    return "\n\n".join(lines)


def side_by_side(cells: pd.DataFrame, scores: list[str], paper_name: dict[str, str]) -> str:
    header = ["method"] + [h for s in scores for h in (f"{suite_of(s)} (ours)", f"{paper_name[suite_of(s)]} (paper)")]
    rows = [
        [agg["label"]]
        + [
            v
            for s in scores
            for v in (fmt_pm(agg[s], agg[f"{s}_se"]), fmt(paper_value(agg["label"], paper_name[suite_of(s)])))
        ]
        for _, agg in cells.iterrows()
    ]
    return md_table(header, rows)


def compute_table(frame: pd.DataFrame) -> str:
    header = [
        "method",
        *(f"{p} s" for p in PHASES),
        "total s",
        "generate wait s",
        "trainer s",
        "generate share",
        "online ÷ this",
        "run wall clock s",
        "n seeds",
    ]
    rows = [
        [
            r["label"],
            *(fmt(r[f"{p}_s"]) for p in PHASES),
            fmt(r["total_s"]),
            fmt(r["generate_wait_s"]),
            fmt(r["trainer_s"]),
            DASH if pd.isna(r["generate_share"]) else f"{100 * r['generate_share']:.0f}%",
            fmt(r["speedup_vs_online"], 2),
            fmt(r["wall_s"]),
            str(r["n_seeds"]),
        ]
        for _, r in frame.iterrows()
    ]
    return md_table(header, rows)


def selection_table(frame: pd.DataFrame) -> str:
    scores = [c.split("|")[0] for c in frame.columns if c.endswith("|selected")]
    header = ["method", "selected step", "final step"]
    header += [h for s in scores for h in (f"{suite_of(s)} selected", f"{suite_of(s)} final", f"{suite_of(s)} Δ")]
    header += ["val length @selected", "val length @final", "val length @max val reward"]
    rows = []
    for _, r in frame.iterrows():
        diff = [
            v
            for s in scores
            for v in (
                fmt(r[f"{s}|selected"]),
                fmt(r[f"{s}|final"]),
                DASH if pd.isna(r[f"{s}|diff"]) else f"{r[f'{s}|diff']:+.1f}",
            )
        ]
        rows.append(
            [
                r["label"],
                r["selected_step"],
                r["final_step"],
                *diff,
                fmt(r["len_selected"]),
                fmt(r["len_final"]),
                fmt(r["len_max_reward"]),
            ]
        )
    return md_table(header, rows)


def bullet_list(lines: list[str], empty: str = "nothing to show") -> str:
    return "\n".join(f"- {line}" for line in lines) if lines else f"- ({empty})"


def render(report: ReportData, command: str, figures: dict[str, str]) -> str:
    """report.md's text; `figures` maps figure id -> path relative to report.md."""
    runs = report.runs
    seeds = sorted(runs.loc[runs["method"] != "seed", "seed"].astype(str).unique(), key=seed_sort_key)
    out = [
        f"# Report: {report.sweep or report.experiment}",
        "",
        "```",
        command,
        "```",
        "",
        f"- tracking URI: `{redact(report.tracking_uri)}`",
        f"- experiment: `{report.experiment}` (id {report.experiment_id})",
        f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- runs: {len(runs)} used of {report.n_runs_total} training runs in the experiment; "
        f"seeds: {', '.join(seeds) or 'none'} ({len(seeds)})",
        f"- task mixes: {', '.join(report.mixes) or 'none'}",
        "",
        "Scores are mean ± SE: the SE across seeds when a cell has more than one, else the run's own "
        "logged SE. Cells are compared paired by seed (each seed trains every cell): the mean per-seed "
        "difference ± the SE of those differences (their std / sqrt(n)), and how many of the n seeds agree in "
        "sign; the wording comes from the sign and whether |difference| > 2 SE. A cell is its method, s, "
        "reference sync, task mix and any other config param that sets its runs apart (shown in brackets). "
        "`quality (truth)` is the task's hidden ground truth (0..1, the tiny chat task's), which the judged "
        "win rate only imitates: where the two part ways the policy is gaming the judge. A run's LC win rate is "
        f"used only where identifiable: its own LC SE at most {LC_MAX_SE:g} points and at least "
        f"{100 * LC_MIN_LENGTH_OVERLAP:.0f}% of its answers no longer, and as many no shorter, than the "
        "baseline's (else equal length, where the LC is read, lies outside the data); the notes say why "
        "where it is not.",
        "",
    ]
    notes = list(report.notes)
    out += ["## Results", ""]
    for mix in report.mixes:
        table, mix_notes = results_table(report, mix)
        notes += [f"{mix}: {n}" for n in mix_notes]
        out += [f"### {mix}", "", table, ""]
        details = detail_table(report, mix)
        if details:
            out += [f"#### {mix}: other metrics of the same checkpoints", "", details, ""]
        paired = paired_table(report, mix)
        if paired:
            out += [f"#### {mix}: paired by seed", "", paired, ""]
        out += [f"#### {mix}: comparison with the paper", "", paper_table(report, mix), ""]
    out += ["## Figures", ""]
    out += [f"![{name}]({path})" + "\n" for name, path in figures.items()]
    out += [
        "## Compute",
        "",
        "Seconds per phase summed over a run's steps (`time/*_s`), mean over seeds; "
        "\"online ÷ this\" is online DPO's total over the cell's total (> 1: cheaper than online). "
        '"generate wait" is how long the trainer waited for rollouts (`time/generate_wait_s`) and "trainer" '
        "its own time in the loop (wait + score + train + sync): with `rollout.placement: worker` the worker "
        "generates a sync window ahead, so the wait, and the trainer's time, fall below the generate and total "
        "columns. That gap is what semi-online saves.",
        "",
    ]
    for mix in report.mixes:
        frame = compute_frame(report, mix)
        out += [f"### {mix}", "", compute_table(frame) if not frame.empty else "(no trained cells)", ""]
    out += [
        "## Selection",
        "",
        "The selected checkpoint (highest length-normalised validation reward) against "
        "the final one: scores (`eval/` vs `eval_final/`), and the validation response length at the selected, "
        "final and highest-validation-reward checkpoints.",
        "",
    ]
    for mix in report.mixes:
        frame = selection_frame(report, mix)
        out += [f"### {mix}", "", selection_table(frame) if not frame.empty else "(no trained cells)", ""]
        picks, pick_notes = truth_at_picks(report, mix)
        if not picks.empty:
            notes += [f"{mix}: {n}" for n in pick_notes]
            out += [
                f"#### {mix}: ground truth at the length-normalized and the max-val-reward pick",
                "",
                "Per run: the headline and the hidden quality at the selected (length-normalized) checkpoint "
                "and at the one with the highest validation reward (`eval_max_val_reward/`, from `harness eval "
                "RUN_ID --rule max_val_reward --as-alternative`; the selected scores when both rules pick one "
                "step).",
                "",
                truth_at_picks_table(picks),
                "",
                f"#### {mix}: the two picks compared, paired by seed",
                "",
                "Per cell: the score at the length-normalized pick minus the score at the max-val-reward pick, "
                "mean over the seeds scored at both ± the SE of those differences, and how many agree in sign.",
                "",
                picks_paired_table(picks),
                "",
            ]
    out += ["## Observations", ""]
    for mix in report.mixes:
        lines = score_observations(report, mix)
        lines += curve_observations(report, mix, "val/entropy", "entropy", 3)
        lines += curve_observations(report, mix, "val/response_len", "response length", 1)
        lines += curve_observations(report, mix, "val/quality", "validation quality (truth)", 3)
        lines += selection_observations(report, mix)
        lines += compute_observations(compute_frame(report, mix))
        out += [f"### {mix}", "", bullet_list(lines), ""]
    out += ["## Notes", "", bullet_list(notes, "none: every run has every metric"), ""]
    return "\n".join(out)
