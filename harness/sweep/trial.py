"""One sweep trial: its folder, its `harness train` command line, the tail of its log, how its
exit is described, and `Running`, the coordinator's record of it while its process runs.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from harness.errors import REQUEUE_EXIT_CODE
from harness.sweep.grid import show_value, yaml_value
from harness.sweep.objective import read_run_file
from harness.sweep.spec import Cell, Sweep

log = logging.getLogger("harness.sweep")
TAIL_LINES = 40


def trial_dir_of(sweep: Sweep, cell_key: str, slot: int) -> Path:
    return sweep.output_dir / "trials" / cell_key / str(slot)


def trial_command(
    sweep: Sweep,
    cell: Cell,
    slot: int,
    trial_number: int,
    params: list[str],
    trial_dir: Path,
    parent_run_id: str,
    resume: bool = False,
) -> list[str]:
    run_name = cell.key if sweep.slots == 1 else f"{cell.key}-t{slot}"
    tags = {
        "cell_key": cell.key,
        "harness.sweep": sweep.name,
        "harness.study": sweep.study_name,
        "harness.trial": trial_number,
        **{axis: show_value(axis, v) for axis, v in cell.axes.items()},
    }
    if sweep.slots > 1:
        tags["harness.slot"] = slot
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "train",
        str(sweep.base_path),
        *cell.overrides,
        *params,
        f"output_dir={yaml_value(str(trial_dir))}",
        f"tracking.experiment={yaml_value(sweep.experiment)}",
        f"tracking.run_name={yaml_value(run_name)}",
        "--parent-run-id",
        parent_run_id,
        "--no-progress",
    ]
    if resume:  # an earlier attempt made a run: continue it, from its last checkpoint if any
        command.append("--resume")
    for key, value in tags.items():
        command += ["--tag", f"{key}={value}"]
    return command


def log_tail(path: Path, offset: int, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-4000:]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (often the out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return {
        2: "exit code 2 (a config or data error)",
        130: "exit code 130 (interrupted)",
        REQUEUE_EXIT_CODE: f"exit code {REQUEUE_EXIT_CODE} (preempted after a checkpoint; the rerun resumes it)",
    }.get(code, f"exit code {code}")


def prepare_trial_dir(trial_dir: Path, cell: Cell, tracking_uri: str) -> None:
    """Make the trial's folder. A folder left by a different resolution of the cell (the sweep
    file changed) is moved aside rather than resumed; a run.json from another MLflow store is
    set aside so the trial starts a run in the current one."""
    marker = trial_dir / "sweep_cell.json"
    wanted = json.dumps({"overrides": list(cell.overrides)}, indent=1)
    if marker.is_file() and marker.read_text() != wanted:
        aside = trial_dir.with_name(f"{trial_dir.name}.replaced-{datetime.now():%Y%m%d-%H%M%S}")
        trial_dir.rename(aside)
        log.warning("%s: the cell's config changed since its last attempt; old folder moved to %s", trial_dir, aside)
    trial_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(wanted)
    run_file = trial_dir / "run.json"
    previous = read_run_file(trial_dir)
    if previous and previous.get("tracking_uri") not in (None, tracking_uri):
        run_file.rename(trial_dir / "run.json.other-store")


@dataclass
class Running:
    trial: FrozenTrial
    cell: Cell
    slot: int
    trial_dir: Path
    log_path: Path
    log_offset: int
    handle: Any
    started: float = field(default_factory=time.monotonic)
    run_id: str | None = None
    reported: set[int] = field(default_factory=set)
    last_prune_check: float = 0.0

    @property
    def number(self) -> int:
        return self.trial.number
