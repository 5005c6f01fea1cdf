"""Evaluation suites by name: one small declarative `Suite` per benchmark, and a registry.

A suite says where its data comes from (a hub data set or a local file in the benchmark's
published format), which keys every record must carry, how a record becomes the user message
(`prompt_template`, with the single placeholder `{<prompt_key>}`), and how the suite is scored:

    evaluate(suite, model_dir, records, generator, options) -> (metrics, rows)
        generate with `generator` (an `EvalGenerator`) and score; every suite kind implements it.
    score_outputs(suite, records, outputs, options) -> (metrics, rows)
        score outputs that already exist (`outputs[i]` = the samples for `records[i]`); used by
        `harness score`. Optional: a suite without it cannot score a predictions file.

`metrics` maps metric name -> float, headline metric first (each metric `m` with its standard
error under `m_se` where one exists; counts as `n_*`); `rows` are the per-sample results saved as `generations.jsonl`.

`SUITES` maps each name to the module attribute holding its `Suite` (`harness.registry`):
`get_suite` imports that module on first use, so asking for any name works from anywhere, and an
unknown name fails loudly with the list of known ones. `register_suite` adds one more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from harness.chat import chat_prompt
from harness.errors import ConfigError
from harness.registry import Registry

KINDS = ("math", "pairwise")


@dataclass(frozen=True)
class EvalOptions:
    """Everything an evaluation run chooses besides the model and the data.

    Paper protocol for math: temperature 0.6, top-p 0.9, pass@1 over 50 samples per problem.
    `judge` carries the pairwise judge settings (model, baseline, API options) untouched.
    """

    samples: int = 4
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 1024
    seed: int = 0
    batch_size: int = 64
    math_workers: int = 2
    math_timeout_s: float = 5.0
    judge: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True
    # the run's `data.math_prompt_template`: replaces a math suite's own template when set
    prompt_template: str | None = None


@dataclass(frozen=True)
class Suite:
    """One benchmark: data source, record shape, prompt and scoring hooks."""

    name: str
    kind: str  # "math" | "pairwise"
    hub_name: str | None  # datasets.load_dataset name, or None when only a local file works
    data_format: str  # the published file and its format, quoted in "how to supply" messages
    id_key: str | None  # key holding a record's unique id (None: records are matched by order)
    # user message, str.format style (`{<prompt_key>}` filled, `{{`/`}}` literal); may be a
    # zero-argument callable returning it, so a template owned by a heavy module loads lazily
    prompt_template: str | Callable[[], str]
    description: str
    protocol: str  # sampling / metric protocol, for reports
    prompt_key: str = "problem"
    # key -> accepted types; records lacking a required key or holding another type are rejected
    required_fields: dict[str, tuple[type, ...]] = field(default_factory=dict)
    optional_fields: dict[str, tuple[type, ...]] = field(default_factory=dict)
    # other published spellings of a key, renamed on load (math-ai/amc23 says "question")
    key_aliases: dict[str, str] = field(default_factory=dict)
    hub_split: str = "test"
    hub_config: str | None = None
    # returns a local file to use when no --data is given (the embedded tiny task); may raise
    default_data: Callable[[], Any] | None = None
    evaluate: Callable[..., tuple[dict[str, float], list[dict]]] | None = None
    score_outputs: Callable[..., tuple[dict[str, float], list[dict]]] | None = None

    def render_prompt(self, record: dict, template: str | None = None) -> str:
        """The user message for `record` (chat template is applied later, by the tokenizer).

        Only `prompt_key` is passed to `format`: the math template's literal `\\boxed{{answer}}`
        reaches the model as `\\boxed{answer}`, never filled with the gold answer.
        """
        return (template or self.template()).format_map({self.prompt_key: str(record[self.prompt_key])})

    def template(self) -> str:
        return self.prompt_template() if callable(self.prompt_template) else self.prompt_template


SUITES = Registry(
    "suite",
    {
        "math500": "evaluators.math_suites:MATH500",
        "amc23": "evaluators.math_suites:AMC23",
        "numinamath": "evaluators.math_suites:NUMINAMATH",
        "tiny_math": "evaluators.math_suites:TINY_MATH",
        "alpaca_eval": "evaluators.pairwise:ALPACA_EVAL",
        "arena_hard": "evaluators.arena_hard:ARENA_HARD",
        "tiny_chat": "evaluators.tiny_chat_suite:TINY_CHAT",
    },
)


def register_suite(suite: Suite) -> Suite:
    """Add `suite` under its name; re-registering the same name replaces it (module reloads)."""
    if suite.kind not in KINDS:
        raise ConfigError(f"Suite {suite.name!r} has kind {suite.kind!r}; expected one of {KINDS}.")
    if suite.evaluate is None:
        raise ConfigError(f"Suite {suite.name!r} has no evaluate hook; every suite needs one.")
    return SUITES.register(suite.name, suite)


def get_suite(name: str) -> Suite:
    """The suite registered as `name` (its module imported on first use); an unknown name is a
    ConfigError listing the known names."""
    return SUITES.get(name, where="Evaluation suite (--suites or eval.suites)")


def list_suites() -> list[str]:
    """Names of all registered suites, sorted (imports nothing)."""
    return SUITES.names()


@dataclass
class EvalGenerator:
    """What a suite's `evaluate` hook generates with: a `harness.rollout.Generator` backend,
    the tokenizer whose chat template formats user messages, and the run's `EvalOptions`.

    `generate(user_texts, n)` returns `list[list[Rollout]]` (n samples per text) sampled at the
    options' temperature / top-p; temperature 0 means greedy decoding.
    """

    backend: Any
    tokenizer: Any
    options: EvalOptions

    def chat_format(self, user_text: str) -> str:
        return chat_prompt(self.tokenizer, user_text)

    def generate(
        self, user_texts: list[str], n: int | None = None, desc: str = "generate", keys: list[str | int] | None = None
    ) -> list[list]:
        """`keys[i]` names prompt i's random streams (a record id; default its index in `user_texts`):
        sample j of prompt i is the same whatever the batch size or chunking."""
        from harness.rollout import SamplingParams

        opts = self.options
        params = SamplingParams(
            n=n or opts.samples,
            temperature=opts.temperature,
            top_p=opts.top_p,
            max_new_tokens=opts.max_new_tokens,
            seed=opts.seed,
        )
        prompts = [self.chat_format(text) for text in user_texts]
        keys = list(range(len(prompts))) if keys is None else list(keys)
        # Chunks of prompts so the progress bar moves; the backend batches within a chunk.
        chunk = max(1, opts.batch_size // params.n)
        groups: list[list] = []
        for start in _progress(range(0, len(prompts), chunk), opts.show_progress, desc, len(prompts), chunk):
            groups.extend(
                self.backend.generate(prompts[start : start + chunk], params, keys=keys[start : start + chunk])
            )
        return groups


def _progress(iterable, enabled: bool, desc: str, total_items: int, chunk: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=-(-total_items // chunk), unit="batch")
