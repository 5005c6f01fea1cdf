"""Conformance of the training loop: sync semantics, staleness, log-probs, resume, learning.

These are the bugs peers found the hard way; every test runs the real loop on the embedded
tiny model (short runs, so the whole file stays within a few minutes on 2 cores).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.train import checkpoint as ckpt
from harness.config import load_run_config
from harness.rollout import HFGenerator, SamplingParams
from harness.train.sequences import pack, policy_logprobs
from harness.tracking import MemoryTracker
from harness.train.trainer import chat_prompt, train

pytestmark = pytest.mark.slow  # in-process training runs

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
FAST = [
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=40",
    "validation.prompts=8",
    "validation.every=100",
    "checkpoint.every=100",
]


def run(tmp_path, *overrides, name="run"):
    cfg = load_run_config(TINY, [*FAST, f"output_dir={tmp_path / name}", *overrides])
    tracker = MemoryTracker()
    result = train(cfg, tracker=tracker, progress=False)
    return cfg, tracker, result


def series(tracker, key):
    return [value for step, value in tracker.series(key) if step > 0]


def policy_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k in b)


def test_staleness_cycles_within_each_sync_interval(tiny_assets, tmp_path):
    _, tracker, _ = run(tmp_path, "sync_every=3", "train.steps=7")
    assert series(tracker, "train/generator_staleness") == [0, 1, 2, 0, 1, 2, 0]
    # verifiable DPO: the reference follows the generator (paper setting, ref_sync_every=auto)
    assert series(tracker, "train/ref_staleness") == [0, 1, 2, 0, 1, 2, 0]


def test_generator_equals_trainer_right_after_sync_and_lags_between(tiny_assets, tmp_path):
    _, _, result = run(
        tmp_path,
        "sync_every=2",
        "train.steps=5",
        "checkpoint.every=1",
        "train.lr=1e-3",
        "train.prompts_per_step=16",
        "method=grpo",
        "grpo.importance_sampling=true",
    )
    saved = dict(ckpt.list_checkpoints(result.output_dir))
    seed = load_file(str(Path(tiny_assets.policy_dir) / "model.safetensors"))
    lagging = 0
    for step in range(1, 6):
        meta, tensors = ckpt.load_trainer_state(saved[step])
        generator = ckpt.weights_with_prefix(tensors, "generator")
        assert meta["last_sync"] == ((step - 1) // 2) * 2
        if step % 2 == 0:
            assert generator is None  # the next step syncs: generator := trainer, nothing to keep
            continue
        # between syncs the generator holds exactly the weights the trainer had at the last sync
        expected = policy_weights(saved[step - 1]) if step > 1 else seed
        assert same(generator, expected)
        # the trainer moved on (GRPO's KL term always gives a gradient) while the generator did not
        assert not same(generator, policy_weights(saved[step]))
        lagging += 1
    assert lagging == 3


def test_offline_generator_never_leaves_the_seed(tiny_assets, tmp_path):
    cfg, tracker, result = run(tmp_path, "sync_every=inf", "train.steps=4", "checkpoint.every=1", "train.lr=1e-3")
    assert series(tracker, "train/generator_staleness") == [0, 1, 2, 3]
    seed = load_file(str(Path(tiny_assets.policy_dir) / "model.safetensors"))
    for step, path in ckpt.list_checkpoints(result.output_dir):
        meta, tensors = ckpt.load_trainer_state(path)
        assert meta["generator_version"] == 0  # no weights were ever pushed to the generator
        assert ckpt.weights_with_prefix(tensors, "generator") is None  # it is the seed, rebuilt on resume
        assert not same(policy_weights(path), seed)  # while the policy itself trained


def test_trainer_logprobs_match_generator_samples(tiny_assets):
    generator = HFGenerator(tiny_assets.policy_dir)
    tokenizer = generator.tokenizer
    prompts = [chat_prompt(tokenizer, f"Compute ({a} + 7) * 2 - 3.") for a in (3, 11, 18)]
    for temperature in (1.0, 0.7):
        groups = generator.generate(
            prompts, SamplingParams(n=4, temperature=temperature, max_new_tokens=40, seed=0, return_logprobs=True)
        )
        flat = [r for group in groups for r in group]
        batch = pack(flat, tokenizer.pad_token_id, torch.device("cpu"))
        with torch.no_grad():
            logp, _ = policy_logprobs(generator.model, batch, temperature)
        trainer_sums = (logp * batch.response_mask).sum(-1)
        generator_sums = torch.tensor([sum(r.logprobs) for r in flat])
        assert torch.allclose(trainer_sums, generator_sums, atol=1e-3), (trainer_sums - generator_sums).abs().max()


def test_resume_continues_exactly_where_the_run_stopped(tiny_assets, tmp_path):
    common = ["sync_every=2", "train.lr=1e-3", "checkpoint.every=3"]
    _, _, straight = run(tmp_path, *common, "train.steps=5", name="straight")
    cfg = load_run_config(TINY, [*FAST, *common, "train.steps=3", f"output_dir={tmp_path / 'split'}"])
    train(cfg, tracker=MemoryTracker(), progress=False)  # "killed" after the step-3 checkpoint
    resumed_cfg = load_run_config(TINY, [*FAST, *common, "train.steps=5", f"output_dir={tmp_path / 'split'}"])
    tracker = MemoryTracker()
    resumed = train(resumed_cfg, tracker=tracker, resume=True, progress=False)
    assert [step for step, _ in tracker.series("train/loss")] == [4, 5]
    assert series(tracker, "train/generator_staleness") == [1, 0]
    final_straight = policy_weights(ckpt.list_checkpoints(straight.output_dir)[-1][1])
    final_resumed = policy_weights(ckpt.list_checkpoints(resumed.output_dir)[-1][1])
    for key in final_straight:
        assert torch.allclose(final_straight[key], final_resumed[key], atol=1e-6), key


def test_grpo_and_importance_sampled_grpo_run(tiny_assets, tmp_path):
    _, tracker, _ = run(tmp_path, "method=grpo", "train.steps=2", name="grpo")
    assert len(series(tracker, "train/kl")) == 2
    _, tracker, _ = run(
        tmp_path,
        "method=grpo",
        "sync_every=2",
        "grpo.importance_sampling=true",
        "train.steps=3",
        "train.lr=1e-3",
        name="grpo_is",
    )
    ratios = series(tracker, "train/is_ratio_mean")
    assert ratios[0] == pytest.approx(1.0, abs=1e-3)  # on-policy right after a sync
    assert series(tracker, "train/generator_staleness") == [0, 1, 0]


def test_joint_mix_scores_each_task_and_logs_per_task_validation(tiny_assets, tmp_path):
    _, tracker, _ = run(tmp_path, "task_mix=joint", "dpo.beta=0.01", "train.steps=1", name="joint")
    last = tracker.history[-1][1] if "val/reward" in tracker.history[-1][1] else tracker.history[0][1]
    assert {"val/verifiable/reward", "val/non_verifiable/reward", "val/len_norm_reward"} <= set(last)
    assert "reward/verifiable_mean" in tracker.history[1][1] and "reward/non_verifiable_mean" in tracker.history[1][1]


def test_metric_schema_is_shared_by_dpo_and_grpo(tiny_assets, tmp_path):
    names = {}
    for method in ("dpo", "grpo"):
        _, tracker, _ = run(tmp_path, f"method={method}", "train.steps=1", name=method)
        names[method] = {key for _, metrics in tracker.history for key in metrics}
    shared = {
        "train/loss",
        "train/reward_mean",
        "train/entropy",
        "train/response_len",
        "train/kl",
        "train/generator_staleness",
        "train/ref_staleness",
        "time/generate_s",
        "time/score_s",
        "time/train_s",
        "time/sync_s",
        "val/reward",
        "val/response_len",
        "val/len_norm_reward",
        "val/entropy",
    }
    assert shared <= names["dpo"] and shared <= names["grpo"]
    assert "train/pairs" in names["dpo"]
