"""Checkpoint selection rules on hand-made validation histories."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.errors import ConfigError, DataError
from harness.selection import (
    SELECTION_RULES,
    CheckpointEntry,
    metrics_by_step,
    parse_listing,
    read_listing,
    select_checkpoint,
    select_from_listing,
    write_listing,
)


def ckpts(*steps: int) -> list[CheckpointEntry]:
    return [CheckpointEntry(s, f"/ckpt/step_{s}", validated=True) for s in steps]


# A length-hacked run: reward keeps creeping up after step 20 only because answers get much
# longer, so len_norm (reward / length) peaks at step 20 while raw reward peaks at step 40.
LENGTH_HACKED = [
    {"step": 10, "val/reward": 0.40, "val/response_len": 100.0, "val/len_norm_reward": 0.0040},
    {"step": 20, "val/reward": 0.55, "val/response_len": 110.0, "val/len_norm_reward": 0.0050},
    {"step": 30, "val/reward": 0.60, "val/response_len": 200.0, "val/len_norm_reward": 0.0030},
    {"step": 40, "val/reward": 0.62, "val/response_len": 400.0, "val/len_norm_reward": 0.00155},
]


def test_len_norm_and_max_val_reward_disagree_on_length_hacked_run():
    checkpoints = ckpts(10, 20, 30, 40)
    assert select_checkpoint(LENGTH_HACKED, checkpoints) == (20, "/ckpt/step_20")  # default rule
    assert select_checkpoint(LENGTH_HACKED, checkpoints, "max_val_reward") == (40, "/ckpt/step_40")
    assert select_checkpoint(LENGTH_HACKED, checkpoints, "final") == (40, "/ckpt/step_40")


def test_ties_go_to_the_earlier_step():
    history = [
        {"step": s, "val/len_norm_reward": v, "val/reward": v} for s, v in [(5, 0.2), (10, 0.3), (15, 0.3), (20, 0.1)]
    ]
    assert select_checkpoint(history, ckpts(5, 10, 15, 20), "len_norm")[0] == 10
    assert select_checkpoint(history, ckpts(5, 10, 15, 20), "max_val_reward")[0] == 10


def test_only_checkpointed_steps_are_eligible():
    # best len_norm is at step 20, which has no checkpoint; among 10 and 30, step 30 wins
    history = [
        {"step": 10, "val/len_norm_reward": 0.1},
        {"step": 20, "val/len_norm_reward": 0.9},
        {"step": 30, "val/len_norm_reward": 0.2},
    ]
    assert select_checkpoint(history, ckpts(10, 30)) == (30, "/ckpt/step_30")


def test_final_is_last_checkpoint_even_without_validation():
    history = [{"step": 10, "val/len_norm_reward": 0.5}]
    assert select_checkpoint(history, ckpts(10, 50), "final") == (50, "/ckpt/step_50")
    # a checkpoint without the metric is not eligible for a metric rule
    assert select_checkpoint(history, ckpts(10, 50), "len_norm") == (10, "/ckpt/step_10")


def test_history_as_per_metric_rows_and_dataframe():
    # MLflow keeps one history per metric: rows for the same step are merged
    rows = [
        {"step": 10, "val/reward": 0.5},
        {"step": 20, "val/reward": 0.7},
        {"step": 10, "val/len_norm_reward": 0.05},
        {"step": 20, "val/len_norm_reward": 0.01},
    ]
    assert metrics_by_step(rows)[10] == {"val/reward": 0.5, "val/len_norm_reward": 0.05}
    assert select_checkpoint(rows, ckpts(10, 20))[0] == 10
    frame = pd.DataFrame(LENGTH_HACKED)
    assert select_checkpoint(frame, ckpts(10, 20, 30, 40))[0] == 20
    assert select_checkpoint(frame, ckpts(10, 20, 30, 40), "max_val_reward")[0] == 40


def test_nan_values_are_ignored():
    history = [{"step": 10, "val/len_norm_reward": float("nan")}, {"step": 20, "val/len_norm_reward": 0.01}]
    assert select_checkpoint(history, ckpts(10, 20))[0] == 20


def test_unknown_rule_and_missing_metric_fail_loudly():
    with pytest.raises(ConfigError, match="len_norm, max_val_reward, final"):
        select_checkpoint(LENGTH_HACKED, ckpts(10), "best_ever")
    with pytest.raises(DataError, match="val/len_norm_reward"):
        select_checkpoint([{"step": 10, "val/reward": 1.0}], ckpts(10))
    with pytest.raises(DataError, match="empty"):
        select_checkpoint(LENGTH_HACKED, [])
    assert set(SELECTION_RULES) == {"len_norm", "max_val_reward", "final", "len_norm_shifted"}


def test_the_listing_round_trips_and_other_formats_fail(tmp_path):
    entries = [
        CheckpointEntry(2, "c2", False),
        CheckpointEntry(4, "c4", True, {"val/reward": 0.5, "val/len_norm_reward": 0.1}),
    ]
    write_listing(tmp_path, entries)
    assert read_listing(tmp_path / "checkpoints.json") == entries
    assert select_from_listing(entries) == (4, "c4")
    for data in (
        {"checkpoints": []},
        [{"step": 1, "path": "c1"}],
        [{"step": "1", "path": "c1", "validated": True}],
        [{"step": 1, "path": "c1", "validated": True, "val": {"reward": 1.0}}],
    ):
        with pytest.raises(DataError, match="expected"):
            parse_listing(data, "here")
