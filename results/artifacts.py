"""Per-run details read from MLflow: metric histories, params, generations, checkpoints.json.

long = metric_histories(client, run_ids, keys)     # run_id, key, step, value, timestamp
series = histories(client, run_ids, keys)          # (run_id, key) -> values by step
frame = load_generations(client, run_id, suite)    # eval/<suite>/generations.jsonl rows
steps = checkpoint_steps(client, run_id)           # steps listed in checkpoints.json
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import pandas as pd
from mlflow.tracking import MlflowClient

from results.errors import DataError

GENERATION_COLUMNS = ("id", "sample_index", "prompt", "output", "length", "score", "verdict", "correct")


def metric_histories(client: MlflowClient, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Long frame run_id, key, step, value, timestamp of every logged point (sorted by step)."""
    rows = []
    for run_id in run_ids:
        for key in keys:
            for m in client.get_metric_history(run_id, key):
                rows.append((run_id, key, m.step, m.value, m.timestamp))
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return frame.sort_values(["run_id", "key", "step", "timestamp"]).reset_index(drop=True)


def histories(client, run_ids: list[str], keys: list[str]) -> dict[tuple[str, str], pd.Series]:
    """(run_id, key) -> values by step. A resumed run may log a step twice: the last write wins."""
    long = metric_histories(client, run_ids, list(dict.fromkeys(keys)))
    long = long.drop_duplicates(["run_id", "key", "step"], keep="last")
    return {
        (rid, key): group.set_index("step")["value"].astype(float)
        for (rid, key), group in long.groupby(["run_id", "key"], sort=False)
    }


def run_params(client: MlflowClient, run_ids: Iterable[str]) -> pd.DataFrame:
    """Params side by side: index = param name, one column per run id ("" where not logged)."""
    columns = {run_id: client.get_run(run_id).data.params for run_id in run_ids}
    frame = pd.DataFrame(columns).fillna("")
    frame.index.name = "param"
    return frame.sort_index()


def param_diff(params: pd.DataFrame) -> pd.DataFrame:
    """Only the params whose value differs between the runs."""
    if params.empty:
        return params
    return params[params.nunique(axis=1) > 1]


def list_generation_suites(client: MlflowClient, run_id: str, prefix: str = "eval") -> list[str]:
    """Suites with a `<prefix>/<suite>/generations.jsonl` artifact (prefix eval = selected
    checkpoint, eval_final = final checkpoint)."""
    suites = []
    for entry in client.list_artifacts(run_id, prefix):
        if entry.is_dir:
            names = {Path(f.path).name for f in client.list_artifacts(run_id, entry.path)}
            if "generations.jsonl" in names:
                suites.append(Path(entry.path).name)
    return sorted(suites)


def load_generations(client: MlflowClient, run_id: str, suite: str, prefix: str = "eval") -> pd.DataFrame:
    """The rows of `<prefix>/<suite>/generations.jsonl`, with GENERATION_COLUMNS always present
    (the evaluator's `sample_index` is also accepted as `sample`)."""
    artifact = f"{prefix}/{suite}/generations.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, artifact, tmp)
        except Exception as exc:  # MLflow raises different types per artifact store
            raise DataError(
                f"Run {run_id} has no artifact {artifact} ({type(exc).__name__}); "
                f"expected the evaluator's generations for suite {suite!r}."
            ) from None
        rows = read_jsonl(Path(local), f"run {run_id} artifact {artifact}")
    frame = pd.DataFrame(rows)
    if "sample_index" not in frame and "sample" in frame:
        frame = frame.rename(columns={"sample": "sample_index"})
    for column in GENERATION_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(GENERATION_COLUMNS) + [c for c in frame.columns if c not in GENERATION_COLUMNS]]


def read_jsonl(path: Path, where: str) -> list[dict]:
    """A generations file's rows, read by the project's one JSONL reader (harness.files)."""
    from harness.files import check_object, read_jsonl as read_lines

    expected = "one object per line with id, prompt, output, length, score"
    return [
        check_object(value, f"{where}, line {number}", expected=expected)
        for number, value in read_lines(path, "generations file", expected=expected)
    ]


def checkpoint_steps(client, run_id: str) -> list[int]:
    """Steps listed in the run's checkpoints.json artifact (harness.selection.read_listing); [] when
    the run has none."""
    from harness.selection import LISTING_FILE, read_listing

    with tempfile.TemporaryDirectory(prefix="harness-report-") as scratch:
        try:
            local = client.download_artifacts(run_id, LISTING_FILE, scratch)
        except Exception:  # noqa: BLE001 - no artifact: the report falls back to the val steps
            return []
        entries = read_listing(local, f"run {run_id}: its {LISTING_FILE} artifact")
    return sorted(entry.step for entry in entries)


@contextmanager
def quiet_downloads():
    """No tqdm bar per checkpoints.json download (one per run would flood the terminal)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
