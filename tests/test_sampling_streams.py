"""Sampling correctness: Hugging Face's top-p boundary rule, and per-sample random streams that make
samples (and so evaluation scores) independent of batch size and chunking."""

from __future__ import annotations

import json

import pytest
import torch

from harness.rollout import HFGenerator, SamplingParams
from harness.rollout.hf import sample_next, top_p_filter


def test_top_p_exact_boundary_keeps_what_hugging_face_keeps():
    from transformers.generation.logits_process import TopPLogitsWarper

    probs = torch.tensor([[0.5, 0.25, 0.25]])
    kept = top_p_filter(probs, 0.75)
    assert (kept > 0).sum().item() == 2  # HF keeps two; the old rule kept all three
    hf = TopPLogitsWarper(top_p=0.75)(None, probs.log())
    assert torch.equal(kept > 0, torch.isfinite(hf))
    assert (top_p_filter(probs, 0.76) > 0).sum().item() == 3  # just past the boundary: all three
    assert (top_p_filter(torch.tensor([[0.9, 0.1]]), 0.01) > 0).sum().item() == 1  # the top token always stays


def test_top_p_matches_hugging_face_on_random_distributions():
    from transformers.generation.logits_process import TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    for top_p in (0.1, 0.5, 0.9, 0.99):
        logits = torch.randn(64, 50, generator=gen) * 3
        probs = logits.softmax(-1)
        hf = TopPLogitsWarper(top_p=top_p)(None, logits.clone())
        assert torch.equal(top_p_filter(probs, top_p) > 0, torch.isfinite(hf))


def test_inverse_cdf_draw_never_picks_a_truncated_token():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(200, 1)
    uniform = torch.linspace(0, 0.999999, 200)
    tokens, _ = sample_next(logits, 1.0, 0.5, uniform=uniform)
    kept = top_p_filter(logits.softmax(-1)[:1], 0.5) > 0
    assert kept[0, tokens].all()
    assert set(tokens.tolist()) == set(kept[0].nonzero().flatten().tolist())


@pytest.fixture(scope="module")
def generator(tiny_assets):
    return HFGenerator(tiny_assets.policy_dir, batch_size=256)


def _texts(groups):
    return [[r.text for r in group] for group in groups]


def test_samples_do_not_depend_on_batch_size_or_on_the_other_prompts(generator):
    prompts = [
        generator.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Compute {a} + {b}."}], add_generation_prompt=True, tokenize=False
        )
        for a, b in [(3, 4), (12, 9), (7, 7), (3, 4), (25, 1)]
    ]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=24, seed=7)
    keys = ["a", "b", "c", "d", "e"]
    reference = _texts(generator.generate(prompts, params, keys=keys))
    for batch_size in (1, 4, 7):
        generator.batch_size = batch_size
        assert _texts(generator.generate(prompts, params, keys=keys)) == reference
    generator.batch_size = 256
    # a prompt alone, with its key, draws exactly what it drew among the others
    assert _texts(generator.generate(prompts[1:2], params, keys=["b"])) == reference[1:2]
    # identical prompts under different keys get different streams (the old sampler gave chunk
    # after chunk the same draws); with 3 samples x 24 tokens a collision would be astounding
    assert reference[0] != reference[3]
    # the seed matters
    other = _texts(generator.generate(prompts, SamplingParams(**{**params.__dict__, "seed": 8}), keys=keys))
    assert other != reference


def test_eval_scores_do_not_change_with_batch_size(tiny_assets, tmp_path):
    from evaluators.checkpoint_eval import evaluate_checkpoint

    rows = [json.loads(line) for line in (tiny_assets.data_dir / "math" / "test.jsonl").read_text().splitlines()][:6]
    data = tmp_path / "six.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    results, generations = [], []
    for batch_size in (2, 5, 64):
        out = tmp_path / f"bs{batch_size}"
        results.append(
            evaluate_checkpoint(
                tiny_assets.policy_dir,
                ["tiny_math"],
                samples=3,
                temperature=1.0,
                top_p=0.95,
                max_new_tokens=24,
                batch_size=batch_size,
                seed=3,
                data_paths={"tiny_math": str(data)},
                out_dir=out,
                show_progress=False,
            )
        )
        generations.append(
            [json.loads(line)["output"] for line in (out / "tiny_math" / "generations.jsonl").read_text().splitlines()]
        )
    assert generations[0] == generations[1] == generations[2]
    assert results[0] == results[1] == results[2]


