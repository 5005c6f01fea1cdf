"""The tiny chat task's hidden ground truth beside the reward model's proxy: `quality` in the
tiny_chat suite and `val/quality` in validation (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluators.data import load_records
from evaluators.registry import EvalOptions, get_suite

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"


def test_tiny_chat_suite_reports_hand_computed_quality_and_its_se_over_prompts(tiny_assets, tmp_path):
    """Two hand-written answers to each of three test prompts, scored by the real suite (tiny reward
    model judge, seed baseline). Quality by hand from the task's rules (harness/tiny/chat_task.py):
      greet Gina:    "Hello, Gina!" 1.0;  "Goodbye, Gina!" 0.2 (not a greeting) + 0.5 (ends with the name) = 0.7
      count 34..36:  "34 35 36" 1.0;  "34 35 36 37 38 39 40 41" 3/3 - 0.25 * 5 - 0.25 < 0 -> 0.0
      cow a fruit?:  "No." 1.0;  "Maybe." 0.3
    per-prompt means 0.85, 0.5, 0.65 -> mean 0.666667; std (ddof=1) 0.175594 / sqrt(3) = 0.101379."""
    suite = get_suite("tiny_chat")
    records = load_records(suite)[:3]
    assert [r["prompt"] for r in records] == [
        "Write a greeting for Gina.",
        "Count up from 34 to 36.",
        "Question: is a cow a fruit?",
    ]
    outputs = [["Hello, Gina!", "Goodbye, Gina!"], ["34 35 36", "34 35 36 37 38 39 40 41"], ["No.", "Maybe."]]
    options = EvalOptions(max_new_tokens=16, judge={"baseline_cache_dir": str(tmp_path)}, show_progress=False)
    metrics, rows = suite.score_outputs(suite, records, outputs, options)
    assert metrics["quality"] == pytest.approx(0.666667, abs=1e-6)
    assert metrics["quality_se"] == pytest.approx(0.101379, abs=1e-6)
    assert [r["quality"] for r in rows] == pytest.approx([1.0, 0.7, 1.0, 0.0, 1.0, 0.3])
    assert list(metrics)[0] == "lc_winrate"  # the judged win rate stays the suite's headline


def test_tiny_chat_suite_leaves_quality_out_for_records_without_hidden_fields(tiny_assets, tmp_path):
    suite = get_suite("tiny_chat")
    records = [{"id": "a", "prompt": "Greet Ben."}, {"id": "b", "prompt": "Name 2 fruits."}]
    options = EvalOptions(max_new_tokens=8, judge={"baseline_cache_dir": str(tmp_path)}, show_progress=False)
    metrics, rows = suite.score_outputs(suite, records, [["Hello, Ben!"], ["apple, plum"]], options)
    assert "quality" not in metrics and "quality" not in rows[0]


def test_a_joint_run_logs_val_quality_over_the_chat_prompts_only(tiny_assets, tmp_path):
    """A short joint run: `val/quality` and `val/non_verifiable/quality` at every validation, equal (math
    prompts have no truth); at step 0 they are the seed policy's quality on the first validation prompts,
    recomputed here from the raw validation file, the seed policy and chat_task.quality."""
    from harness.chat import chat_prompt
    from harness.config import load_run_config
    from harness.models import load_policy
    from harness.rollout import HFGenerator, SamplingParams
    from harness.tiny.chat_task import quality
    from harness.tracking import MemoryTracker
    from harness.train.trainer import train

    cfg = load_run_config(
        TINY,
        [
            "task_mix=joint",
            "train.steps=2",
            "validation.every=2",
            "validation.prompts=6",
            "train.prompts_per_step=2",
            "train.samples_per_prompt=2",
            "train.max_new_tokens=16",
            "checkpoint.every=2",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    tracker = MemoryTracker()
    train(cfg, tracker=tracker, progress=False)
    logged = dict(tracker.series("val/quality"))
    assert sorted(logged) == [0, 2]
    assert dict(tracker.series("val/non_verifiable/quality")) == logged
    assert not tracker.series("val/verifiable/quality")

    rows = [json.loads(line) for line in (tiny_assets.data_dir / "chat" / "validation.jsonl").read_text().splitlines()]
    rows = rows[:6]
    policy, tokenizer = load_policy(tiny_assets.policy_dir)
    params = SamplingParams(
        n=1,
        temperature=cfg.validation.temperature,
        top_p=cfg.validation.top_p,
        max_new_tokens=cfg.train.max_new_tokens,
        seed=cfg.seed,
    )
    samples = HFGenerator(policy, tokenizer, copy_model=False).generate(
        [chat_prompt(tokenizer, row["prompt"]) for row in rows], params, keys=list(range(len(rows)))
    )
    expected = sum(quality(row, group[0].text) for row, group in zip(rows, samples)) / len(rows)
    assert logged[0] == pytest.approx(expected, abs=1e-9)


def test_an_alternative_rule_is_evaluated_under_its_own_prefix_and_leaves_eval_untouched(tiny_assets, tmp_path):
    """len_norm picks step 5 (short answers), max_val_reward step 10 (higher reward, much longer):
    `--rule max_val_reward --as-alternative` logs eval_max_val_reward/* and selected_step_max_val_reward,
    and every eval/* metric, selected_step and the selection_rule tag keep their one logged value."""
    import shutil

    from mlflow.tracking import MlflowClient

    from harness.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("alt-rule", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    output_dir = tmp_path / "out"
    for step in (5, 10):
        shutil.copytree(tiny_assets.policy_dir, output_dir / "checkpoints" / f"step_{step}")
    client.log_param(run_id, "output_dir", str(output_dir))
    for step, reward, length in ((5, 0.4, 10.0), (10, 0.6, 60.0)):
        client.log_metric(run_id, "val/reward", reward, step=step)
        client.log_metric(run_id, "val/response_len", length, step=step)
        client.log_metric(run_id, "val/len_norm_reward", reward / length, step=step)
    (tmp_path / "checkpoints.json").write_text(
        json.dumps([{"step": s, "path": f"checkpoints/step_{s}", "validated": True} for s in (5, 10)])
    )
    client.log_artifact(run_id, str(tmp_path / "checkpoints.json"))
    rows = [json.loads(line) for line in (tiny_assets.data_dir / "math" / "test.jsonl").read_text().splitlines()][:2]
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = [
        "--suites",
        "tiny_math",
        "--tracking-uri",
        uri,
        "--data",
        f"tiny_math={data}",
        "--samples",
        "1",
        "--max-new-tokens",
        "8",
    ]

    assert main(["eval", run_id, *common]) == 0
    before = client.get_run(run_id).data
    assert before.metrics["selected_step"] == 5
    assert (
        main(["eval", run_id, "--rule", "max_val_reward", "--as-alternative", *common, "--out", str(tmp_path / "gen")])
        == 0
    )
    after = client.get_run(run_id).data
    assert after.metrics["selected_step_max_val_reward"] == 10
    assert "eval_max_val_reward/tiny_math/pass_at_1" in after.metrics
    assert "eval_max_val_reward/tiny_math/pass_at_1_se" in after.metrics
    assert after.tags["selection_rule"] == "len_norm" and "eval_max_val_reward/settings" in after.tags
    for key in [k for k in before.metrics if k.startswith(("eval/", "eval_final/"))] + ["selected_step"]:
        assert len(client.get_metric_history(run_id, key)) == 1, key
        assert after.metrics[key] == before.metrics[key]
    assert (tmp_path / "gen" / "step_10" / "tiny_math" / "generations.jsonl").is_file()
    logged = [a.path for a in client.list_artifacts(run_id, "eval_max_val_reward/tiny_math")]
    assert logged == ["eval_max_val_reward/tiny_math/generations.jsonl"]
