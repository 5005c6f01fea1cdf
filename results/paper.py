"""The paper's headline numbers (Llama-3.1-8B-Instruct), as data for side-by-side display.

From the paper's headline results table (arXiv 2506.21495, Tables 1-3).
Math columns are pass@1 (%, N=50 samples, T=0.6); AlpacaEval is the length-controlled win rate
(%), Arena-Hard the score. None marks a cell the paper did not report. The paper's headline
table has no joint-mix rows, so joint tables show no paper columns.
"""

from __future__ import annotations

from typing import Iterable

PAPER = "Bridging Offline and Online Reinforcement Learning for LLMs (arXiv 2506.21495)"
MODEL = "Llama-3.1-8B-Instruct"

BENCHMARKS_BY_MIX: dict[str, tuple[str, ...]] = {
    "verifiable": ("Math500", "NuminaMath", "AMC23"),
    "non_verifiable": ("AlpacaEval LC", "Arena-Hard"),
}

# Row labels match results.labels.method_label.
HEADLINE: dict[str, dict[str, float | None]] = {
    "seed": {"Math500": 47.4, "NuminaMath": 33.9, "AMC23": 23.7, "AlpacaEval LC": 27.3, "Arena-Hard": 21.3},
    "offline DPO": {"Math500": 53.7, "NuminaMath": 36.4, "AMC23": 28.8, "AlpacaEval LC": 53.2, "Arena-Hard": 38.3},
    "semi-online DPO s=100": {
        "Math500": 58.9,
        "NuminaMath": 39.3,
        "AMC23": 35.1,
        "AlpacaEval LC": None,
        "Arena-Hard": None,
    },
    "semi-online DPO s=10": {
        "Math500": 57.2,
        "NuminaMath": 39.4,
        "AMC23": 31.4,
        "AlpacaEval LC": 81.6,
        "Arena-Hard": 59.4,
    },
    "semi-online DPO s=5": {
        "Math500": None,
        "NuminaMath": None,
        "AMC23": None,
        "AlpacaEval LC": 78.7,
        "Arena-Hard": 60.7,
    },
    "online DPO": {"Math500": 58.7, "NuminaMath": 39.6, "AMC23": 32.9, "AlpacaEval LC": 83.1, "Arena-Hard": 60.1},
    "GRPO": {"Math500": 58.1, "NuminaMath": 38.8, "AMC23": 33.6, "AlpacaEval LC": 75.2, "Arena-Hard": 55.0},
}


# The evaluators' suite names of the paper's benchmarks (the column names above).
PAPER_BENCHMARK_OF_SUITE = {
    "math500": "Math500",
    "numinamath": "NuminaMath",
    "amc23": "AMC23",
    "alpaca_eval": "AlpacaEval LC",
    "arena_hard": "Arena-Hard",
}
# The tiny suites stand in for these paper benchmarks (same kind of task and metric, not the same
# task): the report puts them side by side with the caption saying so.
PAPER_ANALOGUE_OF_SUITE = {"tiny_math": "Math500", "tiny_chat": "AlpacaEval LC"}


def paper_value(label: str, benchmark: str) -> float | None:
    return HEADLINE.get(label, {}).get(benchmark)


def paper_columns(task_mix: str, labels: Iterable[str]) -> dict[str, list[float | None]]:
    """{"paper: <benchmark>": value per row label} for the task mix's benchmarks."""
    labels = list(labels)
    return {
        f"paper: {bench}": [paper_value(label, bench) for label in labels]
        for bench in BENCHMARKS_BY_MIX.get(task_mix, ())
    }


def paper_frame(task_mix: str):
    """The paper's own table for one task mix (rows with at least one reported number)."""
    import pandas as pd

    benches = BENCHMARKS_BY_MIX.get(task_mix, ())
    rows = [
        {"label": label, **{b: values.get(b) for b in benches}}
        for label, values in HEADLINE.items()
        if any(values.get(b) is not None for b in benches)
    ]
    return pd.DataFrame(rows, columns=["label", *benches])
