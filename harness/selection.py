"""Checkpoint selection: the rules, by name, and the typed checkpoint listing they pick from.

    write_listing(output_dir, entries) -> text      # <output_dir>/checkpoints.json (the trainer)
    entries = read_listing(path)                    # list[CheckpointEntry], strictly checked
    step, path = select_checkpoint(history, entries, rule)
    step, path = select_from_listing(entries, rule) # by the entries' own validation numbers

The listing is written in one place (the trainer, at every checkpoint) and read by resuming,
by the sweep's objective, by `harness eval RUN_ID` and by the results layer, all through
`read_listing`; within one `harness train` the trainer hands its entries to evaluation directly.
Each entry is {"step": N, "path": "...", "validated": bool, "val/...": x, ...}: validation
numbers only on a validated step.

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

Only steps that have a checkpoint are eligible; a metric rule also needs the step validated: an
entry with `validated: false` is never picked by a metric rule, and the metric must be logged at
that step (non-finite values do not count).
`negative_reward_warning` says when a run's validation reward is negative under `len_norm`.
Training, the sweep, the evaluators and the results layer all import this module; it imports
none of them (only harness.errors, harness.files and harness.registry).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from harness.errors import DataError
from harness.files import atomic_write_text
from harness.registry import Registry

DEFAULT_RULE = "len_norm"
LISTING_FILE = "checkpoints.json"


# -- the checkpoint listing ----------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointEntry:
    """One saved checkpoint: its step, its folder, and (only if validated at that step) `val/*` numbers."""

    step: int
    path: str
    validated: bool
    metrics: dict[str, float] = field(default_factory=dict)  # "val/reward": x, ...

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "path": self.path, "validated": self.validated, **self.metrics}


def history_rows(entries: Sequence[CheckpointEntry]) -> list[dict[str, Any]]:
    """The validated entries' numbers as history rows {"step": N, "val/...": x}."""
    return [{"step": e.step, **e.metrics} for e in entries if e.validated and e.metrics]


def listing_text(entries: Sequence[CheckpointEntry]) -> str:
    return json.dumps([entry.to_json() for entry in entries], indent=2)


def write_listing(output_dir: str | Path, entries: Sequence[CheckpointEntry]) -> str:
    """Write `<output_dir>/checkpoints.json` atomically; return its text (the trainer logs it to MLflow too)."""
    text = listing_text(entries)
    atomic_write_text(Path(output_dir) / LISTING_FILE, text)
    return text


def read_listing(path: str | Path, where: str | None = None) -> list[CheckpointEntry]:
    """The entries of a checkpoints.json `write_listing` wrote; a DataError naming `where` (default:
    the path) for anything else."""
    where = where or str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(
            f"{where}: cannot be read ({err.strerror or err}); the trainer writes it at each checkpoint."
        ) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{where}: is not valid UTF-8 JSON ({err}); expected a list of checkpoint entries.") from None
    return parse_listing(data, where)


def parse_listing(data: Any, where: str) -> list[CheckpointEntry]:
    """Parsed checkpoints.json content as entries: a list of {"step": int, "path": str,
    "validated": bool, "val/...": number ...}."""
    expected = 'a list of {"step": N, "path": "...", "validated": true/false, "val/...": x}'
    if not isinstance(data, list):
        raise DataError(f"{where}: holds {type(data).__name__}; expected {expected}.")
    entries = []
    for item in data:
        if not isinstance(item, dict):
            raise DataError(f"{where}: entry {item!r:.200} is not an object; expected {expected}.")
        step, path, validated = item.get("step"), item.get("path"), item.get("validated")
        metrics = {k: v for k, v in item.items() if k not in ("step", "path", "validated")}
        if (
            not isinstance(step, int)
            or isinstance(step, bool)
            or not isinstance(path, str)
            or not isinstance(validated, bool)
            or not all(
                k.startswith("val/") and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in metrics.items()
            )
        ):
            raise DataError(f"{where}: entry {item!r:.200} is malformed; expected {expected}.")
        if metrics and not validated:
            raise DataError(
                f"{where}: entry {item!r:.200} carries validation numbers but is not validated; "
                f"only a validated step has them."
            )
        entries.append(CheckpointEntry(step, path, validated, {k: float(v) for k, v in metrics.items()}))
    return entries


