"""The `openai_compatible` judge (`eval.judge.name: openai_compatible`; registered in `JUDGES`, evaluators/judges.py).

Any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, ...)
through the `openai` SDK, with the benchmarks' official prompts (judge_prompts.py).
Keys: base_url (required, e.g. https://api.openai.com/v1), model, api_key_env
("OPENAI_API_KEY"; null for a server without auth: the SDK then sends the key "EMPTY"),
temperature, max_tokens, timeout_s (120, per request), max_attempts (6: the SDK's
max_retries + 1), concurrency (4 parallel requests), cache_dir ($HARNESS_CACHE/judge_cache),
logprobs (true), top_logprobs (5), randomize_order (true).
`model`, `temperature` and `max_tokens` left unset take each benchmark's own setting
(`SUITE_DEFAULTS`, from alpaca_eval's `weighted_alpaca_eval_gpt4_turbo/configs.yaml` and
arena-hard-auto's `config/arena-hard-v0.1.yaml` / `arena-hard-v2.0.yaml`); a value set
applies to every suite.
Retries (the SDK's): HTTP 408 / 409 / 429 / 5xx, connection errors and timeouts, backoff
0.5 s doubling to 8 s with jitter, a server's Retry-After(-ms) honoured up to 2 minutes; other
HTTP errors and malformed replies fail at once with a ConfigError.
Cache: every reply is stored under cache_dir, keyed by sha256 of (model, messages,
temperature, max_tokens, logprobs settings), written atomically, so a re-run costs nothing.
AlpacaEval: alpaca_eval's `weighted_alpaca_eval_gpt4_turbo` asks for one token with
log-probabilities and reads P(M) = p(M) / (p(m) + p(M)); when the endpoint returns no
logprobs (or logprobs: false) the text verdict is used instead (the last "m"/"M" character of
the reply, giving P = 1 or 0), as alpaca_eval's non-weighted annotators do. Like alpaca_eval,
the two outputs are put in a pseudo-random order per instruction (randomize_order).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from evaluators.bradley_terry import parse_verdict
from evaluators.judge_prompts import (
    ALPACA_EVAL_SYSTEM_PROMPT,
    ALPACA_EVAL_TOKENS,
    ALPACA_EVAL_USER_TEMPLATE,
    ARENA_HARD_USER_TEMPLATE,
    arena_hard_system_prompt,
    fill,
)
from evaluators.judges import Comparison, Game, Preference, default_cache_root
from harness.errors import ConfigError
from harness.files import atomic_write_json


# The benchmarks' own judge settings, used for each key the judge config leaves unset.
SUITE_DEFAULTS = {
    # alpaca_eval evaluators_configs/weighted_alpaca_eval_gpt4_turbo/configs.yaml (temperature 1
    # "has no effect": one token is read through its log-probabilities)
    "alpaca_eval": {"model": "gpt-4-1106-preview", "temperature": 1.0, "max_tokens": 1},
    # arena-hard-auto config/arena-hard-v0.1.yaml and config/arena-hard-v2.0.yaml
    "arena_hard_v0.1": {"model": "gpt-4-1106-preview", "temperature": 0.0, "max_tokens": 4096},
    "arena_hard_v2.0": {"model": "gpt-4.1", "temperature": 0.0, "max_tokens": 16000},
}
NO_AUTH_KEY = "EMPTY"  # the SDK insists on a key; servers without auth ignore it (vLLM's convention)


class OpenAICompatibleJudge:
    """Judge through an OpenAI-compatible chat-completions server with the openai SDK (module docstring)."""

    name = "openai_compatible"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout_s: float = 120.0,
        max_attempts: int = 6,
        concurrency: int = 4,
        cache_dir: str | Path | None = None,
        logprobs: bool = True,
        top_logprobs: int = 5,
        randomize_order: bool = True,
    ):
        if not isinstance(base_url, str) or not base_url:
            raise ConfigError(
                f"eval.judge.base_url is {base_url!r}; the openai_compatible judge needs the server's API root "
                f"(e.g. https://api.openai.com/v1, or http://host:8000/v1 for a vLLM server)."
            )
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigError(
                f"eval.judge.model is {model!r}; expected a model name (e.g. gpt-4-1106-preview) "
                f"or no key for each benchmark's own judge model."
            )
        if max_attempts < 1 or concurrency < 1:
            raise ConfigError(
                f"eval.judge: max_attempts={max_attempts!r}, concurrency={concurrency!r}; expected both >= 1."
            )
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ConfigError(
                    f"eval.judge.api_key_env names environment variable {api_key_env!r}, which is not set; "
                    f"export it with the endpoint's API key, or set api_key_env: null for a server without auth."
                )
        import openai  # imported here: `import evaluators.openai_judge` stays light

        self.url = base_url.rstrip("/")
        self.client = openai.OpenAI(
            base_url=self.url,
            api_key=api_key or NO_AUTH_KEY,
            timeout=float(timeout_s),
            max_retries=int(max_attempts) - 1,
        )
        self.model = model
        self.temperature = None if temperature is None else float(temperature)
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.max_attempts, self.concurrency = int(max_attempts), int(concurrency)
        self.logprobs, self.top_logprobs = bool(logprobs), int(top_logprobs)
        self.randomize_order = bool(randomize_order)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_root() / "judge_cache"

    def settings(self, suite: str) -> dict[str, Any]:
        """model, temperature and max_tokens for `suite` (a SUITE_DEFAULTS key): the config's, else the suite's."""
        chosen = dict(SUITE_DEFAULTS[suite])
        for key in ("model", "temperature", "max_tokens"):
            if getattr(self, key) is not None:
                chosen[key] = getattr(self, key)
        return chosen

    @property
    def alpaca_annotator(self) -> str | None:
        """alpaca_eval's name for this judge's AlpacaEval annotator, when it is one of theirs."""
        if self.logprobs and self.settings("alpaca_eval")["model"] == "gpt-4-1106-preview":
            return "weighted_alpaca_eval_gpt4_turbo"
        return None

    # -- AlpacaEval ------------------------------------------------------------------------
    def preferences(self, items: list[Comparison]) -> list[Preference]:
        settings = self.settings("alpaca_eval")
        if self.max_tokens is None and not self.logprobs:
            settings["max_tokens"] = 16  # the text verdict needs a little room
        swaps = [self.randomize_order and _is_swapped(item.prompt) for item in items]
        requests = []
        for item, swap in zip(items, swaps):
            out_1, out_2 = (
                (item.model_output, item.baseline_output) if swap else (item.baseline_output, item.model_output)
            )
            user = fill(ALPACA_EVAL_USER_TEMPLATE, instruction=item.prompt, output_1=out_1, output_2=out_2)
            messages = [{"role": "system", "content": ALPACA_EVAL_SYSTEM_PROMPT}, {"role": "user", "content": user}]
            requests.append(dict(settings, messages=messages, logprobs=self.logprobs))
        responses = self._map(lambda r: self.chat(**r), requests)
        results = []
        for response, swap in zip(responses, swaps):
            p_output_2, text = alpaca_preference(response)
            p_model = None if p_output_2 is None else (1.0 - p_output_2 if swap else p_output_2)
            results.append(Preference(p_model, text))
        return results

    # -- Arena-Hard ------------------------------------------------------------------------
    def verdicts(self, items: list[Comparison], version: str = "v0.1") -> list[tuple[Game, Game]]:
        settings = self.settings(f"arena_hard_{version}")
        requests = []
        for item in items:
            system = arena_hard_system_prompt(item.category)
            for answer_a, answer_b in (
                (item.baseline_output, item.model_output),
                (item.model_output, item.baseline_output),
            ):
                user = fill(ARENA_HARD_USER_TEMPLATE, QUESTION=item.prompt, ANSWER_A=answer_a, ANSWER_B=answer_b)
                messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
                requests.append(dict(settings, messages=messages, logprobs=False))
        texts = [message_text(r, self.url) for r in self._map(lambda r: self.chat(**r), requests)]
        games = [Game(parse_verdict(text), text) for text in texts]
        return [(games[2 * i], games[2 * i + 1]) for i in range(len(items))]

    # -- requests ----------------------------------------------------------------------------
    def chat(
        self, messages: list[dict], model: str, temperature: float, max_tokens: int, logprobs: bool = False
    ) -> dict:
        """The server's JSON reply for one chat request, from the cache when present."""
        payload: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if logprobs:
            payload.update(logprobs=True, top_logprobs=self.top_logprobs)
        path = self._cache_path(payload)
        cached = _read_json(path)
        if cached is not None:
            return cached
        response = self._create(payload)
        message_text(response, self.url)  # validate before caching: a bad reply is never stored
        atomic_write_json(path, response)
        return response

    def _cache_path(self, payload: dict) -> Path:
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _create(self, payload: dict) -> dict:
        """One chat completion through the SDK (which retries); its errors become ConfigErrors."""
        import openai

        try:
            raw = self.client.chat.completions.with_raw_response.create(**payload)
        except openai.APIStatusError as err:
            detail = err.response.text[:300]
            if err.status_code in RETRIED_STATUSES or err.status_code >= 500:
                raise ConfigError(
                    f"Judge endpoint {self.url} failed {self.max_attempts} times (last: HTTP {err.status_code} "
                    f"{detail!r}); raise eval.judge.max_attempts, or wait for the server's rate limit."
                ) from None
            raise ConfigError(
                f"Judge endpoint {self.url} answered HTTP {err.status_code} ({detail!r}); check eval.judge.base_url, "
                f"eval.judge.model ({payload['model']!r}) and the API key in the variable eval.judge.api_key_env names "
                f"(an endpoint that rejects log-probabilities needs eval.judge.logprobs: false)."
            ) from None
        except openai.APIConnectionError as err:  # APITimeoutError included
            cause = err.__cause__ or err
            raise ConfigError(
                f"Judge endpoint {self.url} failed {self.max_attempts} times (last: {type(cause).__name__}: {cause}); "
                f"check that eval.judge.base_url is reachable, or raise eval.judge.max_attempts / timeout_s."
            ) from None
        return _parse_json_reply(raw.text, self.url)

    def _map(self, function: Callable, requests: list) -> list:
        if self.concurrency == 1 or len(requests) < 2:
            return [function(r) for r in requests]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(function, requests))


