"""One training run as a tracked unit: MLflow run set-up, training, evaluation, status.

`harness train` calls `run_training`. It creates (or, with --resume, reopens) the MLflow run,
records its id in `<output_dir>/run.json` so a retried sweep trial continues the same run,
trains, evaluates the selected and final checkpoints when the config lists suites, and marks
the run FINISHED or FAILED (with the error text as a tag) so no run is left RUNNING.
"""

from __future__ import annotations

import json
import os
import logging
import traceback
from pathlib import Path

from harness.config import RunConfig, format_interval
from harness.files import output_dir_of
from harness.preemption import Preempted
from harness.preflight import check_run_inputs
from harness.tracking import MlflowTracker, NullTracker, atomic_write_text, default_tracking_uri
from harness.rollout import require_backend
from harness.selection import CheckpointEntry, history_rows, negative_reward_warning
from harness.train.trainer import TrainResult, train
from harness.distributed import is_main_process

log = logging.getLogger("harness.run")


def run_tags(cfg: RunConfig) -> dict[str, str]:
    return {
        "harness.kind": "train",
        "method": cfg.method,
        "sync_every": format_interval(cfg.sync_every),
        "ref_sync_every": format_interval(cfg.ref_sync_every),
        "task_mix": cfg.task_mix,
        "seed": str(cfg.seed),
    }


def run_training(
    cfg: RunConfig,
    resume: bool = False,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    use_mlflow: bool = True,
    progress: bool = True,
    source: str = "the run config",
) -> TrainResult:
    """`source` names the config (file and overrides) in error messages."""
    require_backend(cfg.rollout.backend)  # a missing engine fails before the run or its folder exists
    # Everything checkable is checked before the first MLflow call or folder (harness.preflight).
    check_run_inputs(cfg, source, tracking_uri=default_tracking_uri() if use_mlflow else None)
    from harness.distributed import check_launch
    from harness.train.plan_report import check_fits

    check_launch(cfg, source)
    check_fits(cfg, source)
    output_dir = output_dir_of(cfg)
    cfg = cfg.model_copy(update={"output_dir": str(output_dir)})
    run_file = output_dir / "run.json"
    previous = read_run_file(run_file) if resume else {}
    tracker = NullTracker()
    if use_mlflow and is_main_process():  # under torchrun only rank 0 logs
        tracker = MlflowTracker(
            cfg.tracking.experiment,
            cfg.run_name,
            run_id=previous.get("run_id"),
            parent_run_id=parent_run_id,
            tags={**run_tags(cfg), **(tags or {})},
        )
    try:  # from here on a failure marks the run FAILED with its error: never left RUNNING
        if use_mlflow and is_main_process():
            atomic_write_text(
                run_file,
                json.dumps(
                    {
                        "run_id": tracker.run_id,
                        "experiment_id": tracker.experiment_id,
                        "tracking_uri": tracker.tracking_uri,
                    }
                ),
            )
            log.info(
                "MLflow run %s in experiment %r at %s", tracker.run_id, cfg.tracking.experiment, tracker.tracking_uri
            )
        result = train(cfg, tracker=tracker, resume=resume, progress=progress)
        warn_if_negative_reward(cfg, result, tracker)
        if cfg.eval.suites and use_mlflow and is_main_process():
            evaluate_after_training(cfg, tracker.run_id, result.checkpoints)
    except BaseException as exc:
        tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-4000:]
        try:  # a preempted run is KILLED and resumes into the same run; anything else is FAILED with its error
            tracker.set_tags({"harness.preempted" if isinstance(exc, Preempted) else "harness.error": tail})
        finally:
            tracker.finish("KILLED" if isinstance(exc, (KeyboardInterrupt, Preempted)) else "FAILED")
        raise
    tracker.finish("FINISHED")
    return result


def warn_if_negative_reward(cfg: RunConfig, result: TrainResult, tracker) -> None:
    """Log and tag (`harness.selection_warning`) a run whose validation reward went negative while
    its selection rule divides by length (harness.selection.negative_reward_warning)."""
    rows = history_rows(result.checkpoints)
    if result.final_val:
        rows.append({"step": -1, **result.final_val})
    warning = negative_reward_warning(rows, cfg.eval.rule)
    if warning:
        log.warning("%s: %s", cfg.run_name, warning)
        tracker.set_tags({"harness.selection_warning": warning})


def read_run_file(run_file: Path) -> dict:
    """`<output_dir>/run.json` (the MLflow run a --resume continues), {} when absent or unreadable."""
    try:
        data = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("run_id"), str) else {}


def evaluate_after_training(cfg: RunConfig, run_id: str, checkpoints: list[CheckpointEntry]) -> None:
    """Evaluate the run's selected and final checkpoints; the trainer's listing is handed over as is."""
    from evaluators.run import evaluate_run
    from evaluators.settings import run_eval_options

    evaluate_run(
        run_id,
        cfg.eval.suites,
        cfg.eval.samples,
        rule=cfg.eval.rule,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(),
        report=log.info,
        checkpoints=checkpoints,
        **run_eval_options(cfg),
    )
