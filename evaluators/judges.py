"""Pairwise judges, chosen by name in the eval config (`eval.judge.name`, or `--judge name=...`).

A judge compares a model's output with a baseline's output for the same prompt, two ways:

    judge.preferences(items) -> list[Preference]        AlpacaEval: P(model output is better)
    judge.verdicts(items, version) -> list[tuple[Game, Game]]  Arena-Hard ("v0.1" or "v2.0"): one
                                                         verdict per answer order (game 1: A =
                                                         baseline, B = model; game 2: A = model,
                                                         B = baseline)

Judges (`make_judge(config)`; an unknown name is a ConfigError):

- `reward_model`: a local sequence-classification reward model (default: the embedded tiny one,
  `harness.tiny.ensure_tiny_assets().reward_model_dir`). P(model beats baseline) =
  sigmoid(score(model) - score(baseline)), the Bradley-Terry reading of a reward model. For
  Arena-Hard the probability p that assistant A is better becomes a verdict label:
  p > strong_threshold (0.9) -> A>>B, p > weak_threshold (0.6) -> A>B, p < 1 - 0.9 -> B>>A,
  p < 1 - 0.6 -> B>A, otherwise A=B. A reward model is order-blind, so game 2 mirrors game 1.
  Keys: model_dir, device ("cpu"), dtype ("auto": bf16 on CUDA), batch_size (16), max_length (2048), strong_threshold,
  weak_threshold.

- `openai_compatible`: any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, ...)
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
import logging
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from evaluators.bradley_terry import parse_verdict
from evaluators.judge_prompts import (
    ALPACA_EVAL_SYSTEM_PROMPT,
    ALPACA_EVAL_TOKENS,
    ALPACA_EVAL_USER_TEMPLATE,
    ARENA_HARD_USER_TEMPLATE,
    arena_hard_system_prompt,
    fill,
)
from harness.errors import ConfigError
from harness.registry import Registry
from harness.files import atomic_write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """One question for a judge: the prompt and the two outputs to compare."""

    prompt: str
    model_output: str
    baseline_output: str
    category: str | None = None  # Arena-Hard category (picks the system prompt)


@dataclass(frozen=True)
class Preference:
    """P(model output better than baseline output); None when the judge's answer was unusable."""

    p_model: float | None
    raw: str  # the judge's reply (or the reward scores), kept for the generations file


@dataclass(frozen=True)
class Game:
    """One Arena-Hard judgment: the verdict label (None if unparsable) and the judge's text."""

    label: str | None
    judgment: str


class Judge(Protocol):
    name: str

    def preferences(self, items: list[Comparison]) -> list[Preference]: ...

    def verdicts(self, items: list[Comparison], version: str = "v0.1") -> list[tuple[Game, Game]]: ...


# Keys the pairwise suites read from the same `eval.judge` mapping (not judge settings).
SUITE_KEYS = {
    "name",
    "samples",
    "baseline_answers",
    "instruction_difficulty",
    "bootstrap_rounds",
    "baseline_policy",
    "baseline_cache_dir",
}


def probability_to_label(p_a: float, strong: float = 0.9, weak: float = 0.6) -> str:
    """Arena-Hard verdict label for P(assistant A is better) = p_a (symmetric thresholds)."""
    if p_a > strong:
        return "A>>B"
    if p_a > weak:
        return "A>B"
    if p_a < 1.0 - strong:
        return "B>>A"
    if p_a < 1.0 - weak:
        return "B>A"
    return "A=B"


class RewardModelJudge:
    """Judge by reward-model score difference (see module docstring)."""

    name = "reward_model"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 2048,
        strong_threshold: float = 0.9,
        weak_threshold: float = 0.6,
        dtype: str = "auto",
    ):
        if not 0.5 <= weak_threshold <= strong_threshold < 1.0:
            raise ConfigError(
                f"eval.judge: weak_threshold={weak_threshold!r}, strong_threshold={strong_threshold!r}; "
                f"expected 0.5 <= weak_threshold <= strong_threshold < 1."
            )
        if model_dir is None:
            from harness.tiny import ensure_tiny_assets

            model_dir = ensure_tiny_assets().reward_model_dir
        from harness.rewards import RewardModelScorer

        self.scorer = RewardModelScorer(
            model_dir, device=device, batch_size=batch_size, max_length=max_length, dtype=dtype
        )
        self.strong, self.weak = strong_threshold, weak_threshold

    def _score_pairs(self, items: list[Comparison]) -> list[tuple[float, float]]:
        prompts = [item.prompt for item in items]
        scores = self.scorer.score(
            prompts + prompts, [i.model_output for i in items] + [i.baseline_output for i in items]
        )
        return list(zip(scores[: len(items)], scores[len(items) :]))

    def preferences(self, items: list[Comparison]) -> list[Preference]:
        return [
            Preference(_sigmoid(sm - sb), f"reward model={sm:.4f} baseline={sb:.4f}")
            for sm, sb in self._score_pairs(items)
        ]

    def verdicts(self, items: list[Comparison], version: str = "v0.1") -> list[tuple[Game, Game]]:
        games = []  # `version` (arena-hard's) changes nothing for a reward model
        for sm, sb in self._score_pairs(items):
            p_model = _sigmoid(sm - sb)
            text = f"reward model={sm:.4f} baseline={sb:.4f} P(model better)={p_model:.4f}"
            game1 = probability_to_label(1.0 - p_model, self.strong, self.weak)  # A = baseline
            game2 = probability_to_label(p_model, self.strong, self.weak)  # A = model
            games.append((Game(game1, f"{text} [[{game1}]]"), Game(game2, f"{text} [[{game2}]]")))
        return games


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
        import openai  # imported here: `import evaluators.judges` stays light

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


def check_judge_config(config: dict | None, where: str = "eval.judge") -> dict[str, Any]:
    """Validate the judge name and keys without building anything (cheap: for config loading).

    Returns the judge's own settings (the mapping minus `name` and the suite keys).
    """
    config = dict(config or {})
    name = config.get("name", "reward_model")
    JUDGES.get(name, where=f"{where}.name")
    settings = {k: v for k, v in config.items() if k not in SUITE_KEYS}
    unknown, _, accepted, _ = JUDGES.option_problems(name, settings)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {unknown} for judge {name!r}; expected keys among "
            f"{sorted(set(accepted) | SUITE_KEYS)}."
        )
    return settings


def make_judge(config: dict | None, where: str = "eval.judge") -> Judge:
    """The judge `config["name"]` names (default reward_model), built from the other keys."""
    settings = check_judge_config(config, where)
    return JUDGES.get(dict(config or {}).get("name", "reward_model"))(**settings)


JUDGES = Registry(
    "judge",
    {
        "reward_model": "evaluators.judges:RewardModelJudge",
        "openai_compatible": "evaluators.judges:OpenAICompatibleJudge",
    },
)


def default_cache_root() -> Path:
    """$HARNESS_CACHE, else ~/.cache/harness (the tiny assets' cache root too)."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")


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


def _sigmoid(x: float) -> float:
    # numerically stable for large |x|
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
