"""A sweep file's grid: its axes normalised and checked, its cells' axis values (exclusions
applied) and their keys (`dpo-s10-verifiable-seed0`). harness/sweep/spec.py builds each cell's run
config from them.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import yaml

from harness.config import AXIS_KEYS, flatten, format_interval, parse_interval
from harness.errors import ConfigError

INTERVAL_AXES = ("sync_every", "ref_sync_every")


def normalize_axis_value(axis: str, value: Any) -> Any:
    if axis == "ref_sync_every" and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"  # the paper's default rule, valid on the grid as everywhere else
    return parse_interval(value) if axis in INTERVAL_AXES else value


def normalized_grid(spec, source: str) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for axis, values in flatten(spec.grid).items():
        where = f"grid.{axis}"
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: `{where}` = {values!r} is invalid: an axis is a non-empty list of values.")
        try:
            normal = [normalize_axis_value(axis, v) for v in values]
        except ValueError as exc:
            raise ConfigError(f"{source}: `{where}` = {values!r} is invalid: {exc}.") from None
        if len({repr(v) for v in normal}) != len(normal):
            raise ConfigError(f"{source}: `{where}` = {values!r} lists a value twice.")
        grid[axis] = normal
    return grid


def check_rules(spec, grid: dict[str, list[Any]], source: str) -> None:
    """Exclusion rules and `when` conditions may only name grid axes and their values; `set`
    keys may not be axes (a cell's key must say what it runs)."""
    for index, rule in enumerate(spec.exclude):
        check_condition(rule, grid, f"exclude[{index}]", source)
        if not rule:
            raise ConfigError(f"{source}: `exclude[{index}]` is empty; it would exclude every cell.")
    for index, rule in enumerate(spec.overrides):
        check_condition(rule.when, grid, f"overrides[{index}].when", source)
        check_not_axes(flatten(rule.set_), grid, f"overrides[{index}].set", source)
    check_not_axes(flatten(spec.set_), grid, "set", source)
    if spec.eval is not None:
        for key in ("suites", "samples"):
            if getattr(spec.eval, key) is not None and f"eval.{key}" in flatten(spec.set_):
                raise ConfigError(f"{source}: `eval.{key}` is given twice, in `eval` and in `set`; keep one.")
    from harness.selection import SELECTION_RULES

    if spec.objective.rule not in SELECTION_RULES:
        raise ConfigError(
            f"{source}: `objective.rule` = {spec.objective.rule!r} is invalid: expected one of "
            f"{', '.join(SELECTION_RULES)}."
        )


def check_condition(rule: dict[str, Any], grid: dict[str, list[Any]], where: str, source: str) -> None:
    for axis, wanted in flatten(rule).items():
        if axis not in grid:
            raise ConfigError(
                f"{source}: `{where}.{axis}` names no grid axis; conditions may use {', '.join(grid) or '(no axes)'}."
            )
        for value in wanted if isinstance(wanted, list) else [wanted]:
            try:
                normal = normalize_axis_value(axis, value)
            except ValueError as exc:
                raise ConfigError(f"{source}: `{where}.{axis}` = {value!r} is invalid: {exc}.") from None
            if normal not in grid[axis]:
                raise ConfigError(
                    f"{source}: `{where}.{axis}` = {value!r} is not a value of the grid axis "
                    f"(grid.{axis} = {[show_value(axis, v) for v in grid[axis]]})."
                )


def check_not_axes(keys: dict[str, Any], grid: dict[str, list[Any]], where: str, source: str) -> None:
    for key in keys:
        if key in grid:
            raise ConfigError(
                f"{source}: `{where}.{key}` sets the grid axis `{key}`; a cell's axis values come "
                f"from `grid` only (use `exclude` to drop combinations)."
            )


def matches(rule: dict[str, Any], axes: dict[str, Any]) -> bool:
    for axis, wanted in flatten(rule).items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if axes[axis] not in [normalize_axis_value(axis, v) for v in options]:
            return False
    return True


def expand_grid(spec, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return [axes for axes in combos if not any(matches(rule, axes) for rule in spec.exclude)]


def show_value(axis: str, value: Any) -> str:
    if value == "auto":
        return "auto"
    if axis in INTERVAL_AXES or isinstance(value, float) and math.isinf(value):
        return format_interval(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if not isinstance(value, (list, dict)) else yaml_value(value)


def cell_key(axes: dict[str, Any]) -> str:
    """A filesystem-safe name saying what the cell runs: `dpo-s10-verifiable-seed0`."""
    prefixes = {"method": "", "sync_every": "s", "ref_sync_every": "ref", "task_mix": "", "seed": "seed"}
    parts = [prefixes[a] + show_value(a, axes[a]) for a in AXIS_KEYS if a in axes]
    parts += [f"{a}={show_value(a, v)}" for a, v in axes.items() if a not in prefixes]
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts)) or "default"


def yaml_value(value: Any) -> str:
    """The text that `parse_override` (yaml.safe_load) reads back as `value`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n").strip()
    return text
