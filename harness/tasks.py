"""Prompt sources and the `TaskMixture` that draws each step's batch of prompts.

A source is a list of prompt records (see docs/DESIGN.md): `id`, `task` ("verifiable" or
"non_verifiable"), `prompt` (user text), `answer` (gold, verifiable only), `source`.

A source may carry a hidden ground truth (only the embedded `tiny_chat` does; real WildChat has
none): its records then also hold `truth` (a name in `TRUTHS`) and `hidden` (the fields that truth
reads). `truth_scores(records, responses)` scores responses by it, for logging only: the reward
the trainer optimises never sees it.

Sources: `tiny_math` and `tiny_chat` come from the embedded tiny assets; `numinamath` and
`wildchat` are read from `data.data_dir` (`numinamath/{train,validation,test}.jsonl` with
problem/solution/answer, `wildchat/{train,validation}.jsonl` with id/prompt).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from harness.errors import AssetMissingError, DataError
from harness.files import read_json_objects
from harness.registry import Registry

# The paper's prompt for math: the model must end with a boxed answer (graded boxed-first).
PAPER_MATH_PROMPT_TEMPLATE = (
    '{problem}\n\nPlease reason step by step, and end your answer with "The final answer is $\\boxed{{answer}}$".'
)


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """A prompt file's records (harness.files.read_json_objects: the project's one JSONL reader)."""
    return read_json_objects(path, "data file", required)


def _check_text(path: Path, rows: list[dict[str, Any]], key: str, numbers_ok: bool = False) -> None:
    allowed = (str, int, float) if numbers_ok else (str,)
    for number, row in enumerate(rows, start=1):
        value = row[key]
        if not isinstance(value, allowed) or isinstance(value, bool) or value == "":
            raise DataError(
                f"{path}, record {number}: key {key!r} is {value!r:.80}; expected a non-empty "
                f"string{' or a number' if numbers_ok else ''}."
            )


def math_records(path: Path, source: str, template: str) -> list[dict[str, Any]]:
    rows = read_jsonl(path, ("problem", "answer"))
    _check_text(path, rows, "problem")
    _check_text(path, rows, "answer", numbers_ok=True)
    return [
        {
            "id": str(row.get("id", f"{source}-{i}")),
            "task": "verifiable",
            "source": source,
            "prompt": template.format(problem=row["problem"]),
            "answer": str(row["answer"]),
        }
        for i, row in enumerate(rows)
    ]


def chat_records(path: Path, source: str, truth: str | None = None) -> list[dict[str, Any]]:
    """Chat prompt records; with `truth`, each also keeps its row's other fields as `hidden`."""
    rows = read_jsonl(path, ("prompt",))
    _check_text(path, rows, "prompt")
    records = [
        {
            "id": str(row.get("id", f"{source}-{i}")),
            "task": "non_verifiable",
            "source": source,
            "prompt": row["prompt"],
            "answer": None,
        }
        for i, row in enumerate(rows)
    ]
    if truth is not None:
        for record, row in zip(records, rows):
            record.update(truth=truth, hidden={k: v for k, v in row.items() if k not in ("id", "prompt")})
    return records


# Hidden ground-truth scorers by name: fn(hidden fields, response) -> quality in [0, 1].
TRUTHS = Registry("ground-truth function", {"tiny_chat": "harness.tiny.chat_task:quality"})


def truth_scores(records: list[dict[str, Any]], responses: list[str]) -> list[float | None]:
    """Each response's hidden ground-truth quality, None for a record whose source has no truth."""
    return [
        None if record.get("truth") is None else float(TRUTHS.get(record["truth"])(record["hidden"], response))
        for record, response in zip(records, responses)
    ]


def _real_data_dir(data_dir: str | None, source: str, file_hint: str) -> Path:
    if not data_dir:
        raise AssetMissingError(
            f"data.data_dir is not set, but data source `{source}` needs local files: put "
            f"{file_hint} under a folder and pass data.data_dir=/that/folder (nothing is downloaded at run time)."
        )
    return Path(data_dir) / source


