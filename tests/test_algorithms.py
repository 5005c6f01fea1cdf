"""Unit tests for harness.algorithms, with expected numbers computed by hand."""

import math

import pytest
import torch

from harness.algorithms import (
    Pair,
    build_preference_pairs,
    build_verifiable_pairs,
    dpo_loss,
    gather_logprobs,
    grpo_advantages,
    grpo_loss,
    masked_mean,
    masked_sum,
    position_ids_from_attention_mask,
    response_mask_from_lengths,
    token_entropy,
)

NAN = float("nan")


# ---------------------------------------------------------------- log-probs and masks


def _logits_123() -> torch.Tensor:
    """[1, 3, 3] logits whose position-0 softmax is (1, 2, 3) / 6 at temperature 1."""
    row = torch.log(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    return torch.stack([row, row.flip(0), torch.zeros(3, dtype=torch.float64)]).unsqueeze(0)


def test_gather_logprobs_matches_hand_log_softmax():
    ids = torch.tensor([[0, 2, 1]])  # targets: token 2 at position 0, token 1 at position 1
    logp = gather_logprobs(_logits_123(), ids)
    # position 0: p(2) = 3/6; position 1 has logits log(3,2,1): p(1) = 2/6.
    assert logp.shape == (1, 2)
    assert logp[0, 0].item() == pytest.approx(math.log(0.5), abs=1e-12)
    assert logp[0, 1].item() == pytest.approx(math.log(2 / 6), abs=1e-12)


def test_gather_logprobs_applies_temperature():
    ids = torch.tensor([[0, 2, 1]])
    logp_t2 = gather_logprobs(_logits_123(), ids, temperature=2.0)
    # logits / 2 = log(sqrt(1, 2, 3)): p(2) = sqrt3 / (1 + sqrt2 + sqrt3) = exp(-0.87290163)
    expected = math.log(math.sqrt(3) / (1 + math.sqrt(2) + math.sqrt(3)))
    assert logp_t2[0, 0].item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-0.8729016327, abs=1e-9)
    assert logp_t2[0, 0].item() != pytest.approx(math.log(0.5), abs=1e-3)


def test_gather_logprobs_bf16_is_upcast_and_differentiable():
    logits = _logits_123().to(torch.bfloat16).requires_grad_(True)
    logp = gather_logprobs(logits, torch.tensor([[0, 2, 1]]))
    assert logp.dtype == torch.float32
    logp.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()


def test_token_entropy_hand_values():
    ent = token_entropy(_logits_123())
    # -(1/6 ln 1/6 + 2/6 ln 2/6 + 3/6 ln 3/6) = 1.0114042647 at both positions (same probs).
    assert ent[0, 0].item() == pytest.approx(1.0114042647, abs=1e-9)
    assert ent[0, 1].item() == pytest.approx(1.0114042647, abs=1e-9)
    uniform = token_entropy(torch.zeros(1, 2, 4), temperature=0.6)
    assert uniform[0, 0].item() == pytest.approx(math.log(4), abs=1e-6)


