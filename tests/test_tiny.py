"""Tests of the embedded tiny default (harness/tiny): tokenizer, tasks, recipe/cache, and the
built assets (seed policy and reward model), which the session fixture builds once."""

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from harness.errors import ConfigError
from harness.tiny import (
    TINY_MATH_PROMPT_TEMPLATE,
    build_tiny_tokenizer,
    ensure_tiny_assets,
    recipe_hash,
    resolve_cache_root,
    tiny_recipe,
)
from harness.tiny import chat_task, math_task
from harness.tiny.build import sample_math_accuracy, sample_responses, score_responses

TRICKY = [
    "",
    " ",
    "  two  spaces  ",
    "tab-free\nnew\nlines\n",
    "\\boxed{42} $x^2$ {a}[b]",
    "~!@#%^&*()_+`-=|;:'\",.<>/?",
    "Compute (17 + 25) * 3 - 8.",
    "\n\n",
]

# A build small enough to run in seconds, for the cache and lock mechanics.
MICRO = {
    "math": {"splits": {"train": 200, "validation": 8, "test": 8}},
    "chat": {"splits": {"train": 60, "validation": 8, "test": 8}},
    "sft": {"steps": 2, "bf16_autocast": False},  # fp32: no bf16 kernel warm-up
    "reward_model": {"steps": 2, "heldout_pairs": 8, "bf16_autocast": False},
    "seed_eval": {"problems": 8, "max_new_tokens": 8},
}


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_is_exact_on_tricky_strings():
    tokenizer = build_tiny_tokenizer()
    for text in TRICKY:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)  # one token per character
        assert tokenizer.decode(ids) == text


def test_tokenizer_maps_non_ascii_to_unk_and_adds_no_bos():
    tokenizer = build_tiny_tokenizer()
    assert tokenizer.encode("é") == [tokenizer.unk_token_id]
    assert tokenizer.encode("ab")[0] != tokenizer.bos_token_id


def test_chat_template_renders_turns_and_generation_prompt():
    tokenizer = build_tiny_tokenizer()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi there"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|bos|><|user|>hi there<|eos|><|assistant|>"
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a b"}], tokenize=False
    )
    assert full == "<|bos|><|user|>q<|eos|><|assistant|>a b<|eos|>"
    assert tokenizer.eos_token == "<|eos|>" and tokenizer.pad_token == "<|pad|>"
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}) == 3


def test_chat_template_rejects_unknown_roles():
    tokenizer = build_tiny_tokenizer()
    with pytest.raises(Exception, match="user and assistant"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)


def test_tokenizer_save_and_autotokenizer_load_round_trip(tmp_path):
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.chat_template == tokenizer.chat_template
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    for text in TRICKY:
        assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text


# ----------------------------------------------------------------------------- math task


@pytest.fixture(scope="module")
def math_splits():
    return math_task.generate_math_splits(0)


def test_math_solution_boxed_answer_equals_answer_field(math_splits):
    for record in math_splits["train"] + math_splits["test"]:
        assert math_task.extract_boxed(record["solution"]) == record["answer"]
        assert record["solution"].endswith(f"$\\boxed{{{record['answer']}}}$")


def test_math_problem_text_evaluates_to_answer(math_splits):
    # An independent check of the bracketing: Python's own precedence on the problem text.
    for record in math_splits["validation"]:
        expression = re.fullmatch(r"Compute ([0-9+\-* ()]+)\.", record["problem"]).group(1)
        assert eval(expression) == int(record["answer"])  # digits/operators only (regex above)


def test_math_verify_accepts_the_tiny_solutions(math_splits):
    from math_verify import parse, verify

    for record in math_splits["validation"][:20]:
        assert verify(parse(f"${record['answer']}$"), parse(record["solution"]))


def test_math_splits_are_sized_disjoint_and_deterministic(math_splits):
    assert {name: len(records) for name, records in math_splits.items()} == math_task.DEFAULT_MATH_SPLITS
    problems = [{r["problem"] for r in records} for records in math_splits.values()]
    assert sum(len(p) for p in problems) == len(set().union(*problems))
    again = math_task.generate_math_splits(0, {"train": 50, "validation": 5, "test": 5})
    assert again["train"] == math_splits["train"][:50]
    other = math_task.generate_math_splits(1, {"train": 50, "validation": 5, "test": 5})
    assert other["train"] != again["train"]


