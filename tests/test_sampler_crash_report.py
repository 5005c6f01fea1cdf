"""A crash inside the HF sampler's prefill or decode is logged with the shapes it happened at (prompt
lengths, width, distinct prompts, every cache layer's buffers), then re-raised: the diagnostic for
crashes that only a GPU machine shows (issue 21). Driven with the real tiny policy and a KV cache made
deliberately too small, so the cache's own capacity check raises."""

from __future__ import annotations

import logging

import pytest

from harness.chat import chat_prompt
from harness.rollout import HFGenerator, SamplingParams
from harness.rollout import hf

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def generator(tiny_assets):
    return HFGenerator(tiny_assets.policy_dir)


# (positions the cache is short of prefill + NEW_TOKENS, where it overflows). 9 short: the prompts
# themselves do not fit. 6 short: prefill and decode steps 0 and 1 fit, step 2's forward overflows.
@pytest.mark.parametrize("short, phase", [(NEW_TOKENS + 1, "prefill"), (NEW_TOKENS - 2, "decode step 2")])
def test_a_sampler_crash_is_logged_with_its_shapes_and_re_raised(generator, monkeypatch, caplog, short, phase):
    tok = generator.tokenizer
    prompts = [chat_prompt(tok, text) for text in ("Compute 3 + 4.", "Compute (12 + 9) * 7 - 5.", "Say hi.")]
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    width, n = max(lengths), 2
    capacity = width + NEW_TOKENS - short
    real_cache = hf.preallocated_cache
    monkeypatch.setattr(hf, "preallocated_cache", lambda model, size: real_cache(model, size - short))
    with (
        caplog.at_level(logging.ERROR, logger="harness.rollout.hf"),
        pytest.raises(RuntimeError, match=f"KV cache capacity {capacity} exceeded"),
    ):
        generator.generate(prompts, SamplingParams(n=n, temperature=1.0, max_new_tokens=NEW_TOKENS, seed=0))

    records = [r for r in caplog.records if r.name == "harness.rollout.hf" and r.levelno == logging.ERROR]
    assert len(records) == 1 and records[0].exc_info[0] is RuntimeError  # the traceback goes with it
    report = records[0].getMessage().splitlines()
    assert report[0].startswith(f"sampler crashed in the {phase}: RuntimeError: KV cache capacity {capacity}")
    assert (
        f"batch {n * len(prompts)}, prompt lengths {min(lengths)}..{width}, width {width}, distinct prompts 3"
        in report[0]
    )
    assert f"prompt lengths: {sorted(lengths * n, reverse=True)}" in report  # longest first, as batched
    config = generator.model.config
    kv_heads, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    assert f"heads {config.num_attention_heads}, kv heads {kv_heads}" in "\n".join(report)
    layers = [line for line in report if line.startswith("cache layer ")]
    assert len(layers) == config.num_hidden_layers
    if phase == "prefill":  # layer 0 allocated its buffer for the 3 distinct prompts, then overflowed
        assert layers[0].startswith(
            f"cache layer 0: PreallocatedLayer length 0 capacity {capacity}, "
            f"key_buffer {(3, kv_heads, capacity, head_dim)}"
        )
        assert "key_buffer none" in layers[1]  # never reached
    else:  # every layer full: the prompts' copies for their samples (rows), prefill plus two tokens
        rows = int(next(line for line in report if "rows decoding" in line).split("rows decoding (")[1].split(",")[0])
        for index, line in enumerate(layers):
            assert line.startswith(
                f"cache layer {index}: PreallocatedLayer length {capacity} capacity {capacity}, "
                f"key_buffer {(rows, kv_heads, capacity, head_dim)}"
            )
