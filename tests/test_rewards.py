"""Tests for harness.rewards: Math-Verify grading, the worker pool, the reward model, the router."""

import time

import pytest

from harness.errors import AssetMissingError, ConfigError, DataError
from harness.rewards import (
    MathVerifyPool,
    MathVerifyReward,
    RewardBatch,
    RewardModelReward,
    RewardModelScorer,
    RewardRouter,
    make_reward_fn,
    make_reward_router,
    math_verify_reward,
)
from helpers_slow_grader import CRASH_MARKER, HANG_MARKER
from helpers_tiny_reward_model import save_tiny_reward_model

SLOW_GRADER = "helpers_slow_grader:grade_or_hang"
TOWER = r"The final answer is $\boxed{9^{9^{9^{9}}}}$."  # sympy never finishes this one

# ------------------------------------------------------------------ Math-Verify conformance


@pytest.mark.parametrize(
    ("gold", "prediction", "expected"),
    [
        ("27.0", "27", 1.0),  # AMC23 golds are floats
        ("0.5", r"\frac{1}{2}", 1.0),
        ("4", r"\boxed{3}", 0.0),
        ("4", r"There are 4 apples, so the answer is $\boxed{5}$; 4 was a distractor.", 0.0),
        ("4", "I cannot solve this.", 0.0),
        ("-12", r"The final answer is $\boxed{-12}$", 1.0),
        ("$-12$", r"The final answer is $\boxed{-12}$", 1.0),  # already wrapped gold
        (r"\frac{1}{2}", r"so $\boxed{\dfrac{1}{2}}$", 1.0),
        ("", r"\boxed{4}", 0.0),  # unparsable gold never rewards
    ],
)
def test_math_verify_reward_conformance(gold, prediction, expected):
    assert math_verify_reward(gold, prediction) == expected


def test_math_verify_reward_boxed_answer_wins_over_other_numbers():
    right_boxed = r"First we get 3, then 7. The final answer is $\boxed{4}$."
    wrong_boxed = r"First we get 4, then 7. The final answer is $\boxed{3}$."
    assert math_verify_reward("4", right_boxed) == 1.0
    assert math_verify_reward("4", wrong_boxed) == 0.0


# --------------------------------------------------------------------------- the pool


def _math_batch(n: int) -> tuple[list[str], list[str]]:
    golds = [str(i % 37) for i in range(n)]
    predictions = [
        rf"We compute {i} steps. The final answer is $\boxed{{{i % 37 if i % 3 else i % 5}}}$." for i in range(n)
    ]
    return golds, predictions


def test_pool_matches_pure_function_on_a_batch():
    golds, predictions = _math_batch(60)
    predictions[7] = "no answer here"
    expected = [math_verify_reward(g, p) for g, p in zip(golds, predictions)]
    assert 0.0 in expected and 1.0 in expected
    with MathVerifyPool(workers=2, timeout_s=5.0) as pool:
        assert pool.score(golds, predictions) == expected
        assert pool.score([], []) == []
        assert pool.timeouts == 0


def test_pool_kills_hanging_grader_and_keeps_other_scores():
    golds, predictions = _math_batch(24)
    expected = [math_verify_reward(g, p) for g, p in zip(golds, predictions)]
    predictions[5] = f"{HANG_MARKER} {predictions[5]}"
    expected[5] = 0.0
    timeout_s = 1.0
    with MathVerifyPool(workers=2, timeout_s=timeout_s, grader=SLOW_GRADER) as pool:
        pool.start()
        first_pids = {p.pid for p in pool.processes}
        began = time.monotonic()
        scores = pool.score(golds, predictions)
        elapsed = time.monotonic() - began
        assert scores == expected
        assert pool.timeouts == 1
        # slack covers respawning a worker on a loaded 2-core machine; a hang would never return
        assert elapsed < timeout_s + 10.0
        # The stuck worker was killed and replaced: the pool still has two live workers.
        processes = pool.processes
        assert len(processes) == 2 and all(p.is_alive() for p in processes)
        assert len(first_pids - {p.pid for p in processes}) == 1
        # A cached timed-out answer costs nothing the second time.
        began = time.monotonic()
        assert pool.score([golds[5]], [predictions[5]]) == [0.0]
        assert time.monotonic() - began < 0.5
        assert pool.timeouts == 1


