"""Checkpoint selection and evaluation fixes: validated-only checkpoint metrics (bug 1), `harness
eval RUN_ID` inheriting the run's settings (bug 2), and selection with negative rewards (bug 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.config import load_run_config
from harness.errors import DataError
from harness.selection import (
    CheckpointEntry,
    negative_reward_warning,
    parse_listing,
    select_checkpoint,
    select_from_listing,
)
from harness.tracking import MemoryTracker

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
FAST = ["train.prompts_per_step=2", "train.samples_per_prompt=2", "train.max_new_tokens=16", "validation.prompts=4"]


# -- bug 1: checkpoints.json carried the last validation's numbers into unvalidated checkpoints ----


def test_checkpoints_json_records_metrics_only_for_validated_steps(tiny_assets, tmp_path):
    from harness.train.trainer import train

    cfg = load_run_config(
        TINY, [*FAST, "validation.every=2", "checkpoint.every=3", "train.steps=6", f"output_dir={tmp_path / 'run'}"]
    )
    tracker = MemoryTracker()
    train(cfg, tracker=tracker, progress=False)
    entries = json.loads((tmp_path / "run" / "checkpoints.json").read_text())
    by_step = {entry["step"]: entry for entry in entries}
    assert sorted(by_step) == [3, 6]
    assert by_step[3]["validated"] is False
    assert not [key for key in by_step[3] if key.startswith("val/")]  # step 2's numbers are not step 3's
    assert by_step[6]["validated"] is True
    logged = dict(tracker.series("val/reward"))
    assert sorted(logged) == [0, 2, 4, 6]
    assert by_step[6]["val/reward"] == pytest.approx(logged[6])
    # selection (harness eval, sweep objectives) sees only the validated checkpoint
    listing = parse_listing(entries, "checkpoints.json")
    assert select_from_listing(listing, "len_norm")[0] == 6
    assert select_from_listing(listing, "final")[0] == 6


def test_a_checkpoint_marked_unvalidated_is_never_picked_by_a_metric_rule():
    # a history where step 3 has (better) numbers of its own; the entry's flag keeps it out
    history = [
        {"step": 3, "val/len_norm_reward": 0.9, "val/reward": 0.9, "val/response_len": 1.0},
        {"step": 6, "val/len_norm_reward": 0.1, "val/reward": 0.1, "val/response_len": 1.0},
    ]
    entries = [CheckpointEntry(3, "c3", False), CheckpointEntry(6, "c6", True, history[1])]
    for rule in ("len_norm", "max_val_reward", "len_norm_shifted"):
        assert select_checkpoint(history, entries, rule)[0] == 6
        assert select_from_listing(entries, rule)[0] == 6
    only_unvalidated = entries[:1]
    with pytest.raises(DataError, match="validated"):
        select_checkpoint(history, only_unvalidated, "len_norm")
    assert select_checkpoint(history, only_unvalidated, "final")[0] == 3


def test_sweep_objective_ignores_unvalidated_checkpoints(tmp_path):
    from harness.sweep.objective import selected_objective
    from harness.sweep.spec import ObjectiveSpec

    entries = [
        {"step": 3, "path": "c3", "validated": False},
        {"step": 6, "path": "c6", "validated": True, "val/len_norm_reward": 0.1},
    ]
    (tmp_path / "checkpoints.json").write_text(json.dumps(entries))
    assert selected_objective(tmp_path, ObjectiveSpec()) == (0.1, 6)


# -- bug 5: len_norm with negative rewards prefers longer answers --------------------------------

NEGATIVE = [
    {"step": 0, "val/reward": -3.0, "val/response_len": 10.0, "val/len_norm_reward": -0.3},
    {"step": 10, "val/reward": -2.0, "val/response_len": 10.0, "val/len_norm_reward": -0.2},
    {"step": 20, "val/reward": -2.0, "val/response_len": 40.0, "val/len_norm_reward": -0.05},
]


def test_len_norm_with_negative_rewards_prefers_length_and_the_shifted_rule_does_not():
    checkpoints = [CheckpointEntry(10, "c10", True), CheckpointEntry(20, "c20", True)]
    # same reward, 4x the length: the paper's rule (kept as default) picks the longer one ...
    assert select_checkpoint(NEGATIVE, checkpoints, "len_norm")[0] == 20
    # ... the documented variant, shifted by the lowest validation reward (the seed's, step 0), does not
    assert select_checkpoint(NEGATIVE, checkpoints, "len_norm_shifted")[0] == 10
    assert "negative" in negative_reward_warning(NEGATIVE, "len_norm")
    assert negative_reward_warning(NEGATIVE, "len_norm_shifted") is None


def test_shifted_rule_equals_len_norm_when_rewards_are_non_negative():
    history = [
        {"step": s, "val/reward": r, "val/response_len": n, "val/len_norm_reward": r / n}
        for s, r, n in [(10, 0.4, 100.0), (20, 0.55, 110.0), (30, 0.6, 200.0)]
    ]
    checkpoints = [CheckpointEntry(s, f"c{s}", True) for s in (10, 20, 30)]
    assert select_checkpoint(history, checkpoints, "len_norm_shifted") == select_checkpoint(history, checkpoints)
    assert negative_reward_warning(history, "len_norm") is None


def test_training_run_with_negative_validation_reward_is_tagged(tiny_assets, tmp_path, monkeypatch):
    """The chat task's tiny reward model scores below zero: the run gets the warning tag."""
    from mlflow.tracking import MlflowClient

    from harness.training_run import run_training

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_run_config(
        TINY,
        [
            *FAST,
            "task_mix=non_verifiable",
            "train.steps=1",
            "validation.every=1",
            "checkpoint.every=1",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    result = run_training(cfg, progress=False)
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    if result.final_val["val/reward"] < 0:
        assert "negative" in run.data.tags["harness.selection_warning"]
    else:
        assert "harness.selection_warning" not in run.data.tags


# -- bug 2: harness eval RUN_ID used 64 tokens / 4 samples / CPU whatever the run said -------------


def test_eval_of_a_run_inherits_its_settings_and_flags_override(tiny_assets, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from harness.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("eval-settings", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    output_dir = tmp_path / "out"
    shutil.copytree(tiny_assets.policy_dir, output_dir / "checkpoints" / "step_5")
    client.log_param(run_id, "output_dir", str(output_dir))
    client.log_metric(run_id, "val/len_norm_reward", 0.1, step=5)
    client.log_metric(run_id, "val/reward", 0.5, step=5)
    (tmp_path / "checkpoints.json").write_text(
        json.dumps([{"step": 5, "path": "checkpoints/step_5", "validated": True}])
    )
    client.log_artifact(run_id, str(tmp_path / "checkpoints.json"))
    cfg = load_run_config(
        TINY,
        [
            "eval.samples=3",
            "eval.temperature=0.8",
            "eval.top_p=0.7",
            "train.max_new_tokens=12",
            "seed=5",
            "rollout.batch_size=7",
            "data.math_prompt_template='Q: {problem} A:'",
        ],
    )
    client.log_text(run_id, cfg.to_yaml(), "config.yaml")
    rows = [json.loads(line) for line in (tiny_assets.data_dir / "math" / "test.jsonl").read_text().splitlines()][:2]
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))

    code = main(
        [
            "eval",
            run_id,
            "--suites",
            "tiny_math",
            "--tracking-uri",
            uri,
            "--data",
            f"tiny_math={data}",
            "--temperature",
            "0.3",
            "--out",
            str(tmp_path / "gen"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    used = summary["settings"]
    assert used["samples"] == 3 and used["top_p"] == 0.7 and used["max_new_tokens"] == 12  # from the run
    assert used["seed"] == 5 and used["batch_size"] == 7 and used["device"] == "cpu"
    assert used["prompt_template"] == "Q: {problem} A:"
    assert used["temperature"] == 0.3  # the flag wins
    assert "eval settings:" in out and '"max_new_tokens": 12' in out
    tag = json.loads(client.get_run(run_id).data.tags["harness.eval_settings"])
    assert tag["samples"] == 3 and tag["temperature"] == 0.3
    generations = [
        json.loads(line)
        for line in (tmp_path / "gen" / "step_5" / "tiny_math" / "generations.jsonl").read_text().splitlines()
    ]
    assert len(generations) == 2 * 3  # 3 samples per problem, as the run's eval.samples says
    assert all(g["prompt"].startswith("Q: ") for g in generations)  # the run's template
