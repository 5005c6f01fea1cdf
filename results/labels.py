"""The paper's names and order for runs: row labels ("semi-online DPO s=10"), task-mix and seed order.

Axis values are strings, as logged (tags win over params). The reference-sync note in a label
compares with the paper's setting, `harness.config.default_ref_sync` (the one rule).
"""

from __future__ import annotations

import math

import pandas as pd

from harness.config import default_ref_sync, format_interval, parse_interval

AXES = ("method", "sync_every", "ref_sync_every", "task_mix", "seed")
NO_TASK_MIX = ("", "-", "none", "None")
MIX_ORDER = ("verifiable", "non_verifiable", "joint")  # the paper's order of task mixes


def mix_sort_key(task_mix: str) -> tuple:
    """No mix (the seed baseline) first, then verifiable, non_verifiable, joint, others."""
    if task_mix in NO_TASK_MIX:
        return (-1, "")
    return (MIX_ORDER.index(task_mix) if task_mix in MIX_ORDER else len(MIX_ORDER), str(task_mix))


def seed_sort_key(seed: str):
    return (0, int(seed), "") if str(seed).isdigit() else (1, 0, str(seed))


def sync_value(sync_every: str) -> float:
    try:
        return float(sync_every)
    except (TypeError, ValueError):
        return math.nan


def row_order_key(method: str, sync_every: str) -> tuple:
    """seed, offline DPO, semi-online DPO (s large to small), online DPO, GRPO (s=1 first), others."""
    s = sync_value(sync_every)
    s = 0.0 if math.isnan(s) else s
    if method == "seed":
        return (0, 0.0, "")
    if method == "dpo":
        return (1, -s, "")
    if method == "grpo":
        return (2, s, "")
    return (3, s, method)


def paper_ref_sync(method: str, sync_every: str, task_mix: str) -> str:
    """The paper's reference sync for a logged cell, as logged ("inf", "10"): config's rule."""
    try:
        interval = parse_interval(sync_every)
    except ValueError:  # not a sync interval ("-" of the seed row): nothing to compare with
        return sync_every
    return format_interval(default_ref_sync(method, interval, task_mix))


def method_label(method: str, sync_every: str, ref_sync_every: str = "", task_mix: str = "") -> str:
    """The paper's row names ("offline DPO", "semi-online DPO s=10", "GRPO"), plus a note when
    the reference sync differs from the paper's setting for that method and task mix."""
    if method == "seed":
        return "seed"
    if method == "dpo":
        label = (
            "offline DPO"
            if sync_every == "inf"
            else "online DPO"
            if sync_every == "1"
            else f"semi-online DPO s={sync_every}"
        )
    elif method == "grpo":
        label = "GRPO" if sync_every == "1" else f"GRPO s={sync_every}"
    else:
        label = f"{method} s={sync_every}"
    if ref_sync_every and task_mix and ref_sync_every != paper_ref_sync(method, sync_every, task_mix):
        label += " (ref fixed)" if ref_sync_every == "inf" else f" (ref sync {ref_sync_every})"
    return label


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """Run names, made unique with a short run id where two runs share one."""
    names = frame["run_name"].astype(str)
    duplicated = names.duplicated(keep=False)
    return names.where(~duplicated, names + " · " + frame["run_id"].astype(str).str[:8])


def cell_label(method: str, sync_every: str, ref_sync_every: str = "", task_mix: str = "", variant: str = "") -> str:
    """`method_label`, plus the params that set the cell apart from others with the same axes."""
    label = method_label(method, sync_every, ref_sync_every, task_mix)
    return f"{label} [{variant}]" if isinstance(variant, str) and variant else label
