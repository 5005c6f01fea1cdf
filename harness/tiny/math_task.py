"""The tiny verifiable task: synthetic multi-step integer arithmetic, in NuminaMath's record shape.

A problem chains 2-3 operations on small integers, left to right, written with the fewest
parentheses that keep that order, e.g. ``Compute (17 + 5) * 3 - 8.``. Its solution works the
chain one step per sentence and ends with a boxed answer, short on purpose because generation
cost is per token (one token per character here)::

    17+5=22. 22*3=66. 66-8=58. $\\boxed{58}$

Records are ``{"id", "problem", "solution", "answer"}`` like NuminaMath's, so the same loader,
prompt template and Math-Verify reward serve the tiny task and the real one. Splits are disjoint
by problem text and deterministic for the seed.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

# The user message the tiny policy sees (the chat template is applied by the tokenizer).
TINY_MATH_PROMPT_TEMPLATE = "{problem}"

DEFAULT_MATH_PARAMS = {
    "min_ops": 2,
    "max_ops": 3,
    "max_operand": 20,  # operands of + and - are 1..max_operand
    "max_factor": 5,  # multipliers are 2..max_factor
    "max_value": 99,  # every intermediate result stays in 0..max_value
}
DEFAULT_MATH_SPLITS = {"train": 20000, "validation": 256, "test": 400}

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def make_math_problem(rng: random.Random, params: dict = DEFAULT_MATH_PARAMS) -> dict:
    """Return one ``{"problem", "solution", "answer"}`` record drawn from `rng`."""
    value = rng.randint(1, params["max_operand"])
    expression, top_level = str(value), "atom"
    steps = []
    for _ in range(rng.randint(params["min_ops"], params["max_ops"])):
        op, operand = _next_operation(rng, value, params)
        result = value + operand if op == "+" else value - operand if op == "-" else value * operand
        steps.append(f"{value}{op}{operand}={result}.")
        # Left-to-right order needs brackets only where * follows a sum or difference.
        if op == "*" and top_level == "sum":
            expression = f"({expression})"
        expression = f"{expression} {op} {operand}"
        top_level = "product" if op == "*" else "sum"
        value = result
    solution = " ".join(steps) + f" $\\boxed{{{value}}}$"
    return {"problem": f"Compute {expression}.", "solution": solution, "answer": str(value)}


def _next_operation(rng: random.Random, value: int, params: dict) -> tuple[str, int]:
    """Pick an operation and operand that keep the running value in 0..max_value."""
    options = []
    if value < params["max_value"]:
        options.append("+")
    if value > 0:
        options.append("-")
    if 0 < value <= params["max_value"] // 2:
        options.append("*")
    op = rng.choice(options)
    if op == "+":
        return op, rng.randint(1, min(params["max_operand"], params["max_value"] - value))
    if op == "-":
        return op, rng.randint(1, min(params["max_operand"], value))
    return op, rng.randint(2, min(params["max_factor"], params["max_value"] // value))


def generate_math_splits(
    seed: int,
    sizes: dict = DEFAULT_MATH_SPLITS,
    params: dict = DEFAULT_MATH_PARAMS,
) -> dict[str, list[dict]]:
    """Draw ``sum(sizes)`` distinct problems and cut them into the named splits, in order."""
    rng = random.Random(seed)
    total = sum(sizes.values())
    records, seen = [], set()
    for _ in range(total * 50):  # bounded: a too-small problem space fails loudly below
        if len(records) == total:
            break
        record = make_math_problem(rng, params)
        if record["problem"] not in seen:
            seen.add(record["problem"])
            records.append(record)
    if len(records) < total:
        raise ValueError(
            f"math task params {params} give only {len(records)} distinct problems, {total} were asked for"
        )
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = [
            {"id": f"tiny_math-{name}-{index:05d}", **record}
            for index, record in enumerate(records[start : start + size])
        ]
        start += size
    return splits


def extract_boxed(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` in `text`, or None."""
    found = _BOXED.findall(text)
    return found[-1].strip() if found else None


def is_correct(response: str, answer: str) -> bool:
    """Exact integer match of the last boxed answer: the tiny build's stand-in for Math-Verify
    (equivalent on these integer answers, and free of its process pool)."""
    return extract_boxed(response) == answer


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Write one JSON object per line (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSONL file written by `write_jsonl`."""
    from harness.files import read_json_objects

    return read_json_objects(path, "tiny task file")


def write_math_splits(data_dir: Path, splits: dict[str, list[dict]]) -> None:
    """Write ``data_dir/math/<split>.jsonl`` for every split."""
    for name, records in splits.items():
        write_jsonl(Path(data_dir) / "math" / f"{name}.jsonl", records)
