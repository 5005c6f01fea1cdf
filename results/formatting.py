"""How numbers are written in tables: one decimal, `mean ± SE`, a dash for nothing."""

from __future__ import annotations

import pandas as pd

DASH = "—"


def fmt(value: float, digits: int = 1) -> str:
    return DASH if value is None or pd.isna(value) else f"{value:.{digits}f}"


def fmt_pm(value: float, se: float, digits: int = 1) -> str:
    if value is None or pd.isna(value):
        return DASH
    return fmt(value, digits) if se is None or pd.isna(se) else f"{value:.{digits}f} ± {se:.{digits}f}"