def load_split(
    source: str, split: str, data_dir: str | None = None, math_template: str | None = None
) -> list[dict[str, Any]]:
    """Prompt records of one source and split ('train', 'validation' or 'test')."""
    if source in ("tiny_math", "tiny_chat"):
        from harness.tiny import TINY_MATH_PROMPT_TEMPLATE, ensure_tiny_assets

        root = ensure_tiny_assets().data_dir
        if source == "tiny_math":
            return math_records(root / "math" / f"{split}.jsonl", source, math_template or TINY_MATH_PROMPT_TEMPLATE)
        return chat_records(root / "chat" / f"{split}.jsonl", source, truth="tiny_chat")
    if source == "numinamath":
        folder = _real_data_dir(
            data_dir, source, "numinamath/{train,validation,test}.jsonl (problem, solution, answer)"
        )
        return math_records(folder / f"{split}.jsonl", source, math_template or PAPER_MATH_PROMPT_TEMPLATE)
    if source == "wildchat":
        folder = _real_data_dir(data_dir, source, "wildchat/{train,validation}.jsonl (id, prompt: first-turn prompts)")
        return chat_records(folder / f"{split}.jsonl", source)
    raise DataError(f"unknown data source {source!r}; expected tiny_math, tiny_chat, numinamath or wildchat.")


class TaskMixture:
    """Draws each step's prompts from one or two task pools, reproducibly and statelessly.

    The batch for step k depends only on (seed, k), so a resumed run sees the same prompts it
    would have seen without the interruption. Each pool is walked in epochs of fresh
    permutations, so every prompt is used once before any is repeated.
    """

    def __init__(self, pools: dict[str, list[dict[str, Any]]], verifiable_fraction: float, seed: int):
        self.pools = {task: records for task, records in pools.items() if records}
        if not self.pools:
            raise DataError("the task mixture has no prompts to draw from.")
        self.verifiable_fraction = verifiable_fraction
        self.seed = seed
        self._orders: dict[tuple[str, int], list[int]] = {}

    def counts(self, batch_size: int) -> dict[str, int]:
        if len(self.pools) == 1:
            return {next(iter(self.pools)): batch_size}
        verifiable = round(batch_size * self.verifiable_fraction)
        return {"verifiable": verifiable, "non_verifiable": batch_size - verifiable}

    def batch(self, step: int, batch_size: int) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for task, count in self.counts(batch_size).items():
            records.extend(self._take(task, step * count, count))
        return records

    def _take(self, task: str, offset: int, count: int) -> list[dict[str, Any]]:
        pool = self.pools[task]
        taken = []
        for position in range(offset, offset + count):
            epoch, index = divmod(position, len(pool))
            taken.append(pool[self._order(task, epoch)[index]])
        return taken

    def _order(self, task: str, epoch: int) -> list[int]:
        key = (task, epoch)
        if key not in self._orders:
            order = list(range(len(self.pools[task])))
            random.Random(f"{self.seed}:{task}:{epoch}").shuffle(order)
            self._orders = {k: v for k, v in self._orders.items() if k[0] != task}  # keep one epoch per task
            self._orders[key] = order
        return self._orders[key]


TASK_TYPES = {
    "verifiable": ("verifiable",),
    "non_verifiable": ("non_verifiable",),
    "joint": ("verifiable", "non_verifiable"),
}


def task_types(task_mix: str) -> tuple[str, ...]:
    """The task types a task mix draws prompts from (`joint`: both)."""
    return TASK_TYPES[task_mix]


def build_mixture(task_mix: str, data_cfg, seed: int, split: str = "train") -> TaskMixture:
    return TaskMixture(task_pools(task_mix, data_cfg, split), data_cfg.joint_verifiable_fraction, seed)


def task_pools(task_mix: str, data_cfg, split: str) -> dict[str, list[dict[str, Any]]]:
    pools: dict[str, list[dict[str, Any]]] = {}
    if "verifiable" in task_types(task_mix):
        pools["verifiable"] = load_split(data_cfg.verifiable, split, data_cfg.data_dir, data_cfg.math_prompt_template)
    if "non_verifiable" in task_types(task_mix):
        pools["non_verifiable"] = load_split(data_cfg.non_verifiable, split, data_cfg.data_dir)
    return pools
