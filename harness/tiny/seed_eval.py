"""The seed policy's measurements recorded in DONE.json: sampled math accuracy, chat quality,
reward-model score and length.

`sample_responses` samples with transformers' `generate` under one global seed; the project's
generator (harness.rollout.HFGenerator) draws per-sample streams instead, so using it here would
change every recorded measurement of the recipe.
"""

from __future__ import annotations

import torch

from harness.chat import chat_prompt
from harness.tiny import chat_task, math_task
from harness.tiny.reward_training import score_responses
from harness.tiny.train_utils import mean4


def evaluate_seed(
    policy, reward_model, tokenizer, math_records: list[dict], chat_records: list[dict], recipe: dict, log=print
) -> dict:
    """Sampled seed accuracy on math validation, and seed chat quality / RM score / length."""
    evaluation, seed = recipe["seed_eval"], recipe["seed"]
    math_stats = sample_math_accuracy(
        policy,
        tokenizer,
        math_records[: evaluation["problems"]],
        evaluation["temperature"],
        seed=seed,
        max_new_tokens=evaluation["max_new_tokens"],
    )
    log(f"seed math accuracy at T={evaluation['temperature']}: {math_stats['accuracy']:.3f}")
    prompts = [r["prompt"] for r in chat_records]
    texts, lengths = sample_responses(
        policy, tokenizer, prompts, evaluation["temperature"], seed=seed, max_new_tokens=evaluation["max_new_tokens"]
    )
    rm_scores = score_responses(reward_model, tokenizer, prompts, texts)
    chat_stats = {
        "prompts": len(prompts),
        "temperature": evaluation["temperature"],
        "mean_quality": mean4([chat_task.quality(r, t) for r, t in zip(chat_records, texts)]),
        "mean_rm_score": mean4(rm_scores),
        "mean_response_tokens": mean4(lengths),
    }
    return {"math": math_stats, "chat": chat_stats}


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: list[str],
    temperature: float,
    *,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    seed: int = 0,
    batch_size: int = 128,
) -> tuple[list[str], list[int]]:
    """Generate one response per user prompt (temperature 0 = greedy). Returns the texts
    (special tokens stripped) and the response lengths in tokens, eos included."""
    torch.manual_seed(seed)
    texts, lengths = [], []
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        if temperature > 0
        else {"do_sample": False}
    )
    for start in range(0, len(prompts), batch_size):
        encoded = [
            tokenizer.encode(chat_prompt(tokenizer, p), add_special_tokens=False)
            for p in prompts[start : start + batch_size]
        ]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        attention_mask = (input_ids != pad).long()
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
            **sampling,
        )
        for row in output[:, width:].tolist():
            response = row[: row.index(eos) + 1] if eos in row else row
            lengths.append(len(response))
            texts.append(tokenizer.decode(response, skip_special_tokens=True))
    return texts, lengths


def sample_math_accuracy(
    model,
    tokenizer,
    records: list[dict],
    temperature: float,
    *,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    seed: int = 0,
) -> dict:
    """One sample per problem: accuracy, share with a boxed answer, mean length in tokens."""
    prompts = [math_task.TINY_MATH_PROMPT_TEMPLATE.format(problem=r["problem"]) for r in records]
    texts, lengths = sample_responses(
        model, tokenizer, prompts, temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed
    )
    return {
        "problems": len(records),
        "temperature": temperature,
        "top_p": top_p,
        "accuracy": mean4([math_task.is_correct(t, r["answer"]) for t, r in zip(texts, records)]),
        "well_formed": mean4([math_task.extract_boxed(t) is not None for t in texts]),
        "mean_response_tokens": mean4(lengths),
    }