RETRIED_STATUSES = (408, 409, 429)  # and 5xx: the statuses the SDK retries


def message_text(response: Any, url: str = "the judge endpoint") -> str:
    """choices[0].message.content of a chat-completions reply; anything else is a ConfigError."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise ConfigError(
            f"Judge endpoint {url} returned {json.dumps(response)[:300]!r}, which has no "
            f"choices[0].message.content string; expected an OpenAI chat-completions reply. Check that "
            f"eval.judge.base_url points at the API root (most servers end in /v1)."
        )
    return content


def alpaca_preference(response: dict) -> tuple[float | None, str]:
    """(P(output_2 is better), the reply text) from an AlpacaEval judge reply.

    With logprobs: p(M) / (p(m) + p(M)) over the first token's top log-probabilities (tokens
    compared after stripping whitespace). Otherwise the last non-space character of the text:
    "M" -> 1, "m" -> 0, anything else -> None (unparsable).
    """
    text = message_text(response)
    token_1, token_2 = ALPACA_EVAL_TOKENS
    try:
        top = response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        top = None
    if top:
        mass = {token_1: 0.0, token_2: 0.0}
        for entry in top:
            token = str(entry.get("token", "")).strip()
            if token in mass:
                mass[token] += math.exp(float(entry["logprob"]))
        total = mass[token_1] + mass[token_2]
        if total > 0:
            return mass[token_2] / total, text
    stripped = text.strip()
    last = stripped[-1:] if stripped else ""
    if last == token_2:
        return 1.0, text
    if last == token_1:
        return 0.0, text
    return None, text


def _is_swapped(instruction: str) -> bool:
    # a fixed pseudo-random order per instruction, so cached judgments stay valid across runs
    return random.Random(hashlib.sha256(instruction.encode()).hexdigest()).random() < 0.5


def _parse_json_reply(text: str, url: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(
            f"Judge endpoint {url} returned non-JSON text {text[:200]!r}; expected an OpenAI chat-completions "
            f"reply. Check eval.judge.base_url."
        ) from None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # absent or torn: fetch again
