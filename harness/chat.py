"""How text becomes model input: the tokenizer's own chat template (the one place this rule lives).

    chat_prompt(tokenizer, "What is 2+3?")          # the user turn + generation prompt (sampling input)
    chat_conversation(tokenizer, prompt, response)  # the whole two-turn conversation (reward-model input)

The trainer, validation, the evaluators, the reward model and the tiny builder all format
through these two functions, so a prompt is never templated two different ways.
"""

from __future__ import annotations


def chat_prompt(tokenizer, user_text: str) -> str:
    """A user message as the model sees it when asked to answer (chat template, generation prompt)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
    )


def chat_conversation(tokenizer, user_text: str, response: str) -> str:
    """The (user, assistant) conversation as text, as the chat template closes it (eos included)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}, {"role": "assistant", "content": response}], tokenize=False
    )
