"""Judged pairwise suites: AlpacaEval 2.0 (LC win rate) and the scoring it shares; Arena-Hard is in arena_hard.py.

Each suite generates one answer per prompt (AlpacaEval and Arena-Hard protocol; `eval.judge.samples`
raises it), has a judge (evaluators/judges.py, `eval.judge.name`) compare it with a baseline's
answer, and scores:

- `alpaca_eval`: data = the baseline's outputs in AlpacaEval's format, a JSON list of
  {"instruction", "output", "generator"} (alpaca_eval 2.0: GPT-4-Turbo's outputs, hub data set
  `tatsu-lab/alpaca_eval`, config `alpaca_eval_gpt4_baseline`, split `eval`). Metrics
  `lc_winrate`, `lc_winrate_se`, `winrate`, `winrate_se`, `avg_len` (characters, as AlpacaEval
  measures) via evaluators/lc_winrate.py. `eval.judge.instruction_difficulty` may point at
  alpaca_eval's `instruction_difficulty.csv` (index, difficulty by position in the 805-set).
- `arena_hard` (evaluators/arena_hard.py): arena-hard-auto's questions judged in both orders
  against a baseline's answers; v0.1 or v2.0 rules by the question file's format.
- `tiny_chat` (evaluators/tiny_chat_suite.py): the embedded chat task judged against the seed
  policy's answers; scored like alpaca_eval.

Suite keys read from `eval.judge` (beside the judge's own keys, see evaluators/judges.py):
`samples` (answers per prompt, 1), `baseline_answers` (arena_hard), `instruction_difficulty`
(alpaca_eval), `bootstrap_rounds` (arena_hard, 100), `baseline_policy` (tiny_chat: the seed
policy folder, default the tiny policy), `baseline_cache_dir` (tiny_chat seed answers cache).

Rows (generations.jsonl) hold each sample verbatim (no escaping: the UI escapes) with the
baseline's answer, the judge's output and the preference or verdicts.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from evaluators.data import record_ids
from evaluators.judges import Comparison, make_judge
from evaluators.lc_winrate import NO_DIFFICULTY_NOTE, length_controlled_winrate
from evaluators.registry import EvalGenerator, EvalOptions, Suite, register_suite
from harness.errors import ConfigError, DataError
from harness.files import read_text_file

log = logging.getLogger(__name__)

ALPACA_PROTOCOL = (
    "one answer per instruction at T=0.6, top-p 0.9; judge vs the baseline's outputs; "
    "length-controlled win rate (alpaca_eval GLM) with SE"
)


# ----------------------------------------------------------------------------- shared helpers


def judge_config(options: EvalOptions) -> dict[str, Any]:
    return dict(options.judge or {})


def pairwise_samples(options: EvalOptions) -> int:
    """Answers per prompt: `eval.judge.samples`, default 1 (the benchmarks' protocol)."""
    value = judge_config(options).get("samples", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"eval.judge.samples is {value!r}; expected a positive integer (answers per prompt).")
    return value


def generate_answers(
    suite: Suite, prompts: list[str], generator: EvalGenerator, options: EvalOptions, keys: list[str] | None = None
):
    """(texts, token counts) per prompt, `pairwise_samples` each. Streams are keyed by the prompt's
    position (the default) so that the model's sample j of prompt i and the seed baseline's
    (seed_baseline_outputs) share one random stream: identical policies give identical answers."""
    groups = generator.generate(prompts, n=pairwise_samples(options), desc=f"{suite.name} generate", keys=keys)
    return [[r.text for r in g] for g in groups], [[len(r.token_ids) for r in g] for g in groups]


def _ids(suite: Suite, records: list[dict]) -> list[str]:
    return record_ids(suite, records) or [str(i) for i in range(len(records))]


def warn_stand_in_judge(suite: Suite, config: dict) -> None:
    if config.get("name", "reward_model") == "reward_model" and not config.get("model_dir"):
        log.warning(
            "%s: judged by the embedded tiny reward model, a stand-in for the benchmark's "
            "GPT-4 judge; set eval.judge (name: openai_compatible, ...) for real numbers.",
            suite.name,
        )


def score_preferences(
    suite: Suite,
    records: list[dict],
    prompts: list[str],
    outputs: list[list[str]],
    baselines: list[list[str]],
    options: EvalOptions,
    *,
    token_counts: list[list[int]] | None = None,
    difficulty: list[float] | None = None,
    official_glm: bool = False,
    baseline_name: str | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Judge every sample against its baseline answer and compute the (LC) win rates.

    `baselines[i][s]` is the baseline answer sample s of prompt i is compared with.
    `official_glm`: try the real alpaca_eval GLM (only meaningful for the 805 AlpacaEval
    instructions in their published order, whose difficulties it looks up by position).
    `baseline_name`: the baseline's generator name (picks the regularised LC, see lc_reference).
    """
    judge = make_judge(judge_config(options))
    ids = _ids(suite, records)
    flat = [(i, s) for i, outs in enumerate(outputs) for s in range(len(outs))]
    items = [Comparison(prompts[i], outputs[i][s], baselines[i][s]) for i, s in flat]
    preferences = judge.preferences(items)
    kept = [k for k, pref in enumerate(preferences) if pref.p_model is not None]
    if not kept:
        raise ConfigError(
            f"{suite.name}: the judge gave no usable preference for any of {len(items)} comparisons; "
            f"first reply: {preferences[0].raw[:200]!r}."
        )
    lc = length_controlled_winrate(
        [preferences[k].p_model for k in kept],
        [items[k].model_output for k in kept],
        [items[k].baseline_output for k in kept],
        instruction_difficulty=None if difficulty is None else [difficulty[flat[k][0]] for k in kept],
        instruction_index=[flat[k][0] for k in kept],
        use_alpaca_eval=official_glm,
        annotator=getattr(judge, "alpaca_annotator", None),
        baseline=baseline_name,
        seed=options.seed,
    )
    if lc["notes"]:
        log.warning("%s: %s", suite.name, lc["notes"])
    glm = dict(zip(kept, lc["predicted_preferences"]))
    rows = []
    for k, ((i, s), item, pref) in enumerate(zip(flat, items, preferences)):
        rows.append(
            {
                "id": ids[i],
                "sample_index": s,
                "prompt": item.prompt,
                "output": item.model_output,
                "length": len(item.model_output),
                "num_tokens": token_counts[i][s] if token_counts else None,
                "baseline_output": item.baseline_output,
                "preference": pref.p_model,
                "glm_preference": glm.get(k),
                "judge_output": pref.raw,
            }
        )
    metrics = {
        "lc_winrate": lc["lc_winrate"],
        "lc_winrate_se": lc["lc_winrate_se"],
        "winrate": lc["winrate"],
        "winrate_se": lc["winrate_se"],
        "avg_len": sum(len(o) for outs in outputs for o in outs) / len(flat),
        "n_problems": float(len(records)),
        "n_samples": float(len(flat)),
        "n_unparsable": float(len(items) - len(kept)),
        "lc_difficulty_term": 0.0 if NO_DIFFICULTY_NOTE in lc["notes"] else 1.0,
        "lc_length_overlap": length_overlap([len(items[k].model_output) - len(items[k].baseline_output) for k in kept]),
        "lc_method": lc["lc_method"],  # a string: logged as an MLflow tag (evaluators/run.py log_results)
    }
    return metrics, rows


def length_overlap(deltas: list[int]) -> float:
    """The smaller of the shares of answers no longer, and no shorter, than their baseline's (characters).

    The LC win rate predicts the preference at equal lengths; when (nearly) every answer is longer (or
    every one shorter) than its baseline, that point lies outside the data and the LC is an
    extrapolation of the GLM's length term (results/metrics.py `lc_unidentifiable` uses this)."""
    return min(sum(d <= 0 for d in deltas), sum(d >= 0 for d in deltas)) / len(deltas)


# -------------------------------------------------------------------------------- AlpacaEval


def load_instruction_difficulty(path: str | Path, count: int) -> list[float]:
    """alpaca_eval's instruction_difficulty.csv (index, difficulty) for the first `count` rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"eval.judge.instruction_difficulty is {str(path)!r}, which is not a file; expected "
            f"alpaca_eval's instruction_difficulty.csv (hub data set tatsu-lab/alpaca_eval)."
        )
    values: dict[int, float] = {}
    text = read_text_file(path, "instruction difficulty file")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise DataError(f"{path}: not a CSV file ({exc}); expected 'index,difficulty' rows.") from None
    for line_number, row in enumerate(rows, start=1):
        try:
            values[int(row[0])] = float(row[1])
        except (ValueError, IndexError):
            if line_number > 1:  # the first line is the header
                raise DataError(f"{path}, line {line_number}: {row!r:.100}; expected 'index,difficulty'.") from None
    missing = [i for i in range(count) if i not in values]
    if missing:
        raise DataError(
            f"{path}: no difficulty for instruction index {missing[0]} ({len(missing)} missing); "
            f"the data file must be the official 805-instruction set in its published order."
        )
    return [values[i] for i in range(count)]


def score_alpaca_outputs(
    suite: Suite,
    records: list[dict],
    outputs: list[list[str]],
    options: EvalOptions,
    *,
    token_counts: list[list[int]] | None = None,
) -> tuple[dict[str, float], list[dict]]:
    config = judge_config(options)
    warn_stand_in_judge(suite, config)
    prompts = [suite.render_prompt(record) for record in records]
    baselines = [[record["output"]] * len(outs) for record, outs in zip(records, outputs)]
    difficulty = None
    if config.get("instruction_difficulty"):
        difficulty = load_instruction_difficulty(config["instruction_difficulty"], len(records))
    generators = {record.get("generator") for record in records}
    return score_preferences(
        suite,
        records,
        prompts,
        outputs,
        baselines,
        options,
        token_counts=token_counts,
        difficulty=difficulty,
        official_glm=True,
        baseline_name=generators.pop() if len(generators) == 1 else None,
    )


def evaluate_alpaca(
    suite: Suite, model_dir: Any, records: list[dict], generator: EvalGenerator, options: EvalOptions
) -> tuple[dict[str, float], list[dict]]:
    outputs, counts = generate_answers(suite, [suite.render_prompt(r) for r in records], generator, options)
    return score_alpaca_outputs(suite, records, outputs, options, token_counts=counts)


# ------------------------------------------------------------------------------------ suites

ALPACA_EVAL = register_suite(
    Suite(
        name="alpaca_eval",
        kind="pairwise",
        hub_name="tatsu-lab/alpaca_eval",
        hub_config="alpaca_eval_gpt4_baseline",
        hub_split="eval",
        data_format=(
            'the baseline\'s outputs in AlpacaEval\'s format, a JSON list of {"instruction", "output", '
            '"generator"} objects (AlpacaEval 2.0: GPT-4-Turbo\'s, alpaca_eval_gpt4_baseline.json from '
            "the hub data set tatsu-lab/alpaca_eval)"
        ),
        id_key=None,
        prompt_template="{instruction}",
        prompt_key="instruction",
        description="AlpacaEval 2.0: 805 instructions, judged against a baseline's outputs; length-controlled win rate.",
        protocol=ALPACA_PROTOCOL,
        required_fields={"instruction": (str,), "output": (str,)},
        optional_fields={"generator": (str,), "dataset": (str,)},
        evaluate=evaluate_alpaca,
        score_outputs=score_alpaca_outputs,
    )
)