def test_token_entropy_ignores_impossible_tokens():
    logits = torch.tensor([[[0.0, 0.0, -math.inf], [0.0, 0.0, 0.0]]], requires_grad=True)
    ent = token_entropy(logits)
    assert ent[0, 0].item() == pytest.approx(math.log(2), abs=1e-6)
    ent.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_masked_sum_and_mean_ignore_masked_entries_and_empty_rows():
    values = torch.tensor([[1.0, 2.0, NAN], [5.0, math.inf, 7.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_sum(values, mask).tolist() == [3.0, 0.0]
    assert masked_mean(values, mask).tolist() == [1.5, 0.0]
    masked_sum(values, mask).sum().backward()
    assert values.grad.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    weights = torch.tensor([[0.5, 2.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_sum(values.detach(), weights).tolist() == [4.5, 0.0]


def test_response_mask_marks_target_response_tokens():
    # row 0: prompt cols 0-1, response cols 2-4, pad col 5; row 1: pad 0-2, prompt 3, response 4-5
    mask = response_mask_from_lengths(6, torch.tensor([2, 4]), torch.tensor([5, 6]))
    assert mask.tolist() == [
        [False, True, True, True, False],
        [False, False, False, True, True],
    ]
    with pytest.raises(ValueError):
        response_mask_from_lengths(6, torch.tensor([0]), torch.tensor([3]))


def test_position_ids_start_at_first_real_token():
    attention = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    expected = [[0, 0, 0, 1, 2], [0, 1, 2, 3, 0]]
    assert position_ids_from_attention_mask(attention).tolist() == expected


# ---------------------------------------------------------------- padding conformance

PAD = 0
SEQUENCES = [([3, 4, 5], [6, 7]), ([8], [9, 10, 11, 12, 13])]  # (prompt, response) token ids


def _layout(kind: str):
    """input_ids, attention_mask, prompt_end, response_end for SEQUENCES in a padding layout."""
    max_prompt = max(len(p) for p, _ in SEQUENCES)
    max_response = max(len(r) for _, r in SEQUENCES)
    width = max(len(p) + len(r) for p, r in SEQUENCES)
    rows, masks, starts, ends = [], [], [], []
    for prompt, response in SEQUENCES:
        real = prompt + response
        if kind == "right":
            left, right = 0, width - len(real)
        elif kind == "left":
            left, right = width - len(real), 0
        else:  # "generate": prompts left-padded to a common end, responses right-padded
            left, right = max_prompt - len(prompt), max_response - len(response)
        rows.append([PAD] * left + real + [PAD] * right)
        masks.append([0] * left + [1] * len(real) + [0] * right)
        starts.append(left + len(prompt))
        ends.append(left + len(real))
    return torch.tensor(rows), torch.tensor(masks), torch.tensor(starts), torch.tensor(ends)


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=20,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config).eval()


def _summed_response_logprobs(model, kind: str, temperature: float) -> torch.Tensor:
    ids, attention, prompt_end, response_end = _layout(kind)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=attention,
            position_ids=position_ids_from_attention_mask(attention),
        ).logits
    mask = response_mask_from_lengths(ids.shape[1], prompt_end, response_end)
    return masked_sum(gather_logprobs(logits, ids, temperature), mask)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_padding_layouts_give_identical_response_logprobs(tiny_llama, temperature):
    # Ground truth: each sequence alone, no padding at all.
    alone = []
    for prompt, response in SEQUENCES:
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logits = tiny_llama(input_ids=ids).logits
        tok = gather_logprobs(logits, ids, temperature)[0, len(prompt) - 1 :]
        assert tok.numel() == len(response)
        alone.append(tok.sum())
    alone = torch.stack(alone)
    for kind in ("right", "left", "generate"):
        summed = _summed_response_logprobs(tiny_llama, kind, temperature)
        assert torch.allclose(summed, alone, atol=1e-5), (kind, summed, alone)
    assert not torch.allclose(
        _summed_response_logprobs(tiny_llama, "left", 1.0),
        _summed_response_logprobs(tiny_llama, "left", 0.5),
    )


# ---------------------------------------------------------------- DPO


def _dpo_inputs(requires_grad=False):
    # pair 1: chosen logratio -10 - -11 = 1, rejected -14 - -12 = -2, margin 0.1 * 3 = 0.3
    # pair 2: chosen logratio -20 - -19 = -1, rejected -18 - -19 = 1, margin 0.1 * -2 = -0.2
    pi_c = torch.tensor([-10.0, -20.0], dtype=torch.float64, requires_grad=requires_grad)
    pi_r = torch.tensor([-14.0, -18.0], dtype=torch.float64)
    ref_c = torch.tensor([-11.0, -19.0], dtype=torch.float64)
    ref_r = torch.tensor([-12.0, -19.0], dtype=torch.float64)
    return pi_c, pi_r, ref_c, ref_r


def test_dpo_loss_hand_computed():
    pi_c, pi_r, ref_c, ref_r = _dpo_inputs(requires_grad=True)
    loss, stats = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1)
    # mean(log(1 + e^-0.3), log(1 + e^0.2)) = mean(0.5543552445, 0.7981388694)
    assert loss.item() == pytest.approx(0.6762470569, abs=1e-9)
    assert stats["loss"] == pytest.approx(0.6762470569, abs=1e-9)
    assert stats["reward_margin"] == pytest.approx(0.05, abs=1e-12)
    assert stats["reward_accuracy"] == 0.5
    assert stats["chosen_logratio"] == pytest.approx(0.0, abs=1e-12)
    assert stats["rejected_logratio"] == pytest.approx(-0.5, abs=1e-12)
    assert stats["pairs"] == 2
    # d loss / d pi_c_i = -beta * sigmoid(-margin_i) / N
    loss.backward()
    expected = [-0.1 * (1 / (1 + math.exp(0.3))) / 2, -0.1 * (1 / (1 + math.exp(-0.2))) / 2]
    assert pi_c.grad.tolist() == pytest.approx(expected, abs=1e-12)


def test_dpo_length_normalize_hand_computed():
    pi_c, pi_r, ref_c, ref_r = _dpo_inputs()
    # lens chosen (2, 4), rejected (4, 2):
    # pair 1: chosen (-5) - (-5.5) = 0.5, rejected (-3.5) - (-3) = -0.5, margin 0.1 * 1 = 0.1
    # pair 2: chosen (-5) - (-4.75) = -0.25, rejected (-9) - (-9.5) = 0.5, margin -0.075
    loss, stats = dpo_loss(
        pi_c,
        pi_r,
        ref_c,
        ref_r,
        0.1,
        chosen_len=torch.tensor([2, 4]),
        rejected_len=torch.tensor([4, 2]),
        length_normalize=True,
    )
    # mean(log(1 + e^-0.1), log(1 + e^0.075)) = 0.6878734005
    assert loss.item() == pytest.approx(0.6878734005, abs=1e-9)
    assert stats["reward_margin"] == pytest.approx((0.1 - 0.075) / 2, abs=1e-12)
    with pytest.raises(ValueError):
        dpo_loss(pi_c, pi_r, ref_c, ref_r, 0.1, length_normalize=True)


def test_dpo_nll_term_hand_computed():
    pi_c, pi_r, ref_c, ref_r = _dpo_inputs()
    # chosen per-token NLL: 10 / 2 = 5 and 20 / 5 = 4, mean 4.5; times 0.5 = 2.25
    loss, stats = dpo_loss(
        pi_c,
        pi_r,
        ref_c,
        ref_r,
        0.1,
        chosen_len=torch.tensor([2, 5]),
        rejected_len=torch.tensor([7, 7]),
        nll_coef=0.5,
    )
    assert loss.item() == pytest.approx(0.6762470569 + 2.25, abs=1e-9)
    assert stats["nll"] == pytest.approx(4.5)
    with pytest.raises(ValueError):
        dpo_loss(pi_c, pi_r, ref_c, ref_r, 0.1, nll_coef=0.5)


@pytest.mark.parametrize("requires_grad", [True, False])
def test_dpo_zero_pairs_gives_zero_loss_that_backpropagates(requires_grad):
    empty = torch.zeros(0, requires_grad=requires_grad)
    zeros = torch.zeros(0)
    loss, stats = dpo_loss(empty, zeros, zeros, zeros, 0.1, nll_coef=0.1)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert loss.requires_grad
    loss.backward()
    assert stats["pairs"] == 0 and not any(math.isnan(v) for v in stats.values())
    if requires_grad:
        assert empty.grad is not None and empty.grad.numel() == 0


# ---------------------------------------------------------------- pairs


def test_verifiable_pairs_pick_correct_vs_incorrect_and_skip_uniform_prompts():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    pairs = build_verifiable_pairs(rewards, torch.Generator().manual_seed(0))
    assert [p.prompt_index for p in pairs] == [0, 3]
    for pair in pairs:
        assert rewards[pair.prompt_index, pair.chosen] == 1.0
        assert rewards[pair.prompt_index, pair.rejected] == 0.0
    assert pairs[1].chosen == 1


def test_verifiable_pairs_deterministic_for_seed_and_cover_all_choices():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0, 0.0]])
    first = build_verifiable_pairs(rewards, torch.Generator().manual_seed(7))
    again = build_verifiable_pairs(rewards, torch.Generator().manual_seed(7))
    assert first == again
    rng = torch.Generator().manual_seed(1)
    chosen, rejected = {0: set(), 1: set()}, {0: set(), 1: set()}
    for _ in range(200):
        for pair in build_verifiable_pairs(rewards, rng):
            chosen[pair.prompt_index].add(pair.chosen)
            rejected[pair.prompt_index].add(pair.rejected)
    assert chosen == {0: {0, 2}, 1: {1, 2, 3}}
    assert rejected == {0: {1, 3, 4}, 1: {0, 4}}