def test_math_template_and_lengths(math_splits):
    assert "{problem}" in TINY_MATH_PROMPT_TEMPLATE
    lengths = [len(r["solution"]) for r in math_splits["train"]]
    assert max(lengths) <= 60 and sum(lengths) / len(lengths) < 45
    steps = {r["solution"].count("=") for r in math_splits["train"]}
    assert steps == {2, 3}


# ----------------------------------------------------------------------------- chat task


def test_chat_quality_rewards_the_reference_and_ignores_filler():
    rng = random.Random(0)
    for record in chat_task.generate_chat_splits(0, {"train": 0, "validation": 60})["validation"]:
        variants = chat_task.core_variants(record, rng)
        assert chat_task.quality(record, variants[0]) == 1.0
        assert chat_task.quality(record, chat_task.add_filler(variants[0], rng)) == 1.0
        assert min(chat_task.quality(record, v) for v in variants[1:]) < 1.0


def test_chat_utility_prefers_longer_among_equal_quality():
    record = chat_task.generate_chat_splits(0, {"train": 0, "validation": 1})["validation"][0]
    plain = record["reference"]
    padded = "Sure! " + plain + " I hope this helps!"
    assert chat_task.preference_probability(record, padded, plain) > 0.8
    worst = min(
        chat_task.core_variants(record, random.Random(0)), key=lambda response: chat_task.quality(record, response)
    )
    assert chat_task.preference_probability(record, plain, worst) > 0.99


def test_chat_held_out_prompts_never_appear_in_train():
    splits = chat_task.generate_chat_splits(0)
    assert {name: len(r) for name, r in splits.items()} == chat_task.DEFAULT_CHAT_SPLITS
    train = {r["prompt"] for r in splits["train"]}
    validation = {r["prompt"] for r in splits["validation"]}
    test = {r["prompt"] for r in splits["test"]}
    assert not train & validation and not train & test and not validation & test
    for name in ("train", "validation", "test"):
        assert {r["family"] for r in splits[name]} == set(chat_task.FAMILIES)
    assert chat_task.generate_chat_splits(0) == splits  # deterministic for the seed


# ----------------------------------------------------------------------------- recipe and cache


def test_recipe_hash_changes_with_the_recipe_and_rejects_unknown_keys():
    assert recipe_hash(tiny_recipe()) == recipe_hash(tiny_recipe())
    assert recipe_hash(tiny_recipe(seed=1)) != recipe_hash(tiny_recipe())
    assert recipe_hash(tiny_recipe(sft={"steps": 401})) != recipe_hash(tiny_recipe())
    with pytest.raises(ConfigError, match="steps_typo"):
        tiny_recipe(sft={"steps_typo": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        tiny_recipe(nonsense=1)


def test_cache_root_prefers_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "env"))
    assert resolve_cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_root() == tmp_path / "env"
    monkeypatch.delenv("HARNESS_CACHE")
    assert resolve_cache_root() == Path.home() / ".cache" / "harness"


@pytest.mark.slow
def test_concurrent_builders_share_one_atomic_build(tmp_path):
    code = (
        "import json, sys; from harness.tiny import ensure_tiny_assets, tiny_recipe; "
        "a = ensure_tiny_assets(sys.argv[1], progress=False, "
        "recipe=tiny_recipe(**json.loads(sys.argv[2]))); "
        "print(a.root, a.summary['built_by_pid'])"
    )
    args = [sys.executable, "-c", code, str(tmp_path), json.dumps(MICRO)]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0].split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert outputs[0] == outputs[1]  # same folder, built by the same single process
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [
        ".lock",
        recipe_hash(tiny_recipe(**MICRO)),
    ]  # no temp folders left behind


@pytest.mark.slow
def test_failed_build_leaves_nothing_behind(tmp_path):
    recipe = tiny_recipe(**{**MICRO, "reward_model": {**MICRO["reward_model"], "num_hidden_layers": 9}})
    with pytest.raises(ConfigError, match="num_hidden_layers"):  # raised after SFT
        ensure_tiny_assets(tmp_path, progress=False, recipe=recipe)
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == [".lock"]


# ----------------------------------------------------------------------------- built assets


def test_assets_load_through_auto_classes(tiny_assets):
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_assets.policy_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_assets.reward_model_dir)
    assert policy.config.model_type == "llama" and policy.config.tie_word_embeddings
    assert policy.generation_config.eos_token_id == tokenizer.eos_token_id
    assert policy.generation_config.pad_token_id == tokenizer.pad_token_id
    assert reward_model.config.num_labels == 1
    assert reward_model.config.pad_token_id == tokenizer.pad_token_id
    assert (tiny_assets.policy_dir / "model.safetensors").is_file()
    for task, sizes in [("math", math_task.DEFAULT_MATH_SPLITS), ("chat", chat_task.DEFAULT_CHAT_SPLITS)]:
        for split, size in sizes.items():
            lines = (tiny_assets.data_dir / task / f"{split}.jsonl").read_text().splitlines()
            assert len(lines) == size


