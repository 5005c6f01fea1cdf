"""harness.train.sequences: length buckets and response-only log-probs against the full-logits computation."""

import itertools

import pytest
import torch

from harness.rollout import Rollout
from harness.train.sequences import length_buckets, pack, policy_logprobs

PAD = 0


def _bucket_cost(lengths, buckets, call_cost):
    return sum(len(rows) * max(lengths[r] for r in rows) + call_cost for rows in buckets)


def _best_cost_by_brute_force(lengths, call_cost):
    """Every split of the sorted lengths into contiguous groups (the optimum is contiguous)."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for row, cut in zip(order[1:], cuts):
            if cut:
                groups.append(current)
                current = []
            current.append(row)
        groups.append(current)
        best = min(best, _bucket_cost(lengths, groups, call_cost))
    return best


@pytest.mark.parametrize(
    "lengths,call_cost",
    [
        ([5, 3, 3, 9, 9, 9, 2, 40, 41], 4),
        ([7, 1, 30, 2, 29, 8], 10),
        ([4, 4, 4], 0),
        ([12], 64),
        ([3, 50, 3, 50, 26], 1000),
    ],
)
def test_length_buckets_cover_every_row_once_at_minimal_cost(lengths, call_cost):
    buckets = length_buckets(lengths, call_cost)
    assert sorted(r for rows in buckets for r in rows) == list(range(len(lengths)))
    assert _bucket_cost(lengths, buckets, call_cost) == _best_cost_by_brute_force(lengths, call_cost)


def test_length_buckets_split_only_when_padding_outweighs_a_call():
    assert len(length_buckets([10, 10, 60, 60], 1000)) == 1
    assert length_buckets([10, 10, 60, 60], 10) == [[0, 1], [2, 3]]
    assert length_buckets([], 10) == []


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config)


def _batch():
    rng = torch.Generator().manual_seed(3)
    rollouts = []
    for i in range(10):
        prompt = torch.randint(1, 40, (int(torch.randint(2, 12, (1,), generator=rng)),), generator=rng).tolist()
        response = torch.randint(1, 40, (int(torch.randint(0, 25, (1,), generator=rng)),), generator=rng).tolist()
        rollouts.append(Rollout(0, i, prompt, response, "", "stop"))
    return pack(rollouts, PAD, torch.device("cpu"))


def _full_logits_reference(model, batch, temperature):
    """The textbook computation: full logits, full log-softmax at every position."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / temperature
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    mask = batch.response_mask
    return logp * mask, entropy * mask


def _grads(model):
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("entropy_grad", [False, True])
def test_response_logprobs_equal_the_full_logits_computation(llama, temperature, entropy_grad):
    batch = _batch()
    mask = batch.response_mask
    logp, entropy = policy_logprobs(llama, batch, temperature, with_entropy=True, entropy_grad=entropy_grad)
    assert entropy.requires_grad == entropy_grad
    ((logp * mask).sum() + ((entropy * mask).sum() if entropy_grad else 0)).backward()
    ours = _grads(llama)
    ref_logp, ref_entropy = _full_logits_reference(llama, batch, temperature)
    ((ref_logp * mask).sum() + ((ref_entropy * mask).sum() if entropy_grad else 0)).backward()
    theirs = _grads(llama)
    assert torch.allclose(logp, ref_logp, atol=2e-6, rtol=0)
    assert torch.allclose(entropy, ref_entropy.detach(), atol=5e-6, rtol=0)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (ours - theirs).abs().max()
    assert (logp[~mask] == 0).all() and (entropy[~mask] == 0).all()


def test_models_without_logits_to_keep_get_the_same_logprobs(llama):
    class NoTrim(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids=None, attention_mask=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    batch = _batch()
    with torch.no_grad():
        trimmed, _ = policy_logprobs(llama, batch, 1.0)
        untrimmed, _ = policy_logprobs(NoTrim(llama), batch, 1.0)
    assert torch.allclose(trimmed, untrimmed, atol=1e-6, rtol=0)


def _shared_prompt_batch():
    """Prompts repeated 1-4 times (a prompt's samples, a DPO pair), responses of 1-20 tokens."""
    rng = torch.Generator().manual_seed(5)
    rollouts = []
    for p in range(4):
        prompt = torch.randint(1, 40, (int(torch.randint(2, 12, (1,), generator=rng)),), generator=rng).tolist()
        for s in range(p + 1):
            length = 1 if (p, s) == (2, 0) else int(torch.randint(1, 21, (1,), generator=rng))
            response = torch.randint(1, 40, (length,), generator=rng).tolist()
            rollouts.append(Rollout(p, s, prompt, response, "", "stop"))
    return pack(rollouts, PAD, torch.device("cpu"))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prompts_run_once_and_give_the_full_sequence_logprobs_and_gradients(llama, temperature):
    batch = _shared_prompt_batch()
    mask = batch.response_mask
    calls = []
    hook = llama.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        logp, entropy = policy_logprobs(llama, batch, temperature, with_entropy=True, entropy_grad=True)
    finally:
        hook.remove()
    prompt_lengths = mask.int().argmax(-1) + 1
    assert tuple(calls[0]) == (4, int(prompt_lengths.max()))  # the 4 distinct prompts, once
    assert sum(shape[0] for shape in calls[1:]) <= len(mask)  # then each row's response tokens alone
    ((logp * mask).sum() + (entropy * mask).sum()).backward()
    ours = _grads(llama)
    ref_logp, ref_entropy = _full_logits_reference(llama, batch, temperature)
    ((ref_logp * mask).sum() + (ref_entropy * mask).sum()).backward()
    theirs = _grads(llama)
    assert torch.allclose(logp, ref_logp, atol=2e-6, rtol=0)
    assert torch.allclose(entropy, ref_entropy, atol=5e-6, rtol=0)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (ours - theirs).abs().max()
    assert (logp[~mask] == 0).all()
    # unbucketed (the FSDP path: one full-sequence forward per batch, the same calls on every rank)
    calls.clear()
    hook = llama.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        with torch.no_grad():
            single, _ = policy_logprobs(llama, batch, temperature, bucketed=False)
    finally:
        hook.remove()
    assert calls == [tuple(batch.input_ids.shape)]
    assert torch.allclose(single, ref_logp.detach(), atol=2e-6, rtol=0)


def test_gradient_checkpointing_with_shared_prompts_gives_the_full_sequence_logprobs_and_gradients(llama):
    """Checkpointed layers drop the KV cache in training mode (transformers forces use_cache off), so the
    shared-prompt forward had no cache to continue from (AttributeError on None.layers, seen on an H200).
    Rows sharing a prompt must still train, with the values and gradients of the plain full-sequence
    computation on the same model without checkpointing."""
    import copy

    plain = copy.deepcopy(llama).train()
    checkpointed = copy.deepcopy(llama).train()
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed.config.use_cache = False  # as harness.train.setup sets it
    batch = _shared_prompt_batch()
    mask = batch.response_mask
    logp, entropy = policy_logprobs(checkpointed, batch, 0.7, with_entropy=True, entropy_grad=True)
    ((logp * mask).sum() + (entropy * mask).sum()).backward()
    ours = _grads(checkpointed)
    ref_logp, ref_entropy = _full_logits_reference(plain, batch, 0.7)
    ((ref_logp * mask).sum() + (ref_entropy * mask).sum()).backward()
    theirs = _grads(plain)
    assert torch.allclose(logp, ref_logp, atol=2e-6, rtol=0)
    assert torch.allclose(entropy, ref_entropy, atol=5e-6, rtol=0)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), (ours - theirs).abs().max()
