"""`harness eval TARGET --config RUN.yaml`: one run config's evaluation settings, for the eval process.

    target, suites, settings = eval_settings("seed_baseline/config.yaml", "tiny", None)

The same settings a training run evaluates its checkpoints with (`evaluators.settings.run_eval_options`:
sampling, judge, data files, seed, device, batch size, plus `eval.samples`), so the sweep's seed
baseline, launched as its own `harness eval` process, scores the starting policy exactly as the
cells' trained checkpoints are scored. TARGET `tiny` (or any `model.policy` value) resolves the
way training resolves it (`harness.models.resolve_paths`); the config's `model.cpu_threads`
caps this process's torch threads as it does a trial's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import ConfigError


def eval_settings(
    config_path: str | Path, target: str, suites_flag: str | None
) -> tuple[str, list[str], dict[str, Any]]:
    """(model path, suites, evaluate_checkpoint keyword arguments incl. `samples`) of a run config."""
    import torch

    from harness.config import load_run_config
    from evaluators.settings import run_eval_options
    from harness.models import resolve_paths

    cfg = load_run_config(config_path)
    suites = [s.strip() for s in suites_flag.split(",") if s.strip()] if suites_flag else list(cfg.eval.suites)
    if not suites:
        raise ConfigError(
            f"{config_path}: eval.suites is empty and no --suites was given; expected at least one "
            "suite to evaluate, e.g. eval.suites: [tiny_math]."
        )
    if cfg.model.cpu_threads:
        torch.set_num_threads(cfg.model.cpu_threads)
    model_cfg = cfg.model.model_copy(update={"policy": target})
    policy_path, _ = resolve_paths(cfg.model_copy(update={"model": model_cfg}))
    return policy_path, suites, {"samples": cfg.eval.samples, **run_eval_options(cfg)}
