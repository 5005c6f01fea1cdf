"""Scalar reward model scoring (the paper's Athene-RM-8B role) for non-verifiable prompts.

`RewardModelScorer` loads any `AutoModelForSequenceClassification` checkpoint from disk and
scores (prompt, response) pairs as a two-turn chat formatted with the reward model's own chat
template. The score is the logit of label 0, read by transformers at the last non-pad token;
padding is on the right and `pad_token_id` is set on the model config so that the batch score
equals the one-by-one score.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from harness.chat import chat_conversation
from harness.errors import AssetMissingError, ConfigError
from harness.precision import resolve_dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_model_dir(model_dir: Path) -> None:
    if not (model_dir.is_dir() and (model_dir / "config.json").is_file()):
        raise AssetMissingError(
            f"Reward model directory {str(model_dir)!r} does not exist or has no config.json; "
            f"expected a sequence-classification checkpoint saved with `save_pretrained` "
            f"(config.json, model weights in safetensors, tokenizer files). Get weights with "
            f"`huggingface-cli download <repo> --local-dir {model_dir}` on a machine with network "
            f"access (the paper used Nexusflow/Athene-RM-8B), or use the embedded tiny reward "
            f"model from `harness.tiny.ensure_tiny_assets().reward_model_dir`."
        )


class RewardModelScorer:
    """Scores (prompt, response) pairs with a sequence-classification reward model."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int = 1024,
        trust_remote_code: bool = False,
        dtype: str = "auto",
    ):
        if model_dir is None or str(model_dir) == "":
            raise AssetMissingError(
                "No reward model directory was given (model_dir is empty); expected the path of "
                "a sequence-classification checkpoint, e.g. the tiny one from "
                "`harness.tiny.ensure_tiny_assets().reward_model_dir` or a downloaded Athene-RM-8B."
            )
        self.model_dir = Path(model_dir)
        _check_model_dir(self.model_dir)
        if batch_size < 1 or max_length < 2:
            raise ConfigError(
                f"RewardModelScorer: batch_size={batch_size!r}, max_length={max_length!r}; "
                f"expected batch_size >= 1 and max_length >= 2."
            )
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.truncated = 0  # cumulative count of pairs longer than max_length (cut on the left)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=trust_remote_code)
        # Right padding keeps positions 0..L-1 identical to the unpadded sequence.
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise AssetMissingError(
                    f"Reward model tokenizer in {str(self.model_dir)!r} has neither a pad nor an "
                    f"eos token; expected at least one (batched scoring needs a pad token)."
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if dtype != "auto" and dtype not in DTYPES:
            raise ConfigError(f"RewardModelScorer: dtype={dtype!r}; expected auto or one of {sorted(DTYPES)}.")
        # An explicit dtype: transformers 4.x loads fp32 by default and 5.x the checkpoint's own.
        # auto: bfloat16 on CUDA (an 8B reward model in 16 GB, not 32), float32 on the CPU.
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir, trust_remote_code=trust_remote_code, dtype=DTYPES[self.dtype]
        )
        # The classifier picks the last token != pad_token_id: it must match the tokenizer.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()

    def format_pair(self, prompt: str, response: str) -> str:
        """The text the reward model reads for one (prompt, response)."""
        if getattr(self.tokenizer, "chat_template", None):
            return chat_conversation(self.tokenizer, prompt, response)
        return prompt + "\n" + response

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One float per (prompt, response): the reward model's label-0 logit."""
        if len(prompts) != len(responses):
            raise ValueError(f"RewardModelScorer.score: {len(prompts)} prompts but {len(responses)} responses.")
        texts = [self.format_pair(p, r) for p, r in zip(prompts, responses)]
        # The chat template already holds BOS and friends; plain text needs them added.
        add_special = not getattr(self.tokenizer, "chat_template", None)
        encoded = self.tokenizer(texts, add_special_tokens=add_special)["input_ids"]
        self.truncated += sum(len(ids) > self.max_length for ids in encoded)
        # Cut long pairs on the left: the score is read at the last token, which must stay
        # the response's true end.
        encoded = [ids[-self.max_length :] for ids in encoded]
        # Batch similar lengths together: less padding, same scores.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = [0.0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            for index, value in zip(indices, self._score_ids([encoded[i] for i in indices])):
                scores[index] = value
        return scores

    def _score_ids(self, ids: list[list[int]]) -> list[float]:
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        logits = self.model(
            input_ids=batch["input_ids"].to(self.device),
            attention_mask=batch["attention_mask"].to(self.device),
        ).logits
        return logits[:, 0].float().cpu().tolist()
