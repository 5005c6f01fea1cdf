"""Hugging Face transformers generator backend: batched, KV-cached, left-padded sampling.

It holds its own copy of the policy, separate from the trainer's, so that between two syncs the
generator really is a stale snapshot (that staleness is what `sync_every` controls).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from harness.errors import AssetMissingError
from harness.rollout.base import Rollout, SamplingParams

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_policy(path: str | Path, dtype: str = "float32", device: str = "cpu",
                trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer exactly as a real checkpoint is loaded."""
    local = Path(path)
    looks_local = local.is_absolute() or str(path).startswith((".", "~")) or local.exists()
    if looks_local and not (local / "config.json").is_file():
        raise AssetMissingError(
            f"model path {path}: no config.json there. Expected a folder written by "
            f"save_pretrained (config.json, model.safetensors, tokenizer files); for the paper "
            f"setting download meta-llama/Llama-3.1-8B-Instruct there first (this machine cannot)."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_DTYPES[dtype], trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise AssetMissingError(
            f"model {path}: could not be loaded with from_pretrained ({exc}). Point model.policy "
            f"at a local folder with the weights; nothing is downloaded at run time."
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(resolve_device(device))
    return model, tokenizer


class HFGenerator:
    """Generator backed by `model.generate`. Prompts are chat-formatted strings."""

    def __init__(self, model: PreTrainedModel | str | Path, tokenizer: PreTrainedTokenizerBase | None = None,
                 device: str = "cpu", batch_size: int = 256, copy_model: bool = True, dtype: str = "float32"):
        if isinstance(model, (str, Path)):
            model, loaded_tokenizer = load_policy(model, dtype=dtype, device=device)
            tokenizer = tokenizer or loaded_tokenizer
        elif copy_model:
            model = copy.deepcopy(model)
        if tokenizer is None:
            raise ValueError("HFGenerator needs a tokenizer when given a model object")
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.batch_size = batch_size
        self.version = 0
        if copy_model:  # a private snapshot never trains; a shared model (validation) keeps its grads
            for param in self.model.parameters():
                param.requires_grad_(False)

    @torch.no_grad()
    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict, strict=True)
        self.version += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Rollout]]:
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        jobs = [(p, s) for p in range(len(prompts)) for s in range(params.n)]
        # Longest prompts first keeps padding low inside each batch.
        jobs.sort(key=lambda job: -len(encoded[job[0]]))
        if params.seed is not None:
            torch.manual_seed(params.seed)
        groups: list[list[Rollout | None]] = [[None] * params.n for _ in prompts]
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start:start + self.batch_size]
            rollouts = self._generate_batch([encoded[p] for p, _ in batch], params)
            for (p, s), rollout in zip(batch, rollouts):
                rollout.prompt_index, rollout.sample_index = p, s
                groups[p][s] = rollout
        return groups  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Rollout]:
        pad_id = self.tokenizer.pad_token_id
        eos_id = self.tokenizer.eos_token_id
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):  # left padding: generation continues at the right edge
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        self.model.eval()
        sample = params.temperature > 0
        kwargs = dict(do_sample=sample, max_new_tokens=params.max_new_tokens, eos_token_id=eos_id,
                      pad_token_id=pad_id, return_dict_in_generate=True,
                      output_logits=params.return_logprobs, top_k=0 if sample else None)
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_p=None)
        out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                  **kwargs)
        new_tokens = out.sequences[:, width:].cpu()
        token_logprobs = None
        if params.return_logprobs:
            temperature = params.temperature if sample else 1.0
            logits = torch.stack(out.logits, dim=1).float().cpu() / temperature
            token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        return [self._to_rollout(prompt_ids[row], new_tokens[row], token_logprobs, row, eos_id)
                for row in range(len(prompt_ids))]

    def _to_rollout(self, prompt_ids: list[int], tokens: torch.Tensor, token_logprobs: torch.Tensor | None,
                    row: int, eos_id: int) -> Rollout:
        ids = tokens.tolist()
        finish = "length"
        if eos_id in ids:
            ids = ids[:ids.index(eos_id) + 1]
            finish = "stop"
        logprobs = token_logprobs[row, :len(ids)].tolist() if token_logprobs is not None else None
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Rollout(prompt_index=-1, sample_index=-1, prompt_ids=list(prompt_ids), token_ids=ids, text=text,
                       finish_reason=finish, logprobs=logprobs)


def make_generator(backend: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   batch_size: int = 256):
    """The trainer's one way to get a generator; further backends (vLLM) register here."""
    if backend == "hf":
        return HFGenerator(model, tokenizer, batch_size=batch_size, copy_model=True)
    from harness.errors import ConfigError
    raise ConfigError(f"rollout.backend = {backend!r} is not a known backend; expected one of: hf.")