def test_the_fast_decoding_path_samples_what_the_plain_kv_cache_loop_samples(generator, monkeypatch):
    """Preallocated cache, one prefill per distinct prompt and finished rows leaving the batch change
    nothing: the same tokens and log-probs as the model's own concatenating cache over every row."""
    import harness.rollout.hf as hf

    prompts = [
        generator.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Compute {a} + {b} * 2."}], add_generation_prompt=True, tokenize=False
        )
        for a, b in [(3, 4), (12, 9), (7, 17)]
    ]
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=48, seed=11, return_logprobs=True)
    sizes = []
    hook = generator.model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        fast = generator.generate(prompts, params)
        prefill, decode_sizes = sizes[0], [rows for rows, _ in sizes[1:]]
        monkeypatch.setattr(hf, "preallocated_cache", lambda model, capacity: None)
        sizes.clear()
        plain = generator.generate(prompts, params)
    finally:
        hook.remove()
    assert prefill[0] == 3 and sizes[0][0] == 24  # one prefill row per distinct prompt, against one per sample
    lengths = sorted(r.length for group in fast for r in group)
    assert lengths[0] < lengths[-1] and decode_sizes[-1] < 24  # rows finished at different times and left
    assert [[r.token_ids for r in g] for g in fast] == [[r.token_ids for r in g] for g in plain]
    assert [[r.finish_reason for r in g] for g in fast] == [[r.finish_reason for r in g] for g in plain]
    worst = max(
        abs(a - b) for gf, gp in zip(fast, plain) for rf, rp in zip(gf, gp) for a, b in zip(rf.logprobs, rp.logprobs)
    )
    assert worst < 1e-5


def test_the_decoding_loop_reads_the_device_only_every_few_tokens(generator):
    """Reading a GPU value on the host (`int(t)`, `.item()`, `nonzero`) waits for every queued kernel; one
    per decoded token stretched an 8B-shape decode step of 64 rows on an H200 from 43 to 107 ms. The
    reads are counted where they happen, in aten (`_local_scalar_dense`, `nonzero`), outside the model's
    own forwards: at most two (the count, a compaction) per `CHECK_FINISHED_EVERY` decoded tokens. (On a
    CPU the generator reads every token, as it costs nothing there; this sets the GPU's interval.)"""
    import math

    from torch.utils._python_dispatch import TorchDispatchMode

    import harness.rollout.hf as hf

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count, self.in_model = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if (
                func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default)
                and not self.in_model
            ):
                self.count += 1
            return func(*args, **(kwargs or {}))

    reads, forwards = HostReads(), []

    def enter(module, args, kwargs):
        reads.in_model += 1
        forwards.append(kwargs["input_ids"].shape[1])

    def leave(module, args, kwargs, output):
        reads.in_model -= 1

    prompts = [
        generator.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Compute {a} + {b}."}], add_generation_prompt=True, tokenize=False
        )
        for a, b in [(3, 4), (12, 9)]
    ]
    hooks = [
        generator.model.register_forward_pre_hook(enter, with_kwargs=True),
        generator.model.register_forward_hook(leave, with_kwargs=True),
    ]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=40, seed=5, return_logprobs=True)
    every_token = generator.generate(prompts, params)
    generator.check_finished_every = hf.CHECK_FINISHED_EVERY
    try:
        with reads:
            every_few = generator.generate(prompts, params)
    finally:
        generator.check_finished_every = 1
        for hook in hooks:
            hook.remove()
    steps = sum(1 for width in forwards if width == 1)  # decode forwards (one token per row)
    assert steps >= 16
    assert reads.count <= 2 * math.ceil(steps / hf.CHECK_FINISHED_EVERY), (reads.count, steps)
    # the same samples, bit for bit
    assert [[(r.token_ids, r.logprobs) for r in g] for g in every_few] == [
        [(r.token_ids, r.logprobs) for r in g] for g in every_token
    ]


def test_a_shared_policy_left_training_with_checkpointing_samples_what_it_samples_in_eval_mode(tiny_assets):
    """Validation samples the training policy itself (hf backend, no copy). Left in training mode with
    gradient checkpointing, transformers drops the KV cache in every layer, so each decoded token saw
    only itself: different samples, no error. The generator samples in eval mode and restores the mode."""
    from harness.models import load_policy

    model, tokenizer = load_policy(tiny_assets.policy_dir)
    generator = HFGenerator(model, tokenizer, copy_model=False)
    prompts = [
        generator.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Compute {a} + {b}."}], add_generation_prompt=True, tokenize=False
        )
        for a, b in [(3, 4), (12, 9)]
    ]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=24, seed=2)
    reference = _texts(generator.generate(prompts, params))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # as harness.train.setup sets it
    model.train()
    assert _texts(generator.generate(prompts, params)) == reference
    assert model.training
