"""Checkpoint selection rules, by name.

The paper picks, in every experiment, the checkpoint with the highest length-normalised
validation reward (mean reward / mean response length, one sample per validation prompt): a
later checkpoint that wins reward only by writing longer answers does not get picked.

Rules:
- `len_norm` (default): highest `val/len_norm_reward`; ties go to the earlier step.
- `max_val_reward`: highest `val/reward`; ties go to the earlier step.
- `len_norm_shifted`: highest (`val/reward` - m) / `val/response_len`, where m is the lowest
  `val/reward` in the history (the seed model's step-0 validation included) when that is below 0,
  else 0. Every numerator is then >= 0, so at equal reward a longer answer always scores lower,
  also when reward-model scores are negative (where `len_norm` prefers *longer* answers). With
  non-negative rewards it picks exactly what `len_norm` picks.
- `final`: the last step that has a checkpoint.

Only steps that have a checkpoint are eligible; a metric rule also needs the step validated: a
checkpoint entry marked `"validated": false` (checkpoints.json) is never picked by a metric rule,
and the metric must be logged at that step (non-finite values do not count).
`negative_reward_warning` says when a run's validation reward is negative under `len_norm`.
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


def _len_norm_shifted(metrics_by_step: dict[int, dict[str, float]], steps: list[int]) -> int:
    rewards = [m["val/reward"] for m in metrics_by_step.values() if _finite(m.get("val/reward"))]
    shift = min(0.0, min(rewards, default=0.0))
    shifted = {step: {"score": (m["val/reward"] - shift) / max(m["val/response_len"], 1.0)}
               for step, m in metrics_by_step.items()
               if _finite(m.get("val/reward")) and _finite(m.get("val/response_len"))}
    if not any(step in shifted for step in steps):
        raise DataError(f"Checkpoint selection rule len_norm_shifted needs 'val/reward' and 'val/response_len' at a "
                        f"checkpointed step, but none of the checkpointed steps {steps} has both logged.")
    return _best_by("score")(shifted, steps)


_len_norm_shifted.metric = "val/reward"  # type: ignore[attr-defined]


def _final(metrics_by_step: dict[int, dict[str, float]], steps: list[int]) -> int:
    return max(steps)


len_norm = _best_by("val/len_norm_reward")
max_val_reward = _best_by("val/reward")

SELECTION_RULES = Registry("checkpoint selection rule", {
    "len_norm": "evaluators.selection:len_norm",
    "max_val_reward": "evaluators.selection:max_val_reward",
    "final": "evaluators.selection:_final",
    "len_norm_shifted": "evaluators.selection:_len_norm_shifted",
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
    paths, validated = {}, set()
    for entry in checkpoints:
        if not isinstance(entry, dict) or "step" not in entry or "path" not in entry:
            raise DataError(f"Checkpoint entry {entry!r:.200} lacks 'step' or 'path'; expected {{\"step\": N, \"path\": \"...\"}}.")
        try:
            step = int(entry["step"])
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"Checkpoint entry {entry!r:.200}: 'step' is not an integer.") from None
        paths[step] = str(entry["path"])
        if entry.get("validated", True) is not False:
            validated.add(step)
    eligible = sorted(paths) if not hasattr(choose, "metric") else sorted(validated)
    if not eligible:
        raise DataError(f"Checkpoint selection rule {rule!r} needs a validated checkpoint, but none of the "
                        f"checkpointed steps {sorted(paths)} was validated; make checkpoint.every a multiple "
                        f"of validation.every, or use --rule final.")
    step = choose(metrics_by_step(history), eligible)
    return step, paths[step]


def negative_reward_warning(history: Any, rule: str) -> str | None:
    """A warning when `rule` divides by length and some validation reward is negative (then a longer
    answer with the same negative reward scores *higher*); None otherwise."""
    if rule != "len_norm":
        return None
    rewards = [m["val/reward"] for m in metrics_by_step(history).values() if "val/reward" in m]
    low = min(rewards, default=0.0)
    if low >= 0:
        return None
    return (f"validation reward is negative (as low as {low:.4g}): under selection rule len_norm "
            f"(reward / length) a longer answer then scores higher; consider rule len_norm_shifted.")
