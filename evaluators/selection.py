"""Checkpoint selection rules, by name.

The paper picks, in every experiment, the checkpoint with the highest length-normalised
validation reward (mean reward / mean response length, one sample per validation prompt): a
later checkpoint that wins reward only by writing longer answers does not get picked.

Rules:
- `len_norm` (default): highest `val/len_norm_reward`; ties go to the earlier step.
- `max_val_reward`: highest `val/reward`; ties go to the earlier step.
- `final`: the last step that has a checkpoint.

Only steps that have a checkpoint are eligible; a metric rule also needs the metric logged at
that step (non-finite values do not count).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from harness.errors import DataError
from harness.registry import Registry

DEFAULT_RULE = "len_norm"


def _best_by(metric: str) -> Callable[[dict[int, dict[str, float]], list[int]], int]:
    def choose(metrics_by_step: dict[int, dict[str, float]], steps: list[int]) -> int:
        scored = [(metrics_by_step.get(step, {}).get(metric), step) for step in steps]
        scored = [(value, step) for value, step in scored if _finite(value)]
        if not scored:
            raise DataError(
                f"Checkpoint selection needs metric {metric!r} at a checkpointed step, but none of "
                f"the checkpointed steps {steps} has it logged (validation must run at checkpoint steps)."
            )
        best = max(value for value, _ in scored)
        return min(step for value, step in scored if value == best)  # ties -> earlier step

    choose.metric = metric  # type: ignore[attr-defined]
    return choose


def _final(metrics_by_step: dict[int, dict[str, float]], steps: list[int]) -> int:
    return max(steps)


len_norm = _best_by("val/len_norm_reward")
max_val_reward = _best_by("val/reward")

SELECTION_RULES = Registry("checkpoint selection rule", {
    "len_norm": "evaluators.selection:len_norm",
    "max_val_reward": "evaluators.selection:max_val_reward",
    "final": "evaluators.selection:_final",
}, keep_order=True)  # the default rule first


def get_rule(name: str) -> Callable[[dict[int, dict[str, float]], list[int]], int]:
    return SELECTION_RULES.get(name, where="Checkpoint selection rule (--rule / eval.rule)")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _history_rows(history: Any) -> Iterable[dict]:
    if hasattr(history, "to_dict") and hasattr(history, "columns"):  # a pandas DataFrame
        return history.to_dict("records")
    return history


def metrics_by_step(history: Any) -> dict[int, dict[str, float]]:
    """Merge history rows ({"step": N, metric: value, ...}; several rows may share a step, as
    MLflow keeps one history per metric) into step -> {metric: value}; later rows win."""
    merged: dict[int, dict[str, float]] = {}
    for row in _history_rows(history):
        if "step" not in row:
            raise DataError(f"History row {row!r} has no 'step'.")
        step = int(row["step"])
        merged.setdefault(step, {}).update({k: v for k, v in row.items() if k != "step" and _finite(v)})
    return merged


def select_checkpoint(history: Any, checkpoints: list[dict], rule: str = DEFAULT_RULE) -> tuple[int, str]:
    """(step, path) of the checkpoint the rule picks.

    history: rows {"step": N, "val/reward": ..., "val/len_norm_reward": ...} as a list of dicts or a
    pandas DataFrame; checkpoints: [{"step": N, "path": "..."}] (e.g. checkpoints.json).
    """
    choose = get_rule(rule)
    if not checkpoints:
        raise DataError("No checkpoints to select from (checkpoints.json is empty).")
    paths = {}
    for entry in checkpoints:
        if "step" not in entry or "path" not in entry:
            raise DataError(f"Checkpoint entry {entry!r} lacks 'step' or 'path'; expected {{\"step\": N, \"path\": \"...\"}}.")
        paths[int(entry["step"])] = str(entry["path"])
    step = choose(metrics_by_step(history), sorted(paths))
    return step, paths[step]
