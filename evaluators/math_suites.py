"""Math suites (MATH-500, AMC23, the NuminaMath test split, the embedded tiny task) and their scoring.

Protocol (paper): sample N completions per problem at temperature 0.6, top-p 0.9 (N = 50 in the
paper; `EvalOptions.samples`), grade each with Math-Verify against the gold answer (0/1), and
report pass@1 = mean over problems of the per-problem mean accuracy, in percent, with its
standard error over problems: SE = std(per-problem accuracy, ddof=1) / sqrt(P).

Metric names: `pass_at_1` and `pass_at_1_se`. (MLflow metric names may not contain "@", so
`pass@1` is spelled `pass_at_1`; the run metric is `eval/<suite>/pass_at_1`.)

Data formats (local files; see `evaluators/data.py`):
- math500: HuggingFaceH4/MATH-500 `test.jsonl`: problem, solution, answer, subject, level, unique_id.
- amc23: JSONL with id, problem (or "question", as in math-ai/amc23), answer as a number (27.0).
- numinamath: the held-out test split the harness carves from NuminaMath (1,980 problems, proof /
  multiple-choice / synthetic subsets removed), `<data.data_dir>/numinamath/test.jsonl` with
  problem, solution, answer and optionally id (matched by line order when ids are absent).
- tiny_math: the embedded task's `math/test.jsonl` (id, problem, solution, answer), found through
  `harness.tiny.ensure_tiny_assets()` when no file is given.
"""

from __future__ import annotations

import math
from typing import Any

from evaluators.registry import EvalGenerator, EvalOptions, Suite, _progress, register_suite
from harness.tasks import PAPER_MATH_PROMPT_TEMPLATE

MATH_METRIC = "pass_at_1"
PAPER_PROTOCOL = (
    "pass@1 averaged over N samples per problem (paper: N=50) at T=0.6, top-p 0.9; Math-Verify; SE over problems"
)
_NUMBER = (int, float)
_ID = (str, int)
SCORE_CHUNK = 256  # predictions per Math-Verify call, so the progress bar moves


def pass_at_1(correct: list[list[float]]) -> tuple[float, float]:
    """(pass@1, standard error) in percent from 0/1 grades grouped by problem.

    pass@1 is the mean over problems of each problem's mean accuracy over its samples; the SE
    is the sample std (ddof=1) of those per-problem accuracies over sqrt(P), nan for P < 2.
    """
    if not correct or any(len(group) == 0 for group in correct):
        raise ValueError("pass@1 needs at least one graded sample for every problem")
    per_problem = [sum(group) / len(group) for group in correct]
    count = len(per_problem)
    mean = sum(per_problem) / count
    if count < 2:
        return 100.0 * mean, float("nan")
    variance = sum((acc - mean) ** 2 for acc in per_problem) / (count - 1)
    return 100.0 * mean, 100.0 * math.sqrt(variance / count)


def gold_answer(record: dict) -> str:
    """The gold answer as Math-Verify's gold string (AMC's 27.0 stays "27.0"; it equals 27)."""
    return str(record["answer"])


def grade(golds: list[str], predictions: list[str], options: EvalOptions) -> list[float]:
    """0/1 Math-Verify grades, in a worker pool with a per-answer timeout (timeouts grade 0)."""
    from harness.rewards import MathVerifyPool

    pool = MathVerifyPool(workers=options.math_workers, timeout_s=options.math_timeout_s)
    try:
        scores: list[float] = []
        starts = range(0, len(golds), SCORE_CHUNK)
        for start in _progress(starts, options.show_progress, "math-verify", len(golds), SCORE_CHUNK):
            stop = start + SCORE_CHUNK
            scores.extend(pool.score(golds=golds[start:stop], predictions=predictions[start:stop]))
        return scores
    finally:
        pool.close()