def test_pool_survives_a_worker_that_dies_mid_chunk():
    golds, predictions = _math_batch(12)
    expected = [math_verify_reward(g, p) for g, p in zip(golds, predictions)]
    predictions[2], expected[2] = CRASH_MARKER, 0.0
    with MathVerifyPool(workers=1, timeout_s=5.0, grader=SLOW_GRADER) as pool:
        assert pool.score(golds, predictions) == expected
        assert (pool.crashes, pool.timeouts) == (1, 0)
        assert len(pool.processes) == 1 and pool.processes[0].is_alive()


def test_pool_times_out_a_real_pathological_answer():
    with MathVerifyPool(workers=1, timeout_s=1.0) as pool:
        pool.start()
        began = time.monotonic()
        scores = pool.score(["3", "27.0", "5"], [TOWER, r"\boxed{27}", r"\boxed{5}"])
        elapsed = time.monotonic() - began
    assert scores == [0.0, 1.0, 1.0]
    assert pool.timeouts == 1
    assert elapsed < 1.0 + 10.0  # the tower alone runs for more than 20 s without the kill


def test_pool_close_leaves_no_worker_processes():
    pool = MathVerifyPool(workers=2, timeout_s=5.0)
    assert pool.processes == []  # lazy: nothing started yet
    assert pool.score(["1"], [r"\boxed{1}"]) == [1.0]
    processes = pool.processes
    assert len(processes) == 2 and all(p.is_alive() for p in processes)
    pool.close()
    assert not any(p.is_alive() for p in processes)
    pool.close()  # idempotent


def test_pool_caches_repeated_answers():
    with MathVerifyPool(workers=1, timeout_s=5.0) as pool:
        assert pool.score(["2", "2"], [r"\boxed{2}", r"\boxed{2}"]) == [1.0, 1.0]
        assert pool.cache == {("2", r"\boxed{2}"): 1.0}


def test_pool_rejects_a_grader_that_cannot_be_imported():
    with pytest.raises(ConfigError, match="no_such_module"):
        MathVerifyPool(grader="no_such_module:grade")


# ----------------------------------------------------------------------- reward model


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory):
    return save_tiny_reward_model(tmp_path_factory.mktemp("tiny_rm"))


PROMPTS = ["hi", "What is 2+2?", "Write a haiku about rain.", "x"]
RESPONSES = ["hello there", "4", "Rain on the roof, soft drums in the night, sleep comes.", "y" * 90]


