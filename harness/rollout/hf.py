"""Hugging Face transformers generator backend: batched, KV-cached, left-padded sampling.

It holds its own copy of the policy, separate from the trainer's, so that between two syncs the
generator really is a stale snapshot (that staleness is what `sync_every` controls).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Mapping, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.kv_cache import CACHE_KWARG, cache_of, group_repeats, preallocated_cache
from harness.models import load_policy
from harness.rollout.base import Rollout, SamplingParams, stream_seed
from harness.rollout.snapshots import read_snapshot

log = logging.getLogger(__name__)


class HFGenerator:
    """Generator over a causal LM's own forward pass with a KV cache. Prompts are chat-formatted strings.

    A hand-written sampling loop, not `model.generate`, for two measured reasons:
    - speed: one prefill per distinct prompt for its n samples, a KV cache written in place, and
      finished rows leaving the batch. On the tiny policy (16 prompts x 8 samples, 64 new tokens,
      1 thread) it took 0.94 s a batch against 1.58 s for `model.generate` in transformers 5.19
      (`python benchmarks/trl_compare.py --sides sampler generate`, 2026-12-02);
    - per-sample random streams (`stream_seed`): a sample's tokens do not depend on the batch size,
      the chunking or the other prompts, which `generate` (one global stream) cannot give.
    """

    def __init__(
        self,
        model: PreTrainedModel | str | Path,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str = "cpu",
        batch_size: int = 256,
        copy_model: bool = True,
        dtype: str = "float32",
    ):
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
        # on a CPU a host read waits for nothing, and checking every token compacts soonest
        self.check_finished_every = 1 if self.device.type == "cpu" else CHECK_FINISHED_EVERY
        if copy_model:  # a private snapshot never trains; a shared model (validation) keeps its grads
            for param in self.model.parameters():
                param.requires_grad_(False)

    @torch.no_grad()
    def place(self, device: torch.device, dtype: torch.dtype) -> None:
        self.model.to(device=device, dtype=dtype)
        self.device = torch.device(device)

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict, strict=True)
        self.version += 1

    def load_weights_from(self, folder: str | Path) -> None:
        """A snapshot folder's weights (`model.safetensors`), read as tensors; bumps `version`."""
        self.load_weights(read_snapshot(folder)[1])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def generate(
        self, prompts: list[str], params: SamplingParams, keys: Sequence[str | int] | None = None
    ) -> list[list[Rollout]]:
        """params.n samples per prompt. With `params.seed` set, sample j of prompt i draws from its own
        stream `stream_seed(params.seed, keys[i], j)` (keys default to the prompt indexes), so it does
        not depend on the batch size, the chunking or the other prompts; without a seed the global
        torch RNG is used (training rollouts)."""
        if keys is not None and len(keys) != len(prompts):
            raise ValueError(f"generate: {len(keys)} keys for {len(prompts)} prompts")
        keys = list(range(len(prompts))) if keys is None else list(keys)
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        jobs = [(p, s) for p in range(len(prompts)) for s in range(params.n)]
        # Longest prompts first keeps padding low inside each batch.
        jobs.sort(key=lambda job: -len(encoded[job[0]]))
        groups: list[list[Rollout | None]] = [[None] * params.n for _ in prompts]
        # Sampling runs in eval mode: a shared policy left in training mode with gradient checkpointing
        # would drop the KV cache in every layer (transformers forces it off) and sample garbage, silently.
        training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start : start + self.batch_size]
                seeds = None if params.seed is None else [stream_seed(params.seed, keys[p], s) for p, s in batch]
                rollouts = self._generate_batch([encoded[p] for p, _ in batch], params, seeds)
                for (p, s), rollout in zip(batch, rollouts):
                    rollout.prompt_index, rollout.sample_index = p, s
                    groups[p][s] = rollout
        finally:
            self.model.train(training)
        return groups  # type: ignore[return-value]

    def _generate_batch(
        self, prompt_ids: list[list[int]], params: SamplingParams, seeds: list[int] | None
    ) -> list[Rollout]:
        """One batch of samples; an exception inside it is logged with the sampler's shapes, then re-raised."""
        try:
            return self._sample_batch(prompt_ids, params, seeds)
        except Exception as exc:
            report = sampler_crash_report(self.model, prompt_ids, exc, self.check_finished_every)
            log.error("%s", report, exc_info=exc)
            raise

    @torch.no_grad()
    def _sample_batch(
        self, prompt_ids: list[list[int]], params: SamplingParams, seeds: list[int] | None
    ) -> list[Rollout]:
        """Prefill the left-padded prompts once, then decode token by token from the KV cache.

        A hand-written loop over the model's forward, not `model.generate` (see the class docstring).
        With `seeds` (one per row), each row's uniforms for every decoding position are drawn up
        front from its own `torch.Generator`, one call per row, so the per-token work stays batched.
        """
        pad_id, eos_id = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        width = max(len(ids) for ids in prompt_ids)
        batch = len(prompt_ids)
        input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):  # left padding: every prompt ends at the right edge
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        uniforms = None
        if seeds is not None:
            uniforms = row_uniforms(seeds, params.max_new_tokens).to(self.device)
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        # The attention mask and the KV cache are allocated once at their final width and filled in
        # place: growing them by concatenation copies the whole cache every token (quadratic).
        mask = torch.zeros((batch, width + params.max_new_tokens), dtype=attention.dtype, device=self.device)
        mask[:, :width] = attention
        cache = preallocated_cache(self.model, width + params.max_new_tokens)
        compactable = cache is not None
        if cache is None:
            out = self.model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            cache, logits = cache_of(out), out.logits[:, -1]
        else:
            # Each distinct prompt is prefilled once; its n samples start from copies of its cache.
            first, source = group_repeats([tuple(ids) for ids in prompt_ids])
            first, source = torch.tensor(first, device=self.device), torch.tensor(source, device=self.device)
            out = self.model(
                input_ids=input_ids[first],
                attention_mask=attention[first],
                position_ids=positions[first],
                use_cache=True,
                logits_to_keep=1,
                **{CACHE_KWARG: cache},
            )
            logits = out.logits[:, -1][source]
            for layer in cache.layers:
                layer.select_rows(source)
        next_position = positions[:, -1] + 1
        new_tokens = torch.full((batch, params.max_new_tokens), pad_id, dtype=torch.long, device=self.device)
        token_logprobs = torch.zeros((batch, params.max_new_tokens), device=self.device)
        rows = torch.arange(batch, device=self.device)  # the rows still in the decoding batch
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for position in range(params.max_new_tokens):
            uniform = None if uniforms is None else uniforms[:, position]
            token, logprob = sample_next(logits.float(), params.temperature, params.top_p, uniform=uniform)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            new_tokens[rows, position] = token
            token_logprobs[rows, position] = logprob
            finished |= token == eos_id
            if (position + 1) % self.check_finished_every == 0:  # a host sync (on a GPU): not every token
                done = int(finished.sum())
                if done == len(rows):
                    break
                if compactable and done >= max(COMPACT_MIN_ROWS, COMPACT_FRACTION * len(rows)):
                    # Finished rows leave the batch (their cache rows too), so the remaining positions
                    # compute only the rows still decoding, as a continuous-batching engine does.
                    keep = (~finished).nonzero().squeeze(1)
                    for layer in cache.layers:
                        layer.select_rows(keep)
                    rows, token, next_position = rows[keep], token[keep], next_position[keep]
                    mask, finished = mask[keep], finished[keep]
                    uniforms = None if uniforms is None else uniforms[keep]
            if position + 1 == params.max_new_tokens:  # no forward for a token that will not be drawn
                break
            mask[:, width + position] = ~finished
            out = self.model(
                input_ids=token.unsqueeze(1),
                attention_mask=mask[:, : width + position + 1],
                position_ids=next_position.unsqueeze(1),
                use_cache=True,
                **{CACHE_KWARG: cache},
            )
            cache, logits = cache_of(out), out.logits[:, -1]
            next_position = next_position + 1
        new_tokens = new_tokens.cpu()
        token_logprobs = token_logprobs.cpu() if params.return_logprobs else None
        return [self._to_rollout(prompt_ids[row], new_tokens[row], token_logprobs, row, eos_id) for row in range(batch)]

    def _to_rollout(
        self, prompt_ids: list[int], tokens: torch.Tensor, token_logprobs: torch.Tensor | None, row: int, eos_id: int
    ) -> Rollout:
        ids = tokens.tolist()
        finish = "length"
        if eos_id in ids:
            ids = ids[: ids.index(eos_id) + 1]
            finish = "stop"
        logprobs = token_logprobs[row, : len(ids)].tolist() if token_logprobs is not None else None
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Rollout(
            prompt_index=-1,
            sample_index=-1,
            prompt_ids=list(prompt_ids),
            token_ids=ids,
            text=text,
            finish_reason=finish,
            logprobs=logprobs,
        )