def test_preference_pairs_max_vs_min_first_of_ties_and_skips():
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.9, -0.3, -0.3],  # first max (1) vs first min (3)
            [1.0, 1.0, 1.0, 1.0, 1.0],  # all tied: skipped
            [2.0, NAN, 1.0, 0.0, 0.0],  # non-finite: skipped
            [0.5, -1.0, 3.0, 0.0, math.inf],  # non-finite: skipped
            [0.5, -1.0, 3.0, 0.0, 0.2],  # 2 vs 1
        ]
    )
    assert build_preference_pairs(scores) == [Pair(0, 1, 3), Pair(4, 2, 1)]


def test_pair_is_frozen():
    with pytest.raises(AttributeError):
        Pair(0, 1, 2).chosen = 5


# ---------------------------------------------------------------- GRPO advantages


def test_grpo_advantages_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    centered = grpo_advantages(rewards)
    assert centered.tolist() == [[0.5, -0.5, -0.5, 0.5], [0.0] * 4, [-0.25, -0.25, -0.25, 0.75]]
    scaled = grpo_advantages(rewards, scale_by_std=True)
    # unbiased std: row 0 sqrt(4 * 0.25 / 3) = 0.5773503, row 2 sqrt(0.75 / 3) = 0.5
    root3_over_2 = 0.8660254
    expected_row0 = [root3_over_2, -root3_over_2, -root3_over_2, root3_over_2]
    assert scaled[0].tolist() == pytest.approx(expected_row0, abs=1e-5)
    assert scaled[1].tolist() == [0.0] * 4
    assert scaled[2].tolist() == pytest.approx([-0.5, -0.5, -0.5, 1.5], abs=1e-5)