def score_math_outputs(
    suite: Suite,
    records: list[dict],
    outputs: list[list[str]],
    options: EvalOptions,
    *,
    lengths: list[list[int | None]] | None = None,
    finish_reasons: list[list[str | None]] | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Grade `outputs[i]` (the samples for `records[i]`) -> (metrics, per-sample rows)."""
    from evaluators.data import record_ids

    ids = record_ids(suite, records) or [str(i) for i in range(len(records))]
    flat_golds = [gold_answer(rec) for rec, outs in zip(records, outputs) for _ in outs]
    flat_outputs = [out for outs in outputs for out in outs]
    flat_scores = iter(grade(flat_golds, flat_outputs, options))
    rows, correct = [], []
    for p, (record, outs) in enumerate(zip(records, outputs)):
        prompt = suite.render_prompt(record, options.prompt_template)
        group = []
        for s, output in enumerate(outs):
            score = float(next(flat_scores))
            group.append(score)
            rows.append(
                {
                    "id": ids[p],
                    "sample_index": s,
                    "prompt": prompt,
                    "output": output,
                    "length": lengths[p][s] if lengths else None,
                    "finish_reason": finish_reasons[p][s] if finish_reasons else None,
                    "gold": gold_answer(record),
                    "score": score,
                    "correct": score >= 1.0,
                }
            )
        correct.append(group)
    value, stderr = pass_at_1(correct)
    metrics = {
        MATH_METRIC: value,
        f"{MATH_METRIC}_se": stderr,
        "n_problems": float(len(records)),
        "n_samples": float(len(flat_outputs)),
        "mean_length": _mean_length(lengths),
    }
    return metrics, rows


def _mean_length(lengths: list[list[int | None]] | None) -> float:
    values = [n for group in lengths or [] for n in group if n is not None]
    return sum(values) / len(values) if values else float("nan")


def evaluate_math(
    suite: Suite, model_dir: Any, records: list[dict], generator: EvalGenerator, options: EvalOptions
) -> tuple[dict[str, float], list[dict]]:
    """Sample `options.samples` completions per problem and grade them."""
    prompts = [suite.render_prompt(record, options.prompt_template) for record in records]
    from evaluators.data import record_ids

    keys = record_ids(suite, records) or list(range(len(records)))
    groups = generator.generate(prompts, n=options.samples, desc=f"{suite.name} generate", keys=keys)
    outputs = [[r.text for r in group] for group in groups]
    lengths = [[len(r.token_ids) for r in group] for group in groups]
    finish = [[r.finish_reason for r in group] for group in groups]
    return score_math_outputs(suite, records, outputs, options, lengths=lengths, finish_reasons=finish)


def _tiny_template() -> str:
    from harness.tiny import TINY_MATH_PROMPT_TEMPLATE

    return TINY_MATH_PROMPT_TEMPLATE


def _tiny_test_file():
    from harness.tiny import ensure_tiny_assets

    return ensure_tiny_assets().data_dir / "math" / "test.jsonl"


def _math_suite(**fields) -> Suite:
    return Suite(kind="math", evaluate=evaluate_math, score_outputs=score_math_outputs, **fields)


MATH500 = register_suite(
    _math_suite(
        name="math500",
        hub_name="HuggingFaceH4/MATH-500",
        data_format="HuggingFaceH4/MATH-500 test.jsonl (JSONL: problem, solution, answer, subject, level, unique_id)",
        id_key="unique_id",
        prompt_template=PAPER_MATH_PROMPT_TEMPLATE,
        description="MATH-500: the 500-problem MATH test subset of Lightman et al.",
        protocol=PAPER_PROTOCOL,
        required_fields={"problem": (str,), "answer": (str,), "unique_id": (str,)},
        optional_fields={"solution": (str,), "subject": (str,), "level": (int,)},
    )
)

AMC23 = register_suite(
    _math_suite(
        name="amc23",
        hub_name="math-ai/amc23",
        data_format="AMC 2023 problems as JSONL (id, problem or question, answer as a number such as 27.0), e.g. math-ai/amc23 test split",
        id_key="id",
        prompt_template=PAPER_MATH_PROMPT_TEMPLATE,
        description="AMC23: the 40 AMC 12 2023 problems with numeric answers.",
        protocol=PAPER_PROTOCOL,
        required_fields={"id": _ID, "problem": (str,), "answer": _NUMBER + (str,)},
        optional_fields={"url": (str,)},
        key_aliases={"question": "problem"},
    )
)

NUMINAMATH = register_suite(
    _math_suite(
        name="numinamath",
        hub_name=None,
        data_format="the NuminaMath test split the harness holds out, <data.data_dir>/numinamath/test.jsonl (JSONL: problem, solution, answer[, id])",
        id_key="id",
        prompt_template=PAPER_MATH_PROMPT_TEMPLATE,
        description="NuminaMath held-out test split (1,980 problems; proof, multiple-choice and synthetic subsets removed).",
        protocol=PAPER_PROTOCOL,
        required_fields={"problem": (str,), "answer": _NUMBER + (str,)},
        optional_fields={"id": _ID, "solution": (str,), "source": (str,)},
    )
)

TINY_MATH = register_suite(
    _math_suite(
        name="tiny_math",
        hub_name=None,
        data_format="the embedded tiny task's math/test.jsonl (JSONL: id, problem, solution, answer), built by harness.tiny.ensure_tiny_assets()",
        id_key="id",
        prompt_template=_tiny_template,
        description="Embedded tiny arithmetic task, for CPU smoke runs.",
        protocol="pass@1 over N samples per problem with Math-Verify, as for the paper suites",
        required_fields={"id": _ID, "problem": (str,), "answer": _NUMBER + (str,)},
        optional_fields={"solution": (str,)},
        default_data=_tiny_test_file,
    )
)
