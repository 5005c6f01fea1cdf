"""Route each prompt record to its task's reward function and put the rewards back in order.

A reward function ("RewardFn") is any callable `fn(records, responses) -> list[float]` that
scores a whole group at once. `RewardRouter` groups a mixed batch by `record["task"]`
(`"verifiable"` / `"non_verifiable"`), calls each task's function once, and returns the
rewards unscaled (the paper mixes Math-Verify 0/1 and reward-model scores as they are: DPO
only ranks within a prompt, so the scales do not clash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from harness.errors import DataError
from harness.rewards.math_verify_pool import MathVerifyPool

if TYPE_CHECKING:  # keeps torch out of processes that only grade math
    from harness.rewards.reward_model import RewardModelScorer


class RewardFn(Protocol):
    def __call__(self, records: list[dict], responses: list[str]) -> list[float]: ...


def _record_label(record: dict, position: int) -> str:
    return f"record {record.get('id', f'#{position}')!r} (source {record.get('source')!r})"


class MathVerifyReward:
    """Verifiable reward: Math-Verify of each response against `record["answer"]`."""

    def __init__(self, pool: MathVerifyPool):
        self.pool = pool

    @property
    def timeouts(self) -> int:
        return self.pool.timeouts

    def __call__(self, records: list[dict], responses: list[str]) -> list[float]:
        golds = []
        for position, record in enumerate(records):
            answer = record.get("answer")
            if answer is None or str(answer).strip() == "":
                raise DataError(
                    f"{_record_label(record, position)}: key 'answer' is {answer!r}; a "
                    f"verifiable record needs a non-empty gold answer string such as '27'."
                )
            golds.append(str(answer))
        return self.pool.score(golds, list(responses))

    def close(self) -> None:
        self.pool.close()


class RewardModelReward:
    """Non-verifiable reward: the reward model's score of (`record["prompt"]`, response)."""

    def __init__(self, scorer: RewardModelScorer):
        self.scorer = scorer

    def __call__(self, records: list[dict], responses: list[str]) -> list[float]:
        prompts = []
        for position, record in enumerate(records):
            prompt = record.get("prompt")
            if not isinstance(prompt, str):
                raise DataError(
                    f"{_record_label(record, position)}: key 'prompt' is {prompt!r}; expected the user message text."
                )
            prompts.append(prompt)
        return self.scorer.score(prompts, list(responses))

    def close(self) -> None:
        pass


@dataclass
class RewardBatch:
    rewards: list[float]
    stats: dict[str, float]


class RewardRouter:
    """Scores a mixed batch: each record by the reward function of its `task`."""

    def __init__(self, fns: dict[str, RewardFn]):
        self.fns = dict(fns)

    def score(self, records: list[dict], responses: list[str]) -> RewardBatch:
        if len(records) != len(responses):
            raise ValueError(f"RewardRouter.score: {len(records)} records but {len(responses)} responses.")
        positions_by_task: dict[str, list[int]] = {}
        for position, record in enumerate(records):
            task = record.get("task")
            if task not in self.fns:
                raise DataError(
                    f"{_record_label(record, position)}: key 'task' is {task!r}; expected one "
                    f"of {sorted(self.fns)} (the tasks this run has reward functions for)."
                )
            positions_by_task.setdefault(task, []).append(position)

        rewards = [0.0] * len(records)
        stats: dict[str, float] = {}
        for task, positions in positions_by_task.items():
            scores = self.fns[task]([records[i] for i in positions], [responses[i] for i in positions])
            if len(scores) != len(positions):
                raise RuntimeError(
                    f"reward function for task {task!r} returned {len(scores)} scores for {len(positions)} responses."
                )
            for position, value in zip(positions, scores):
                rewards[position] = float(value)
            stats[f"reward/{task}_mean"] = sum(scores) / len(scores)
        math_fns = {id(fn): fn for fn in self.fns.values() if isinstance(fn, MathVerifyReward)}
        if math_fns:
            stats["reward/math_verify_timeouts"] = float(sum(fn.timeouts for fn in math_fns.values()))
        return RewardBatch(rewards=rewards, stats=stats)

    def close(self) -> None:
        """Stop worker processes held by the reward functions (each closed once)."""
        for fn in {id(fn): fn for fn in self.fns.values()}.values():
            close = getattr(fn, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> RewardRouter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