def sampler_crash_report(model, prompt_ids: list[list[int]], exc: BaseException, check_finished_every: int) -> str:
    """What the sampler's shapes were when `exc` left `_sample_batch`, read from that call's local
    variables: the phase (prefill or decode step), batch, prompt lengths, width, distinct prompts,
    masks, positions, each cache layer's buffers and length, the model's attention config. For
    crashes that only one machine shows (issue 21: "size of tensor a (16) must match ... (15)" in an
    H200's prefill). The first line alone says where and what."""
    at = {}
    trace = exc.__traceback__
    while trace is not None:  # the innermost _sample_batch call on the way to the raise
        if trace.tb_frame.f_code is HFGenerator._sample_batch.__wrapped__.__code__:
            at = dict(trace.tb_frame.f_locals)
        trace = trace.tb_next
    lengths = [len(ids) for ids in prompt_ids]
    first, phase = at.get("first"), f"decode step {at['position']}" if "position" in at else "prefill"
    lines = [
        f"sampler crashed in the {phase}: "
        f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}; batch {len(prompt_ids)}, prompt lengths "
        f"{min(lengths)}..{max(lengths)}, width {at.get('width')}, "
        f"distinct prompts {None if first is None else len(first)}",
        f"prompt lengths: {lengths}",
    ]
    try:  # reading a tensor after a device-side error can raise again: keep what was written
        config = model.config.get_text_config(decoder=True)
        lines += [
            f"attention {_shape(at.get('attention'))}, decode mask {_shape(at.get('mask'))}, position_ids "
            f"{_shape(at.get('positions'))} {_range(at.get('positions'))}, next positions "
            f"{_range(at.get('next_position'))}, rows decoding {_shape(at.get('rows'))}",
            f"check_finished_every {check_finished_every}, {type(model).__name__}, attn_implementation "
            f"{getattr(config, '_attn_implementation', None)}, heads {config.num_attention_heads}, kv heads "
            f"{getattr(config, 'num_key_value_heads', None)}, head_dim {getattr(config, 'head_dim', None)}, "
            f"hidden {config.hidden_size}, layers {config.num_hidden_layers}",
        ]
        for index, layer in enumerate(getattr(at.get("cache"), "layers", None) or []):
            buffers = ", ".join(
                f"{name} {_shape(getattr(layer, name, None))}"
                for name in ("key_buffer", "value_buffer", "keys", "values")
            )
            lines.append(
                f"cache layer {index}: {type(layer).__name__} length {getattr(layer, 'length', None)} "
                f"capacity {getattr(layer, 'capacity', None)}, {buffers}"
            )
    except Exception as failure:  # noqa: BLE001 - the report must not hide the crash it reports
        lines.append(f"(report cut short: {type(failure).__name__}: {failure})")
    return "\n".join(lines)


