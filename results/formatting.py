"""How numbers are written in tables: one decimal, `mean ± SE`, a dash for nothing; markdown tables."""

from __future__ import annotations

import pandas as pd

DASH = "—"


def fmt(value: float, digits: int = 1) -> str:
    return DASH if value is None or pd.isna(value) else f"{value:.{digits}f}"


def fmt_pm(value: float, se: float, digits: int = 1) -> str:
    if value is None or pd.isna(value):
        return DASH
    return fmt(value, digits) if se is None or pd.isna(se) else f"{value:.{digits}f} ± {se:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def clean(cell) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
