"""`harness report SWEEP.yaml --out DIR`: report.md and figures/ from MLflow (harness/cli.py parses flags)."""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.errors import HarnessError
from harness.tracking import default_tracking_uri
from results.report.figures import write_figures
from results.report.markdown import render
from results.sweep_results import DEFAULT_OBJECTIVE, load_report_data


def resolve_experiment(sweep_path: str | None, experiment: str | None) -> tuple[str, str | None, tuple[str, str]]:
    """(experiment name, sweep name, (objective metric, direction)) from the sweep file and/or --experiment."""
    if sweep_path is None:
        if not experiment:
            raise HarnessError(
                "harness report needs a sweep file (SWEEP.yaml) or --experiment NAME to know "
                "which MLflow experiment to read."
            )
        return experiment, None, DEFAULT_OBJECTIVE
    from harness.sweep.spec import load_sweep

    sweep = load_sweep(sweep_path)
    objective = (sweep.spec.objective.metric, sweep.spec.objective.direction)
    return experiment or sweep.experiment, sweep.name, objective


def command_line(sweep_path: str | None, out_dir: str, tracking_uri: str | None, experiment: str | None) -> str:
    parts = ["harness", "report", *([sweep_path] if sweep_path else []), "--out", out_dir]
    parts += ["--tracking-uri", tracking_uri] if tracking_uri else []
    parts += ["--experiment", experiment] if experiment else []
    return " ".join(shlex.quote(p) for p in parts)


def report_command(
    sweep_path: str | None, out_dir: str, tracking_uri: str | None = None, experiment: str | None = None
) -> Path:
    """Write `out_dir/report.md` and `out_dir/figures/*.png` from MLflow; returns report.md's path."""
    name, sweep, objective = resolve_experiment(sweep_path, experiment)
    uri = tracking_uri or default_tracking_uri()
    report = load_report_data(uri, name, sweep, objective)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(report, out / "figures")
    text = render(
        report,
        command_line(sweep_path, out_dir, tracking_uri, experiment),
        {name: path.relative_to(out).as_posix() for name, path in figures.items()},
    )
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