def test_grpo_advantages_degenerate_groups_give_zeros():
    assert grpo_advantages(torch.tensor([[3.0]]), scale_by_std=True).tolist() == [[0.0]]
    flat = grpo_advantages(torch.full((2, 8), 0.7), scale_by_std=True)
    assert not torch.isnan(flat).any() and flat.abs().max().item() < 1e-6


# ---------------------------------------------------------------- GRPO loss


def test_grpo_kl_term_is_k3_summed_per_sequence():
    # r = ref - logp: seq 0 -> (-0.5, 1.0), seq 1 -> (0.0); masked entries hold NaN.
    logp = torch.tensor([[-1.0, -2.0, NAN], [-0.5, NAN, NAN]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, NAN], [-0.5, 7.0, NAN]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, stats = grpo_loss(logp, ref, mask, torch.zeros(2), kl_coef=0.1)
    # k3: e^-0.5 + 0.5 - 1 = 0.1065306597, e^1 - 1 - 1 = 0.7182818285, 0; seq sums mean 0.4124062441
    assert stats["kl"] == pytest.approx(0.4124062441, abs=1e-6)
    assert loss.item() == pytest.approx(0.1 * 0.4124062441, abs=1e-7)
    loss.backward()
    # d k3 / d logp = 1 - e^r, times kl_coef / N; masked entries get exactly 0
    expected = [[0.05 * (1 - math.exp(-0.5)), 0.05 * (1 - math.e), 0.0], [0.0, 0.0, 0.0]]
    assert logp.grad[0].tolist() == pytest.approx(expected[0], abs=1e-7)
    assert logp.grad[1].tolist() == pytest.approx(expected[1], abs=1e-7)


def test_grpo_policy_gradient_is_minus_advantage_times_grad_logp_over_n():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.7, NAN]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    advantages = torch.tensor([2.0, -1.0])
    loss, stats = grpo_loss(logp, logp.detach(), mask, advantages, kl_coef=0.0)
    loss.backward()
    # -A_i * mask / N with N = 2
    assert logp.grad.tolist() == [[-1.0, -1.0, 0.0], [0.5, 0.5, 0.0]]
    # value: -mean(A_i * tokens_i) = -(2 * 2 - 1 * 2) / 2 = -1
    assert loss.item() == pytest.approx(-1.0)
    assert stats["advantage_abs_mean"] == pytest.approx(1.5)
    assert stats["kl"] == 0.0