def _shape(tensor) -> str:
    return str(tuple(tensor.shape)) if isinstance(tensor, torch.Tensor) else "none"


def _range(tensor) -> str:
    if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0:
        return "none"
    return f"{int(tensor.min())}..{int(tensor.max())}"


def row_uniforms(seeds: list[int], length: int) -> torch.Tensor:
    """[rows, length] uniforms in [0, 1): row r from its own torch.Generator seeded with seeds[r]."""
    out = torch.empty(len(seeds), length)
    for row, seed in enumerate(seeds):
        torch.rand(length, generator=torch.Generator().manual_seed(seed), out=out[row])
    return out


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus truncation, Hugging Face's rule (TopPLogitsWarper): sorted ascending, drop every token
    whose cumulative probability is <= 1 - top_p; the most likely token always stays. At an exact
    boundary ([0.5, 0.25, 0.25], top_p 0.75) two tokens stay. Returns unnormalised kept probs."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=False)
    drop = sorted_probs.cumsum(dim=-1) <= 1 - top_p
    drop[..., -1] = False
    return probs.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), 0.0)


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    rng: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row: greedy at temperature 0, else temperature + nucleus (top-p) sampling.

    With `uniform` (one number in [0, 1) per row) the token is the inverse-CDF draw at that number,
    so a row's sample depends only on its own stream; otherwise `torch.multinomial` with `rng`.
    The returned log-prob is under the temperature-scaled distribution before top-p
    truncation, the same quantity the trainer computes from its logits.
    """
    if temperature <= 0:
        token = logits.argmax(dim=-1)
        return token, torch.log_softmax(logits, dim=-1).gather(-1, token.unsqueeze(-1)).squeeze(-1)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    probs = top_p_filter(logp.exp(), top_p)
    if uniform is None:
        token = torch.multinomial(probs, 1, generator=rng).squeeze(-1)
    else:
        cdf = probs.cumsum(dim=-1)
        target = (uniform.to(cdf.dtype) * cdf[..., -1]).unsqueeze(-1)
        # first index whose cdf exceeds the target: never a zero-probability (truncated) token
        token = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    return token, logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)


# The loop reads the finished rows' count on the host (a GPU sync: it waits for the queued kernels)
# once per this many tokens: per token it stretched an 8B-shape decode step of 64 rows on an H200
# from 43 to 107 ms. Between reads, finished rows decode padding that nothing keeps. On a CPU (no
# queue to wait for) it reads every token, so finished rows leave at once. The samples are the same.
CHECK_FINISHED_EVERY = 8
# Finished rows are dropped from the decoding batch once at least this many (and this share) of its
# rows have finished: each drop copies the filled KV cache once, each dropped row saves its compute.
COMPACT_MIN_ROWS = 4
COMPACT_FRACTION = 0.25
