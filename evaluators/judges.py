"""Pairwise judges, chosen by name in the eval config (`eval.judge.name`, or `--judge name=...`).

A judge compares a model's output with a baseline's output for the same prompt, two ways:

    judge.preferences(items) -> list[Preference]        AlpacaEval: P(model output is better)
    judge.verdicts(items)    -> list[tuple[Game, Game]]  Arena-Hard: one verdict per answer order
                                                         (game 1: A = baseline, B = model;
                                                          game 2: A = model, B = baseline)

Judges (`make_judge(config)`; an unknown name is a ConfigError):

- `reward_model`: a local sequence-classification reward model (default: the embedded tiny one,
  `harness.tiny.ensure_tiny_assets().reward_model_dir`). P(model beats baseline) =
  sigmoid(score(model) - score(baseline)), the Bradley-Terry reading of a reward model. For
  Arena-Hard the probability p that assistant A is better becomes a verdict label:
  p > strong_threshold (0.9) -> A>>B, p > weak_threshold (0.6) -> A>B, p < 1 - 0.9 -> B>>A,
  p < 1 - 0.6 -> B>A, otherwise A=B. A reward model is order-blind, so game 2 mirrors game 1.
  Keys: model_dir, device ("cpu"), dtype ("auto": bf16 on CUDA), batch_size (16), max_length (2048), strong_threshold,
  weak_threshold.

- `openai_compatible`: any chat-completions endpoint (OpenAI, vLLM, SGLang, ...), POST
  {base_url}/chat/completions with urllib, the benchmarks' official prompts (judge_prompts.py).
  Keys: base_url (required, e.g. https://api.openai.com/v1), model (required, e.g.
  gpt-4-1106-preview), api_key_env ("OPENAI_API_KEY"; null for servers without auth),
  temperature (0.0), max_tokens (4096, Arena-Hard judgments), timeout_s (120), max_attempts (6),
  backoff_s (1.0, doubled per retry), max_backoff_s (60), concurrency (4 parallel requests),
  cache_dir ($HARNESS_CACHE/judge_cache), logprobs (true), top_logprobs (5),
  randomize_order (true).
  Retries: HTTP 429 / 5xx, connection errors and timeouts, with exponential backoff (honouring
  Retry-After up to max_backoff_s); other HTTP errors and malformed responses fail at once.
  Cache: every response is stored under cache_dir, keyed by sha256 of (model, messages,
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
import time
import urllib.error
import urllib.request
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

    def verdicts(self, items: list[Comparison]) -> list[tuple[Game, Game]]: ...


# Keys the pairwise suites read from the same `eval.judge` mapping (not judge settings).
SUITE_KEYS = {"name", "samples", "baseline_answers", "instruction_difficulty", "bootstrap_rounds",
              "baseline_policy", "baseline_cache_dir"}


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

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 16,
                 max_length: int = 2048, strong_threshold: float = 0.9, weak_threshold: float = 0.6,
                 dtype: str = "auto"):
        if not 0.5 <= weak_threshold <= strong_threshold < 1.0:
            raise ConfigError(
                f"eval.judge: weak_threshold={weak_threshold!r}, strong_threshold={strong_threshold!r}; "
                f"expected 0.5 <= weak_threshold <= strong_threshold < 1.")
        if model_dir is None:
            from harness.tiny import ensure_tiny_assets

            model_dir = ensure_tiny_assets().reward_model_dir
        from harness.rewards import RewardModelScorer

        self.scorer = RewardModelScorer(model_dir, device=device, batch_size=batch_size, max_length=max_length,
                                        dtype=dtype)
        self.strong, self.weak = strong_threshold, weak_threshold

    def _score_pairs(self, items: list[Comparison]) -> list[tuple[float, float]]:
        prompts = [item.prompt for item in items]
        scores = self.scorer.score(prompts + prompts, [i.model_output for i in items] + [i.baseline_output for i in items])
        return list(zip(scores[: len(items)], scores[len(items):]))

    def preferences(self, items: list[Comparison]) -> list[Preference]:
        return [Preference(_sigmoid(sm - sb), f"reward model={sm:.4f} baseline={sb:.4f}")
                for sm, sb in self._score_pairs(items)]

    def verdicts(self, items: list[Comparison]) -> list[tuple[Game, Game]]:
        games = []
        for sm, sb in self._score_pairs(items):
            p_model = _sigmoid(sm - sb)
            text = f"reward model={sm:.4f} baseline={sb:.4f} P(model better)={p_model:.4f}"
            game1 = probability_to_label(1.0 - p_model, self.strong, self.weak)  # A = baseline
            game2 = probability_to_label(p_model, self.strong, self.weak)  # A = model
            games.append((Game(game1, f"{text} [[{game1}]]"), Game(game2, f"{text} [[{game2}]]")))
        return games


class OpenAICompatibleJudge:
    """Judge through a chat-completions HTTP endpoint (see module docstring)."""

    name = "openai_compatible"

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_tokens: int = 4096, timeout_s: float = 120.0, max_attempts: int = 6,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, concurrency: int = 4,
                 cache_dir: str | Path | None = None, logprobs: bool = True, top_logprobs: int = 5,
                 randomize_order: bool = True):
        for key, value in (("base_url", base_url), ("model", model)):
            if not isinstance(value, str) or not value:
                raise ConfigError(
                    f"eval.judge.{key} is {value!r}; the openai_compatible judge needs base_url (e.g. "
                    f"https://api.openai.com/v1) and model (e.g. gpt-4-1106-preview).")
        if max_attempts < 1 or concurrency < 1:
            raise ConfigError(f"eval.judge: max_attempts={max_attempts!r}, concurrency={concurrency!r}; expected both >= 1.")
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ConfigError(
                    f"eval.judge.api_key_env names environment variable {api_key_env!r}, which is not set; "
                    f"export it with the endpoint's API key, or set api_key_env: null for a server without auth.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.temperature, self.max_tokens = model, float(temperature), int(max_tokens)
        self.timeout_s, self.max_attempts = float(timeout_s), int(max_attempts)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.concurrency, self.logprobs, self.top_logprobs = int(concurrency), bool(logprobs), int(top_logprobs)
        self.randomize_order = bool(randomize_order)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_root() / "judge_cache"
        self.requests_sent = 0  # HTTP requests made (cache hits make none)

    @property
    def alpaca_annotator(self) -> str | None:
        """alpaca_eval's name for this judge's AlpacaEval annotator, when it is one of theirs."""
        if self.logprobs and self.model == "gpt-4-1106-preview":
            return "weighted_alpaca_eval_gpt4_turbo"
        return None

    # -- AlpacaEval ------------------------------------------------------------------------
    def preferences(self, items: list[Comparison]) -> list[Preference]:
        swaps = [self.randomize_order and _is_swapped(item.prompt) for item in items]
        requests = []
        for item, swap in zip(items, swaps):
            out_1, out_2 = (item.model_output, item.baseline_output) if swap else (item.baseline_output, item.model_output)
            user = fill(ALPACA_EVAL_USER_TEMPLATE, instruction=item.prompt, output_1=out_1, output_2=out_2)
            messages = [{"role": "system", "content": ALPACA_EVAL_SYSTEM_PROMPT}, {"role": "user", "content": user}]
            # the weighted annotator reads one token's logprobs; the text variant needs a little room
            requests.append((messages, 1 if self.logprobs else 16, self.logprobs))
        responses = self._map(lambda r: self.chat(*r), requests)
        results = []
        for response, swap in zip(responses, swaps):
            p_output_2, text = alpaca_preference(response)
            p_model = None if p_output_2 is None else (1.0 - p_output_2 if swap else p_output_2)
            results.append(Preference(p_model, text))
        return results

    # -- Arena-Hard ------------------------------------------------------------------------
    def verdicts(self, items: list[Comparison]) -> list[tuple[Game, Game]]:
        requests = []
        for item in items:
            system = arena_hard_system_prompt(item.category)
            for answer_a, answer_b in ((item.baseline_output, item.model_output), (item.model_output, item.baseline_output)):
                user = fill(ARENA_HARD_USER_TEMPLATE, QUESTION=item.prompt, ANSWER_A=answer_a, ANSWER_B=answer_b)
                requests.append(([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                 self.max_tokens, False))
        texts = [message_text(r, self.url) for r in self._map(lambda r: self.chat(*r), requests)]
        games = [Game(parse_verdict(text), text) for text in texts]
        return [(games[2 * i], games[2 * i + 1]) for i in range(len(items))]

    # -- HTTP --------------------------------------------------------------------------------
    def chat(self, messages: list[dict], max_tokens: int, logprobs: bool = False) -> dict:
        """The endpoint's JSON reply for one chat request, from the cache when present."""
        payload: dict[str, Any] = {"model": self.model, "messages": messages,
                                   "temperature": self.temperature, "max_tokens": max_tokens}
        if logprobs:
            payload.update(logprobs=True, top_logprobs=self.top_logprobs)
        path = self._cache_path(payload)
        cached = _read_json(path)
        if cached is not None:
            return cached
        response = self._post(payload)
        message_text(response, self.url)  # validate before caching: a bad reply is never stored
        atomic_write_json(path, response)
        return response

    def _cache_path(self, payload: dict) -> Path:
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _post(self, payload: dict) -> dict:
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error = ""
        for attempt in range(1, self.max_attempts + 1):
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            try:
                self.requests_sent += 1
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    text = reply.read().decode("utf-8", errors="replace")
                return _parse_json_reply(text, self.url)
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", errors="replace")[:300]
                if err.code != 429 and err.code < 500:
                    raise ConfigError(
                        f"Judge endpoint {self.url} answered HTTP {err.code} ({detail!r}); check eval.judge.base_url, "
                        f"eval.judge.model ({self.model!r}) and the API key in the variable eval.judge.api_key_env names "
                        f"(an endpoint that rejects log-probabilities needs eval.judge.logprobs: false)."
                    ) from None
                last_error = f"HTTP {err.code} {detail!r}"
                wait = _retry_after(err.headers.get("Retry-After"), wait, self.max_backoff_s)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last_error = f"{type(err).__name__}: {err}"
            if attempt < self.max_attempts:
                log.warning("judge request failed (%s); retry %d/%d in %.1fs", last_error, attempt, self.max_attempts - 1, wait)
                time.sleep(wait)
        raise ConfigError(
            f"Judge endpoint {self.url} failed {self.max_attempts} times (last: {last_error}); check that "
            f"eval.judge.base_url is reachable, or raise eval.judge.max_attempts / timeout_s.")

    def _map(self, function: Callable, requests: list) -> list:
        if self.concurrency == 1 or len(requests) < 2:
            return [function(r) for r in requests]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(function, requests))


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
            f"eval.judge.base_url points at the API root (most servers end in /v1).")
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
            f"{sorted(set(accepted) | SUITE_KEYS)}.")
    return settings


