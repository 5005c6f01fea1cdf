"""The paper's headline numbers, as the dashboard shows them (the results layer's `results.paper`)."""

from results.paper import BENCHMARKS_BY_MIX, HEADLINE, MODEL, PAPER, paper_columns, paper_frame, paper_value

__all__ = ["BENCHMARKS_BY_MIX", "HEADLINE", "MODEL", "PAPER", "paper_columns", "paper_frame", "paper_value"]