def test_reward_model_batch_scores_equal_one_by_one_scores(tiny_rm_dir):
    scorer = RewardModelScorer(tiny_rm_dir, batch_size=64)
    batch = scorer.score(PROMPTS, RESPONSES)
    single = [scorer.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert batch == pytest.approx(single, abs=1e-5)
    assert len(set(round(s, 6) for s in batch)) == len(batch)  # scores really differ
    # Deterministic, and the same with batches smaller than the input.
    assert RewardModelScorer(tiny_rm_dir, batch_size=3).score(PROMPTS, RESPONSES) == pytest.approx(batch, abs=1e-5)


def test_reward_model_uses_the_chat_template(tiny_rm_dir):
    scorer = RewardModelScorer(tiny_rm_dir)
    assert scorer.format_pair("hi", "yo") == "<|user|>hi<|end|><|assistant|>yo<|end|>"
    assert scorer.model.config.pad_token_id == scorer.tokenizer.pad_token_id


def test_reward_model_without_chat_template_joins_with_newline(tmp_path):
    scorer = RewardModelScorer(save_tiny_reward_model(tmp_path, with_chat_template=False))
    assert scorer.format_pair("hi", "yo") == "hi\nyo"
    assert len(scorer.score(["hi"], ["yo"])) == 1


def test_reward_model_truncates_long_pairs_on_the_left(tiny_rm_dir):
    scorer = RewardModelScorer(tiny_rm_dir, max_length=16)
    [long_score] = scorer.score(["a" * 50], ["the end"])
    assert scorer.truncated == 1
    assert isinstance(long_score, float)


def test_reward_model_missing_dir_raises_asset_missing(tmp_path):
    missing = tmp_path / "no_such_rm"
    with pytest.raises(AssetMissingError, match="no_such_rm"):
        RewardModelScorer(missing)
    with pytest.raises(AssetMissingError, match="model_dir is empty"):
        make_reward_fn("reward_model", model_dir=None)


# ----------------------------------------------------------------------------- router


class _LengthReward:
    """A stand-in non-verifiable reward: response length (records it saw are kept)."""

    def __init__(self):
        self.calls = []

    def __call__(self, records, responses):
        self.calls.append([r["id"] for r in records])
        return [float(len(r)) for r in responses]


def _mixed_records():
    return [
        {"id": "m0", "task": "verifiable", "prompt": "1+1?", "answer": "2"},
        {"id": "c0", "task": "non_verifiable", "prompt": "hello"},
        {"id": "m1", "task": "verifiable", "prompt": "2+2?", "answer": "4"},
        {"id": "c1", "task": "non_verifiable", "prompt": "bye"},
    ]


def test_router_scores_each_task_with_its_function_in_order():
    length_reward = _LengthReward()
    with MathVerifyPool(workers=1) as pool:
        router = RewardRouter({"verifiable": MathVerifyReward(pool), "non_verifiable": length_reward})
        responses = [r"\boxed{2}", "abc", r"\boxed{5}", "abcdefg"]
        result = router.score(_mixed_records(), responses)
    assert isinstance(result, RewardBatch)
    assert result.rewards == [1.0, 3.0, 0.0, 7.0]
    assert length_reward.calls == [["c0", "c1"]]  # one batched call per task
    assert result.stats == {
        "reward/verifiable_mean": 0.5,
        "reward/non_verifiable_mean": 5.0,
        "reward/math_verify_timeouts": 0.0,
    }


def test_router_with_reward_model_scores_prompts(tiny_rm_dir):
    scorer = RewardModelScorer(tiny_rm_dir)
    router = RewardRouter({"non_verifiable": RewardModelReward(scorer)})
    records = [r for r in _mixed_records() if r["task"] == "non_verifiable"]
    result = router.score(records, ["yes", "no"])
    assert result.rewards == pytest.approx(scorer.score(["hello", "bye"], ["yes", "no"]), abs=1e-6)
    assert set(result.stats) == {"reward/non_verifiable_mean"}


def test_router_unknown_task_raises_data_error():
    router = RewardRouter({"non_verifiable": _LengthReward()})
    with pytest.raises(DataError, match="'verifiable'"):
        router.score(_mixed_records(), ["a", "b", "c", "d"])


def test_math_verify_reward_without_answer_raises_data_error():
    reward = MathVerifyReward(MathVerifyPool(workers=1))
    with pytest.raises(DataError, match="m9"):
        reward([{"id": "m9", "task": "verifiable", "prompt": "?"}], [r"\boxed{1}"])


def test_registry_unknown_name_raises_config_error_listing_names():
    with pytest.raises(ConfigError, match="math_verify.*reward_model"):
        make_reward_fn("bleu")
    with pytest.raises(ConfigError, match="workerz"):
        make_reward_fn("math_verify", workerz=3)


def test_make_reward_router_builds_named_functions(tiny_rm_dir):
    router = make_reward_router(
        "math_verify",
        "reward_model",
        {"math_verify": {"workers": 1, "timeout_s": 2.0}, "reward_model": {"model_dir": str(tiny_rm_dir)}},
    )
    with router:
        assert isinstance(router.fns["verifiable"], MathVerifyReward)
        assert router.fns["verifiable"].pool.timeout_s == 2.0
        assert isinstance(router.fns["non_verifiable"], RewardModelReward)
        result = router.score(_mixed_records(), [r"\boxed{2}", "hi", r"\boxed{4}", "yo"])
        assert result.rewards[0] == 1.0 and result.rewards[2] == 1.0
    with pytest.raises(ConfigError):
        make_reward_router(None, None, {})
