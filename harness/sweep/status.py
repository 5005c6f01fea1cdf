"""Tables: the dry-run cell table, `harness status` (one row per cell), and the live progress line.

print(cell_table(sweep))                    # what each cell resolves to; creates nothing
rows = unit_rows(sweep, trials, client)     # state, progress, objective, MLflow run id
print(format_table(rows))
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

from harness.config import flatten, format_interval
from harness.errors import redact
from harness.sweep.grid import show_value
from harness.sweep.spec import Sweep
from harness.sweep.study import group_units, outcome_of, representative, unit_state

# Always shown in the dry-run table (the paper's hyperparameter table), plus any key that varies.
KEY_COLUMNS = (
    "ref_sync_every",
    "dpo.beta",
    "grpo.kl_coef",
    "train.adam_eps",
    "train.grad_clip",
    "train.lr",
    "train.max_new_tokens",
    "train.prompts_per_step",
    "train.steps",
    "eval.suites",
)


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    cells = [[_text(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format_interval(value) if value == float("inf") else f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def resolved_columns(sweep: Sweep) -> list[str]:
    flats = [flatten(cell.config.to_dict()) for cell in sweep.cells]
    axes = set(sweep.cells[0].axes)
    varying = [k for k in flats[0] if k not in axes and k != "output_dir" and len({repr(f.get(k)) for f in flats}) > 1]
    return [k for k in (*KEY_COLUMNS, *varying) if k not in axes and (k in KEY_COLUMNS or k in varying)]


def cell_table(sweep: Sweep) -> str:
    """One row per cell: its axis values and what the cell resolves to."""
    columns = list(dict.fromkeys(resolved_columns(sweep)))
    rows = []
    for cell in sweep.cells:
        flat = flatten(cell.config.to_dict())
        row: dict[str, Any] = {"cell": cell.key}
        row.update({axis: show_value(axis, value) for axis, value in cell.axes.items()})
        for key in columns:
            section = key.split(".")[0]
            unused = section in ("dpo", "grpo") and section != cell.config.method
            row[key] = None if unused else flat.get(key)
        rows.append(row)
    return format_table(rows)


def dry_run_text(sweep: Sweep, storage_url: str, example_command: list[str]) -> str:
    seeds = sorted({c.config.seed for c in sweep.cells})
    per_seed = len(sweep.cells) // max(len(seeds), 1)
    trials = f", {sweep.slots} search trials each" if sweep.slots > 1 else ""
    head = [
        f"sweep {sweep.name}: {len(sweep.cells)} cells ({per_seed} per seed x {len(seeds)} seed"
        f"{'s' if len(seeds) != 1 else ''}){trials}",
        f"  base config: {sweep.base_path}",
        f"  output dir:  {sweep.output_dir}",
        f"  study:       {sweep.study_name} at {redact(storage_url)}",
        f"  experiment:  {sweep.experiment}   objective: {sweep.spec.objective.direction} "
        f"{sweep.spec.objective.metric} at the checkpoint picked by rule {sweep.spec.objective.rule}",
    ]
    if sweep.spec.search:
        head.append(
            f"  search:      {', '.join(sweep.spec.search.params)} ({sweep.spec.search.sampler}, "
            f"pruner {sweep.spec.search.pruner.type})"
        )
    tail = ["", f"first cell runs: {shlex.join(example_command)}", "(dry run: nothing was created)"]
    return "\n".join(head + ["", cell_table(sweep)] + tail)


def unit_rows(sweep: Sweep, trials: list, client=None) -> list[dict[str, Any]]:
    """One row per (cell, slot) of the sweep file, in grid order."""
    grouped = group_units(trials)
    rows = []
    for cell in sweep.cells:
        for slot in range(sweep.slots):
            attempts = grouped.get((cell.key, slot), [])
            trial = representative(attempts)
            attrs = trial.user_attrs if trial else {}
            state = unit_state(attempts)
            row: dict[str, Any] = {"cell": cell.key}
            if sweep.slots > 1:
                row["slot"] = slot
            row.update({axis: show_value(axis, value) for axis, value in cell.axes.items()})
            row.update(
                {
                    "state": state if state != "FAIL" else f"FAIL({outcome_of(trial)})",
                    "attempts": len(attempts),
                    "progress": progress_text(client, attrs.get("mlflow_run_id"), cell.config.train.steps, state),
                    "objective": trial.value if trial is not None and state == "COMPLETE" else None,
                    "selected_step": attrs.get("selected_step"),
                    "trial": trial.number if trial else None,
                    "mlflow_run_id": attrs.get("mlflow_run_id"),
                    "host": attrs.get("harness.host"),
                }
            )
            if sweep.spec.search is not None:
                row.update({f"param:{k}": trial.params.get(k) if trial else None for k in sweep.spec.search.params})
            rows.append(row)
    return rows


def progress_text(client, run_id: str | None, total: int, state: str) -> str:
    if state == "COMPLETE":
        return f"{total}/{total}"
    if client is None or not run_id:
        return "-"
    try:
        history = client.get_metric_history(run_id, "train/loss")
    except Exception:  # noqa: BLE001 - a status table must not fail on one unreadable run
        return "?"
    step = max((m.step for m in history), default=0)
    return f"{step}/{total}"


def counts(sweep: Sweep, trials: list) -> dict[str, int]:
    grouped = group_units(trials)
    tally = {"done": 0, "running": 0, "failed": 0, "waiting": 0, "total": len(sweep.cells) * sweep.slots}
    for cell in sweep.cells:
        for slot in range(sweep.slots):
            state = unit_state(grouped.get((cell.key, slot), []))
            key = {"COMPLETE": "done", "PRUNED": "done", "RUNNING": "running", "FAIL": "failed"}.get(state, "waiting")
            tally[key] += 1
    return tally


def durations(trials: list) -> list[float]:
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state.name == "COMPLETE" and t.datetime_start and t.datetime_complete
    ]


class ProgressLine:
    """`[sweep tiny_grid] 5/18 done, 2 running, 1 failed, 10 waiting | 3m10s | ETA 9m` on stderr:
    redrawn in place on a terminal, a log line on change (or every minute) otherwise."""

    def __init__(self, name: str, jobs: int, enabled: bool = True, stream=None) -> None:
        self.name, self.jobs, self.enabled = name, jobs, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_text, self.last_emit = "", 0.0

    def update(self, tally: dict[str, int], trial_seconds: list[float], force: bool = False) -> None:
        if not self.enabled:
            return
        text = self.render(tally, trial_seconds)
        now = time.monotonic()
        core = text.split(" | ")[0]
        if self.tty and (force or now - self.last_emit >= 1.0):
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self.last_emit = now
        elif not self.tty and (force or core != self.last_text.split(" | ")[0] or now - self.last_emit >= 60):
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_emit = now
        self.last_text = text

    def render(self, tally: dict[str, int], trial_seconds: list[float]) -> str:
        elapsed = time.monotonic() - self.started
        left = tally["waiting"] + tally["running"]
        eta = "?"
        if trial_seconds and left:
            mean = sum(trial_seconds) / len(trial_seconds)
            eta = _clock(mean * -(-left // max(self.jobs, 1)))
        elif not left:
            eta = "0s"
        return (
            f"[sweep {self.name}] {tally['done']}/{tally['total']} done, {tally['running']} running, "
            f"{tally['failed']} failed, {tally['waiting']} waiting | {_clock(elapsed)} | ETA {eta}"
        )

    def note(self, message: str) -> None:
        """A line of its own (a failure, an interruption), shown even without the progress line."""
        self.stream.write(("\r\033[K" if self.enabled and self.tty else "") + f"[sweep {self.name}] {message}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.last_text:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