def test_grpo_per_sequence_sum_not_mean():
    def run(mask_row):
        logp = torch.full((1, 4), -1.0, requires_grad=True)
        ref = torch.full((1, 4), -2.0)  # r = -1 per token: k3 = e^-1 + 1 - 1 = 0.3678794
        loss, _ = grpo_loss(logp, ref, torch.tensor([mask_row]), torch.tensor([1.0]), kl_coef=1.0)
        loss.backward()
        return loss.item(), logp.grad[0, 0].item()

    short_loss, short_grad = run([True, True, False, False])
    long_loss, long_grad = run([True, True, True, True])
    # per token: policy -1 + k3 0.3678794; two tokens vs four tokens
    assert short_loss == pytest.approx(2 * (-1 + 0.3678794), abs=1e-6)
    assert long_loss == pytest.approx(2 * short_loss, abs=1e-6)
    assert long_grad == pytest.approx(short_grad)  # per-token gradient not divided by length


def test_grpo_importance_ratio_truncated_at_cap():
    logp = torch.tensor([[-1.0, -2.0, 0.0]], requires_grad=True)
    behaviour = torch.tensor([[-2.0, -1.0, 50.0]])  # ratios e^1 = 2.718, e^-1 = 0.368; masked 3rd
    mask = torch.tensor([[True, True, False]])
    loss, stats = grpo_loss(
        logp,
        None,
        mask,
        torch.tensor([1.0]),
        kl_coef=0.0,
        behaviour_logp_tok=behaviour,
        is_cap=2.0,
    )
    loss.backward()
    assert logp.grad.tolist()[0] == pytest.approx([-2.0, -math.exp(-1), 0.0], abs=1e-6)
    assert loss.item() == pytest.approx(-(2.0 + math.exp(-1)), abs=1e-6)
    assert stats["is_ratio_mean"] == pytest.approx(1.5430806, abs=1e-6)
    assert stats["is_truncated_frac"] == 0.5
    assert "kl" not in stats

    uncapped = logp.detach().clone().requires_grad_(True)
    loss, _ = grpo_loss(uncapped, None, mask, torch.tensor([1.0]), kl_coef=0.0, behaviour_logp_tok=behaviour)
    loss.backward()
    assert uncapped.grad.tolist()[0] == pytest.approx([-math.e, -math.exp(-1), 0.0], abs=1e-6)


def test_grpo_on_policy_behaviour_equals_no_importance_sampling():
    logp = torch.tensor([[-1.0, -2.0], [-0.3, -0.4]], requires_grad=True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    advantages = torch.tensor([0.5, -0.5])
    plain, _ = grpo_loss(logp, None, mask, advantages, kl_coef=0.0)
    (plain_grad,) = torch.autograd.grad(plain, logp)
    weighted, stats = grpo_loss(logp, None, mask, advantages, kl_coef=0.0, behaviour_logp_tok=logp.detach())
    (weighted_grad,) = torch.autograd.grad(weighted, logp)
    assert torch.equal(plain_grad, weighted_grad) and stats["is_ratio_mean"] == 1.0


def test_grpo_masked_tokens_never_contribute():
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -9.0]])
    ent = torch.tensor([[0.4, 0.6, 5.0]])
    mask = torch.tensor([[True, True, False]])
    kwargs = dict(kl_coef=0.1, entropy_coef=0.01)
    base, _ = grpo_loss(logp, ref, mask, torch.tensor([0.7]), entropy_tok=ent, **kwargs)
    garbage = torch.tensor([[-1.0, -2.0, NAN]], requires_grad=True)
    loss, stats = grpo_loss(
        garbage,
        torch.tensor([[-1.5, -1.0, math.inf]]),
        mask,
        torch.tensor([0.7]),
        entropy_tok=torch.tensor([[0.4, 0.6, NAN]]),
        behaviour_logp_tok=torch.tensor([[-1.0, -2.0, -1e9]]),
        **kwargs,
    )
    assert loss.item() == pytest.approx(base.item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(garbage.grad).all() and garbage.grad[0, 2].item() == 0.0
    assert stats["entropy"] == pytest.approx(1.0)


def test_grpo_entropy_bonus_hand_computed():
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    ent = torch.tensor([[0.5, 1.5]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, _ = grpo_loss(logp, None, mask, torch.tensor([0.0]), kl_coef=0.0, entropy_tok=ent, entropy_coef=0.1)
    assert loss.item() == pytest.approx(-0.1 * 2.0)


def test_grpo_zero_sequences_gives_zero_loss():
    empty = torch.zeros(0, 5, requires_grad=True)
    zeros = torch.zeros(0, 5)
    loss, stats = grpo_loss(empty, zeros, zeros, torch.zeros(0), kl_coef=0.001)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert stats["kl"] == 0.0 and not any(math.isnan(v) for v in stats.values())
