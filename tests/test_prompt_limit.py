"""`data.max_prompt_tokens` on the tiny data: over-long prompts are dropped (default) or cut, and the
count is logged on the run; lengths are checked against the chat template tokenized on its own."""

from pathlib import Path

import pytest

from harness.config import load_run_config
from harness.models import load_tokenizer
from harness.train.prompt_limit import limit_prompts
from harness.tasks import load_split
from harness.tracking import MemoryTracker

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 26  # the tiny math prompts are 22 to 31 tokens long with the chat template


def templated_length(tokenizer, text: str) -> int:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


@pytest.fixture(scope="module")
def math_prompts(tiny_assets):
    tokenizer = load_tokenizer(tiny_assets.policy_dir)
    records = load_split("tiny_math", "validation")
    return tokenizer, records, [templated_length(tokenizer, r["prompt"]) for r in records]


def test_long_prompts_are_dropped(math_prompts):
    tokenizer, records, lengths = math_prompts
    too_long = sum(length > LIMIT for length in lengths)
    assert 0 < too_long < len(records)
    kept, dropped = limit_prompts(records, tokenizer, LIMIT, "drop")
    assert dropped == too_long and len(kept) == len(records) - too_long
    assert [r["id"] for r in kept] == [r["id"] for r, n in zip(records, lengths) if n <= LIMIT]


def test_long_prompts_are_cut_to_fit(math_prompts):
    tokenizer, records, lengths = math_prompts
    kept, cut = limit_prompts(records, tokenizer, LIMIT, "cut")
    assert cut == sum(length > LIMIT for length in lengths) and len(kept) == len(records)
    for before, after in zip(records, kept):
        assert templated_length(tokenizer, after["prompt"]) <= LIMIT
        assert before["prompt"].startswith(after["prompt"].rstrip())
    # one token shorter would have fitted as well: each cut keeps as much as fits
    assert max(templated_length(tokenizer, r["prompt"]) for r in kept) == LIMIT


@pytest.mark.slow
def test_training_drops_them_and_logs_the_count(tiny_assets, tmp_path):
    from harness.train.trainer import train

    tokenizer = load_tokenizer(tiny_assets.policy_dir)
    train_split = load_split("tiny_math", "train")
    expected = sum(templated_length(tokenizer, r["prompt"]) > LIMIT for r in train_split)
    cfg = load_run_config(
        ROOT / "sweeps/runs/tiny.yaml",
        [
            f"data.max_prompt_tokens={LIMIT}",
            "train.steps=1",
            "train.prompts_per_step=4",
            "train.samples_per_prompt=2",
            "train.max_new_tokens=8",
            "validation.prompts=4",
            f"output_dir={tmp_path}",
        ],
    )
    tracker = MemoryTracker()
    train(cfg, tracker=tracker, progress=False)
    assert tracker.series("data/long_prompts_dropped") == [(0, expected)]
