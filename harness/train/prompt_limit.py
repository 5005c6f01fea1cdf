"""`data.max_prompt_tokens`: prompts longer than this, counted after the chat template, are dropped
(`data.long_prompts: drop`, the default) or cut to fit (`cut`: the user text loses its end).

    kept, changed = limit_prompts(records, tokenizer, 512, "drop")

Both the training and the validation pools go through it before the run starts; the number of
prompts dropped or cut is logged and recorded on the run (metric `data/long_prompts_dropped` or
`data/long_prompts_cut` at step 0).
"""

from __future__ import annotations

import logging
from typing import Any

from harness.chat import chat_prompt

log = logging.getLogger("harness.data")


def prompt_tokens(tokenizer, user_texts: list[str]) -> list[int]:
    """Tokens of each user text as the generator sees it (chat template, no extra special tokens)."""
    texts = [chat_prompt(tokenizer, text) for text in user_texts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def cut_to_fit(tokenizer, text: str, max_tokens: int) -> str | None:
    """The longest start of `text` whose templated prompt fits, or None when even an empty one does not."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    low, high = 0, len(ids)  # the answer's token count lies in [low, high]
    if prompt_tokens(tokenizer, [""])[0] > max_tokens:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if prompt_tokens(tokenizer, [tokenizer.decode(ids[:middle])])[0] <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return tokenizer.decode(ids[:low])


def limit_prompts(
    records: list[dict[str, Any]], tokenizer, max_tokens: int, mode: str
) -> tuple[list[dict[str, Any]], int]:
    """(records that fit, how many were dropped or cut)."""
    lengths = prompt_tokens(tokenizer, [record["prompt"] for record in records])
    kept, changed = [], 0
    for record, length in zip(records, lengths):
        if length <= max_tokens:
            kept.append(record)
            continue
        changed += 1
        text = cut_to_fit(tokenizer, record["prompt"], max_tokens) if mode == "cut" else None
        if text:
            kept.append({**record, "prompt": text})
    return kept, changed


def limit_pools(
    pools: dict[str, list[dict[str, Any]]], tokenizer, data_cfg, split: str
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Every pool through `limit_prompts` when `data.max_prompt_tokens` is set; logs the count."""
    if not data_cfg.max_prompt_tokens:
        return pools, 0
    total, limited = 0, {}
    for task, records in pools.items():
        limited[task], changed = limit_prompts(records, tokenizer, data_cfg.max_prompt_tokens, data_cfg.long_prompts)
        total += changed
        if changed:
            verb = "dropped" if data_cfg.long_prompts == "drop" else "cut"
            log.warning(
                "%s %s: %d of %d prompts are longer than data.max_prompt_tokens=%d tokens and were %s",
                split,
                task,
                changed,
                len(records),
                data_cfg.max_prompt_tokens,
                verb,
            )
    return limited, total
