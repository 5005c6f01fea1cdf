"""One training run as a tracked unit: MLflow run set-up, training, evaluation, status.

`harness train` calls `run_training`. It creates (or, with --resume, reopens) the MLflow run,
records its id in `<output_dir>/run.json` so a retried sweep trial continues the same run,
trains, evaluates the selected and final checkpoints when the config lists suites, and marks
the run FINISHED or FAILED (with the error text as a tag) so no run is left RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path

from harness.config import RunConfig, format_interval
from harness.tracking import MlflowTracker, NullTracker, atomic_write_text, default_tracking_uri
from harness.rollout.hf import resolve_device
from harness.trainer import TrainResult, train
from harness.distributed import is_main_process

log = logging.getLogger("harness.run")


def run_tags(cfg: RunConfig) -> dict[str, str]:
    return {"harness.kind": "train", "method": cfg.method, "sync_every": format_interval(cfg.sync_every),
            "ref_sync_every": format_interval(cfg.ref_sync_every), "task_mix": cfg.task_mix,
            "seed": str(cfg.seed)}


def output_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir or Path("runs") / cfg.run_name).resolve()


def run_training(cfg: RunConfig, resume: bool = False, parent_run_id: str | None = None,
                 tags: dict[str, str] | None = None, use_mlflow: bool = True, progress: bool = True) -> TrainResult:
    output_dir = output_dir_of(cfg)
    cfg = cfg.model_copy(update={"output_dir": str(output_dir)})
    run_file = output_dir / "run.json"
    previous = json.loads(run_file.read_text()) if resume and run_file.is_file() else {}
    tracker = NullTracker()
    if use_mlflow and is_main_process():  # under torchrun only rank 0 logs
        tracker = MlflowTracker(cfg.tracking.experiment, cfg.run_name, run_id=previous.get("run_id"),
                                parent_run_id=parent_run_id, tags={**run_tags(cfg), **(tags or {})})
        atomic_write_text(run_file, json.dumps({"run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
                                                "tracking_uri": tracker.tracking_uri}))
        log.info("MLflow run %s in experiment %r at %s", tracker.run_id, cfg.tracking.experiment,
                 tracker.tracking_uri)
    try:
        result = train(cfg, tracker=tracker, resume=resume, progress=progress)
        if cfg.eval.suites and use_mlflow and is_main_process():
            evaluate_after_training(cfg, tracker.run_id)
    except BaseException as exc:
        tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-4000:]
        tracker.set_tags({"harness.error": tail})
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")
    return result


def eval_options(cfg: RunConfig) -> dict:
    """The evaluator keyword arguments a run config implies (shared with the sweep's seed baseline)."""
    return dict(data_paths=cfg.eval.data, judge=cfg.eval.judge, temperature=cfg.eval.temperature,
                top_p=cfg.eval.top_p, max_new_tokens=cfg.eval.max_new_tokens or cfg.train.max_new_tokens,
                seed=cfg.seed, device=str(resolve_device(cfg.model.device)), batch_size=cfg.rollout.batch_size)


def evaluate_after_training(cfg: RunConfig, run_id: str) -> None:
    from evaluators.run import evaluate_run
    evaluate_run(run_id, cfg.eval.suites, cfg.eval.samples, rule=cfg.eval.rule,
                 tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(), **eval_options(cfg))