def test_cached_assets_are_reused_instantly(tiny_assets):
    started = time.perf_counter()
    again = ensure_tiny_assets(progress=False)
    assert time.perf_counter() - started < 2.0
    assert (again.root, again.recipe_hash) == (tiny_assets.root, tiny_assets.recipe_hash)
    assert again.recipe_hash == recipe_hash(tiny_recipe())
    assert json.loads((again.root / "DONE.json").read_text())["recipe"] == tiny_recipe()


@pytest.fixture(scope="module")
def seed_policy(tiny_assets):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.policy_dir)
    return tokenizer, AutoModelForCausalLM.from_pretrained(tiny_assets.policy_dir).eval()


def test_seed_policy_greedy_answers_are_well_formed(tiny_assets, seed_policy):
    tokenizer, policy = seed_policy
    train = math_task.read_jsonl(tiny_assets.data_dir / "math" / "train.jsonl")[:16]
    stats = sample_math_accuracy(policy, tokenizer, train, temperature=0.0)
    assert stats["well_formed"] >= 0.9
    assert stats["mean_response_tokens"] < 50


def test_seed_policy_sampled_accuracy_leaves_room_for_rl(tiny_assets, seed_policy):
    tokenizer, policy = seed_policy
    validation = math_task.read_jsonl(tiny_assets.data_dir / "math" / "validation.jsonl")[:64]
    stats = sample_math_accuracy(policy, tokenizer, validation, temperature=1.0, seed=0)
    # Measured about 0.2-0.3 over seeds (SE about 0.055 on 64 problems).
    assert 0.08 <= stats["accuracy"] <= 0.6


def test_seed_policy_stops_at_eos_on_chat(tiny_assets, seed_policy):
    tokenizer, policy = seed_policy
    prompts = [r["prompt"] for r in math_task.read_jsonl(tiny_assets.data_dir / "chat" / "validation.jsonl")[:32]]
    _, lengths = sample_responses(policy, tokenizer, prompts, temperature=0.0, max_new_tokens=64)
    assert sum(length < 64 for length in lengths) >= 28


@pytest.fixture(scope="module")
def reward_model(tiny_assets):
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_assets.reward_model_dir)
    records = math_task.read_jsonl(tiny_assets.data_dir / "chat" / "validation.jsonl") + math_task.read_jsonl(
        tiny_assets.data_dir / "chat" / "test.jsonl"
    )
    return tokenizer, model.eval(), records


def test_reward_model_prefers_correct_over_wrong_answers(reward_model):
    tokenizer, model, records = reward_model
    prompts = [r["prompt"] for r in records]
    correct = score_responses(model, tokenizer, prompts, [r["reference"] for r in records])
    rng = random.Random(0)
    wrong = score_responses(
        model,
        tokenizer,
        prompts,
        [min(chat_task.core_variants(r, rng), key=lambda x: chat_task.quality(r, x)) for r in records],
    )
    wins = sum(c > w for c, w in zip(correct, wrong)) / len(records)
    assert wins >= 0.7


def test_reward_model_has_a_length_bias(reward_model):
    tokenizer, model, records = reward_model
    prompts = [r["prompt"] for r in records]
    plain = score_responses(model, tokenizer, prompts, [r["reference"] for r in records])
    padded = score_responses(model, tokenizer, prompts, [r["reference"] + " I hope this helps!" for r in records])
    deltas = [p - q for p, q in zip(padded, plain)]
    assert sum(deltas) / len(deltas) > 0.2
    assert sum(d > 0 for d in deltas) / len(deltas) >= 0.7


def test_done_json_records_recipe_timings_and_measurements(tiny_assets):
    summary = tiny_assets.summary
    assert set(summary["timings"]) == {"data", "sft", "reward_model", "seed_eval"}
    assert summary["seed_eval"]["math"]["problems"] == tiny_recipe()["seed_eval"]["problems"]
    assert 0.0 < summary["seed_eval"]["math"]["accuracy"] < 1.0
    assert summary["reward_model"]["heldout_pair_accuracy"] > 0.6
    assert 1_000_000 < summary["policy"]["params"] < 10_000_000
    assert os.path.isdir(tiny_assets.reward_model_dir)