# -- the rules -------------------------------------------------------------------------------


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
    shifted = {
        step: {"score": (m["val/reward"] - shift) / max(m["val/response_len"], 1.0)}
        for step, m in metrics_by_step.items()
        if _finite(m.get("val/reward")) and _finite(m.get("val/response_len"))
    }
    if not any(step in shifted for step in steps):
        raise DataError(
            f"Checkpoint selection rule len_norm_shifted needs 'val/reward' and 'val/response_len' at a "
            f"checkpointed step, but none of the checkpointed steps {steps} has both logged."
        )
    return _best_by("score")(shifted, steps)


_len_norm_shifted.metric = "val/reward"  # type: ignore[attr-defined]


def _final(metrics_by_step: dict[int, dict[str, float]], steps: list[int]) -> int:
    return max(steps)


len_norm = _best_by("val/len_norm_reward")
max_val_reward = _best_by("val/reward")

SELECTION_RULES = Registry(
    "checkpoint selection rule",
    {
        "len_norm": "harness.selection:len_norm",
        "max_val_reward": "harness.selection:max_val_reward",
        "final": "harness.selection:_final",
        "len_norm_shifted": "harness.selection:_len_norm_shifted",
    },
    keep_order=True,
)  # the default rule first


def get_rule(name: str) -> Callable[[dict[int, dict[str, float]], list[int]], int]:
    return SELECTION_RULES.get(name, where="Checkpoint selection rule (--rule / eval.rule)")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rows(history: Any) -> Iterable[dict]:
    if hasattr(history, "to_dict") and hasattr(history, "columns"):  # a pandas DataFrame
        return history.to_dict("records")
    return history


def metrics_by_step(history: Any) -> dict[int, dict[str, float]]:
    """Merge history rows ({"step": N, metric: value, ...}; several rows may share a step, as
    MLflow keeps one history per metric) into step -> {metric: value}; later rows win."""
    merged: dict[int, dict[str, float]] = {}
    for row in _rows(history):
        if "step" not in row:
            raise DataError(f"History row {row!r} has no 'step'.")
        step = int(row["step"])
        merged.setdefault(step, {}).update({k: v for k, v in row.items() if k != "step" and _finite(v)})
    return merged


def select_checkpoint(
    history: Any, checkpoints: Sequence[CheckpointEntry], rule: str = DEFAULT_RULE
) -> tuple[int, str]:
    """(step, path) of the checkpoint the rule picks.

    history: rows {"step": N, "val/reward": ..., "val/len_norm_reward": ...} as a list of dicts or a
    pandas DataFrame (e.g. a run's MLflow `val/*` history, or `history_rows(entries)`).
    """
    choose = get_rule(rule)
    if not checkpoints:
        raise DataError(f"No checkpoints to select from ({LISTING_FILE} is empty).")
    paths = {entry.step: entry.path for entry in checkpoints}
    validated = {entry.step for entry in checkpoints if entry.validated}
    eligible = sorted(paths) if not hasattr(choose, "metric") else sorted(validated)
    if not eligible:
        raise DataError(
            f"Checkpoint selection rule {rule!r} needs a validated checkpoint, but none of the "
            f"checkpointed steps {sorted(paths)} was validated; make checkpoint.every a multiple "
            f"of validation.every, or use --rule final."
        )
    step = choose(metrics_by_step(history), eligible)
    return step, paths[step]


def select_from_listing(entries: Sequence[CheckpointEntry], rule: str = DEFAULT_RULE) -> tuple[int, str]:
    """`select_checkpoint` by the entries' own validation numbers (the sweep's objective, pruning)."""
    return select_checkpoint(history_rows(entries), entries, rule)


def negative_reward_warning(history: Any, rule: str) -> str | None:
    """A warning when `rule` divides by length and some validation reward is negative (then a longer
    answer with the same negative reward scores *higher*); None otherwise."""
    if rule != "len_norm":
        return None
    rewards = [m["val/reward"] for m in metrics_by_step(history).values() if "val/reward" in m]
    low = min(rewards, default=0.0)
    if low >= 0:
        return None
    return (
        f"validation reward is negative (as low as {low:.4g}): under selection rule len_norm "
        f"(reward / length) a longer answer then scores higher; consider rule len_norm_shifted."
    )
