"""The tiny reward model: Bradley-Terry training of a small LlamaForSequenceClassification that
starts from the policy's first layers, on synthetic chat comparisons; held-out statistics.

Its scorer (`score_responses`, `rm_forward`) pads to multiples of 16 and trains under bf16
autocast with gradients, so it is not harness.rewards.RewardModelScorer (inference only, padded to
the longest): reusing that one would change the built weights and the recipe's measurements.
"""

from __future__ import annotations

import random
import time

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from harness.chat import chat_conversation
from harness.errors import ConfigError
from harness.tiny import chat_task
from harness.tiny.train_utils import mean4, padded_width, special_ids, use_bf16, warmup_cosine


def train_reward_model(tokenizer, chat_splits: dict, recipe: dict, policy, log=print):
    """Bradley-Terry training of a small LlamaForSequenceClassification (started from `policy`)
    on synthetic chat comparisons with soft labels sigmoid(utility gap / temperature);
    returns (model, held-out stats)."""
    rm, chat, seed = recipe["reward_model"], recipe["chat"], recipe["seed"]
    torch.manual_seed(seed + 2)
    model = new_reward_model(tokenizer, rm, recipe["policy"], policy)
    rng = random.Random(seed + 3)
    groups = chat_task.make_preference_groups(
        chat_splits["train"], rm["steps"] * rm["prompts_per_batch"], rng, rm["group_size"]
    )
    held_out_records = chat_splits["validation"] + chat_splits.get("test", [])
    held_out_pairs = chat_task.make_preference_pairs(
        held_out_records, rm["heldout_pairs"], rng, chat["length_bias"], chat["preference_temperature"]
    )
    first, second = torch.triu_indices(rm["group_size"], rm["group_size"], 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rm["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    schedule = warmup_cosine(optimizer, rm["warmup_steps"], rm["steps"], 0.1)
    model.train()
    running, started = 0.0, time.perf_counter()
    for step in range(1, rm["steps"] + 1):
        batch = groups[(step - 1) * rm["prompts_per_batch"] : step * rm["prompts_per_batch"]]
        texts = [
            rm_input_text(tokenizer, g["record"]["prompt"], response) for g in batch for response in g["responses"]
        ]
        utilities = torch.tensor(
            [
                [chat_task.utility(g["record"], response, chat["length_bias"]) for response in g["responses"]]
                for g in batch
            ]
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(rm["bf16_autocast"])):
            scores = rm_forward(model, tokenizer, texts).float().view(len(batch), -1)
        # Soft Bradley-Terry: P(i over j) = sigmoid((u_i - u_j) / temperature), all pairs i < j.
        target = torch.sigmoid((utilities[:, first] - utilities[:, second]) / chat["preference_temperature"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores[:, first] - scores[:, second], target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % 50 == 0 or step == rm["steps"]:
            log(
                f"reward model step {step}/{rm['steps']} loss "
                f"{running / (50 if step % 50 == 0 else step % 50):.3f} "
                f"({time.perf_counter() - started:.0f}s)"
            )
            running = 0.0
    model.eval()
    return model, reward_model_stats(model, tokenizer, held_out_pairs, held_out_records, rng)


def reward_model_stats(model, tokenizer, pairs: list[dict], records: list[dict], rng: random.Random) -> dict:
    """Held-out pairwise accuracy (against the utility and against quality alone) and the
    size of the length bias: the mean score change from appending filler or an extra item."""
    a = score_responses(model, tokenizer, [p["prompt"] for p in pairs], [p["a"] for p in pairs])
    b = score_responses(model, tokenizer, [p["prompt"] for p in pairs], [p["b"] for p in pairs])
    decided = [(sa > sb) == (p["p_a"] > 0.5) for p, sa, sb in zip(pairs, a, b) if p["p_a"] != 0.5]
    by_quality = [
        (sa > sb) == (p["quality_a"] > p["quality_b"])
        for p, sa, sb in zip(pairs, a, b)
        if abs(p["quality_a"] - p["quality_b"]) >= 0.5
    ]
    prompts = [r["prompt"] for r in records]
    plain = score_responses(model, tokenizer, prompts, [r["reference"] for r in records])
    padded = score_responses(
        model, tokenizer, prompts, [r["reference"] + rng.choice(chat_task.FILLER_SUFFIXES) for r in records]
    )
    lists = [r for r in records if r["family"] == "list"]
    extra = score_responses(
        model, tokenizer, [r["prompt"] for r in lists], [chat_task.core_variants(r, rng)[1] for r in lists]
    )
    list_plain = [s for s, r in zip(plain, records) if r["family"] == "list"]
    return {
        "heldout_pairs": len(pairs),
        "heldout_pair_accuracy": mean4(decided),
        "correct_vs_wrong_accuracy": mean4(by_quality),
        "filler_suffix_delta": mean4([p - q for p, q in zip(padded, plain)]),
        "extra_item_delta": mean4([e - q for e, q in zip(extra, list_plain)]),
        "reference_score_mean": mean4(plain),
    }


def new_reward_model(tokenizer, rm: dict, policy_arch: dict, policy):
    """LlamaForSequenceClassification (num_labels=1) holding the policy's embeddings and first
    `num_hidden_layers` layers; the score head starts random."""
    if not 1 <= rm["num_hidden_layers"] <= policy_arch["num_hidden_layers"]:
        raise ConfigError(
            f"tiny recipe: reward_model.num_hidden_layers is "
            f"{rm['num_hidden_layers']!r}; expected 1..{policy_arch['num_hidden_layers']} "
            f"(the reward model reuses the policy's first layers)."
        )
    arch = {**policy_arch, "num_hidden_layers": rm["num_hidden_layers"]}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=arch["num_attention_heads"],
        num_labels=1,
        **arch,
        **special_ids(tokenizer),
    )
    model = LlamaForSequenceClassification(config)
    body = {
        key: value
        for key, value in policy.model.state_dict().items()
        if not key.startswith("layers.") or int(key.split(".")[1]) < arch["num_hidden_layers"]
    }
    missing, unexpected = model.model.load_state_dict(body, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def rm_input_text(tokenizer, prompt: str, response: str) -> str:
    """The reward model's input: the full templated conversation (ends with eos)."""
    return chat_conversation(tokenizer, prompt, response)


@torch.no_grad()
def score_responses(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 128) -> list[float]:
    """Reward-model scores (logit at the last non-pad token, right padding)."""
    scores = []
    for start in range(0, len(prompts), batch_size):
        texts = [
            rm_input_text(tokenizer, p, r)
            for p, r in zip(prompts[start : start + batch_size], responses[start : start + batch_size])
        ]
        scores.extend(rm_forward(model, tokenizer, texts).tolist())
    return scores


def rm_forward(model, tokenizer, texts: list[str]) -> torch.Tensor:
    encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = padded_width([len(ids) for ids in encoded])
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded])
    return model(input_ids=input_ids, attention_mask=(input_ids != pad).long()).logits[:, 0]
