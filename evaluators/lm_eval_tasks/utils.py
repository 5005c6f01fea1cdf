"""lm-evaluation-harness hooks for the harness math tasks (same prompt, same Math-Verify grade).

Data: each task reads JSONL through `datasets.load_dataset("json", data_files=...)`. The file
comes from `--metadata '{"data_file": "/path/test.jsonl"}'` (lm_eval CLI or simple_evaluate's
`metadata=`), else the task's `dataset_kwargs.data_files` (math500: the hub's published
test.jsonl; amc23: none, a file is required), else, for harness_tiny_math, the embedded task's
test split from `harness.tiny.ensure_tiny_assets()`.

Scoring: `pass_at_1` per document = `harness.rewards.math_verify_reward(gold, output)` (0 or 1),
so the task's mean is the fraction of problems solved (the harness's own evaluator reports the
same quantity in percent). With `repeats: 1` each document gets one sample; N-sample pass@1 at
the paper's T=0.6 / top-p 0.9 is what `harness eval` computes.
"""

from __future__ import annotations

from typing import Any


def _load_json(data_files: Any):
    import datasets

    if isinstance(data_files, str):
        data_files = {"test": data_files}
    return datasets.load_dataset("json", data_files=data_files)


def _with_problem_key(dataset):
    # math-ai/amc23 spells the problem "question"
    if "problem" not in dataset["test"].column_names and "question" in dataset["test"].column_names:
        dataset = dataset.rename_column("question", "problem")
    return dataset


def load_math(data_file: str | None = None, data_files: Any = None, **_metadata: Any):
    """custom_dataset hook: `data_file` (from --metadata) wins over the yaml's data_files."""
    source = data_file or data_files
    if not source:
        raise ValueError(
            'This task needs a local JSONL test file: pass --metadata \'{"data_file": "/path/test.jsonl"}\' '
            "(rows with problem and answer; see evaluators/math_suites.py for each benchmark's format)."
        )
    return _with_problem_key(_load_json(source))


def load_tiny_math(data_file: str | None = None, data_files: Any = None, **_metadata: Any):
    """custom_dataset hook for the embedded tiny task: its test split unless a file is given."""
    if not (data_file or data_files):
        from harness.tiny import ensure_tiny_assets

        data_file = str(ensure_tiny_assets().data_dir / "math" / "test.jsonl")
    return load_math(data_file, data_files)


def doc_to_text_paper(doc: dict) -> str:
    from harness.tasks import PAPER_MATH_PROMPT_TEMPLATE

    return PAPER_MATH_PROMPT_TEMPLATE.format(problem=doc["problem"])


def doc_to_text_tiny(doc: dict) -> str:
    from harness.tiny import TINY_MATH_PROMPT_TEMPLATE

    return TINY_MATH_PROMPT_TEMPLATE.format(problem=doc["problem"])


def doc_to_target(doc: dict) -> str:
    return str(doc["answer"])


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    from harness.rewards import math_verify_reward

    return {"pass_at_1": float(math_verify_reward(str(doc["answer"]), results[0]))}
