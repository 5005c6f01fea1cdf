"""The tiny policy's supervised warm start: a fresh Llama trained on math solutions mixed with
chat responses (assistant tokens only), packed into rows with restarting position ids."""

from __future__ import annotations

import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.chat import chat_conversation, chat_prompt
from harness.tiny import chat_task
from harness.tiny.train_utils import index_stream, padded_width, special_ids, use_bf16, warmup_cosine


def train_policy(tokenizer, math_records: list[dict], chat_records: list[dict], recipe: dict, log=print):
    """SFT a fresh Llama on math solutions mixed with chat responses (assistant tokens only)."""
    sft, seed = recipe["sft"], recipe["seed"]
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=recipe["policy"]["num_attention_heads"],
        tie_word_embeddings=True,
        **recipe["policy"],
        **special_ids(tokenizer),
    )
    model = LlamaForCausalLM(config)
    rng = random.Random(seed)
    style_rng = random.Random(seed + 7)
    math_examples = [
        encode_conversation(tokenizer, r["problem"], sft_math_target(r, sft, style_rng)) for r in math_records
    ]
    chat_examples = [encode_conversation(tokenizer, r["prompt"], chat_task.sft_response(r, rng)) for r in chat_records]
    math_batches = index_stream(len(math_examples), sft["math_per_batch"], seed)
    chat_batches = index_stream(len(chat_examples), sft["chat_per_batch"], seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    schedule = warmup_cosine(optimizer, sft["warmup_steps"], sft["steps"], sft["min_lr_ratio"])
    model.train()
    running, started = 0.0, time.perf_counter()
    for step in range(1, sft["steps"] + 1):
        examples = [math_examples[i] for i in next(math_batches)] + [chat_examples[i] for i in next(chat_batches)]
        if sft["pack_length"]:
            inputs = pack_examples(examples, tokenizer.pad_token_id, sft["pack_length"])
        else:
            inputs = collate(examples, tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(sft["bf16_autocast"])):
            loss = model(**inputs, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), sft["grad_clip"])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % 50 == 0 or step == sft["steps"]:
            window = 50 if step % 50 == 0 else step % 50
            log(f"SFT step {step}/{sft['steps']} loss {running / window:.3f} ({time.perf_counter() - started:.0f}s)")
            running = 0.0
    model.eval()
    return model


def sft_math_target(record: dict, sft: dict, rng: random.Random) -> str:
    """The worked solution, or (with probability `direct_answer_fraction`) only its boxed answer."""
    if rng.random() < sft["direct_answer_fraction"]:
        return f"$\\boxed{{{record['answer']}}}$"
    return record["solution"]


def encode_conversation(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of the templated (prompt, response) conversation and SFT labels that are -100
    everywhere but the response and its closing eos token."""
    prompt_ids = tokenizer.encode(chat_prompt(tokenizer, prompt), add_special_tokens=False)
    full_ids = tokenizer.encode(chat_conversation(tokenizer, prompt, response), add_special_tokens=False)
    assert full_ids[: len(prompt_ids)] == prompt_ids, "chat template prefix is not stable"
    return full_ids, [-100] * len(prompt_ids) + full_ids[len(prompt_ids) :]


def collate(examples, pad_id: int):
    width = padded_width([len(ids) for ids, _ in examples])
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in examples])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in examples])
    lengths = torch.tensor([len(ids) for ids, _ in examples])
    attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pack_examples(examples, pad_id: int, row_length: int) -> dict:
    """Pack examples into rows of `row_length` tokens (first fit, longest first) with
    position ids restarting at 0 for each example: with no attention mask, transformers reads
    the restarts as packed sequences and attends block-diagonally. Saves the ~20% of tokens
    that padding mixed math/chat lengths would waste. Labels never cross an example boundary
    (each example starts with prompt tokens, labelled -100)."""
    rows: list[list] = []
    for ids, labels in sorted(examples, key=lambda example: -len(example[0])):
        row = next((row for row in rows if row[0] + len(ids) <= row_length), None)
        if row is None:
            row = [0, [], [], []]
            rows.append(row)
        row[0] += len(ids)
        row[1].extend(ids)
        row[2].extend(labels)
        row[3].extend(range(len(ids)))
    for row in rows:  # the tail of a row is one more (padding) sequence, never labelled
        tail = row_length - row[0]
        row[1].extend([pad_id] * tail)
        row[2].extend([-100] * tail)
        row[3].extend(range(tail))
    return {
        "input_ids": torch.tensor([row[1] for row in rows]),
        "labels": torch.tensor([row[2] for row in rows]),
        "position_ids": torch.tensor([row[3] for row in rows]),
    }