def make_judge(config: dict | None, where: str = "eval.judge") -> Judge:
    """The judge `config["name"]` names (default reward_model), built from the other keys."""
    settings = check_judge_config(config, where)
    return JUDGES.get(dict(config or {}).get("name", "reward_model"))(**settings)


JUDGES = Registry("judge", {"reward_model": "evaluators.judges:RewardModelJudge",
                            "openai_compatible": "evaluators.judges:OpenAICompatibleJudge"})


def default_cache_root() -> Path:
    """$HARNESS_CACHE, else ~/.cache/harness (the tiny assets' cache root too)."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")


def _is_swapped(instruction: str) -> bool:
    # a fixed pseudo-random order per instruction, so cached judgments stay valid across runs
    return random.Random(hashlib.sha256(instruction.encode()).hexdigest()).random() < 0.5


def _retry_after(header: str | None, default: float, cap: float) -> float:
    try:
        return min(cap, max(0.0, float(header))) if header else default
    except ValueError:
        return default


def _parse_json_reply(text: str, url: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(
            f"Judge endpoint {url} returned non-JSON text {text[:200]!r}; expected an OpenAI chat-completions "
            f"reply. Check eval.judge.base_url.") from None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # absent or torn: fetch again




def _sigmoid(x: float) -> float:
    # numerically stable for large |x|
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
