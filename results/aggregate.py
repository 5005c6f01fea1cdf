"""Seeds to cells, cells to the paper's tables.

cells = seed_aggregate(runs)      # mean ± SE over seeds per (sweep, method, s, ref s, task mix, variant)
tables = paper_tables(runs)       # {task_mix: paper-style table with the paper's numbers beside}
"""

from __future__ import annotations

import math

import pandas as pd

from results.labels import cell_label, mix_sort_key, row_order_key, seed_sort_key
from results.metrics import eval_score_columns, headline_columns, logged_se, metric_column_order, spread_columns
from results.paper import paper_columns
from results.runs import CELL_KEYS, META_COLUMNS, task_mixes, with_seed_rows


def seed_aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (sweep, method, sync_every, ref_sync_every, task_mix, variant) over its seeds.

    Each eval score becomes its mean over the seeds that have it, and `<score>_se` the standard
    error of that mean (sample std / sqrt(n)); with a single seed the run's own logged SE is kept
    (from `_se`, or a 95% CI as half-width / 1.96). Other metrics and duration_s are averaged. Adds `n_seeds`,
    `seeds` and `label` (the paper's row name). Rows are in paper order.
    """
    if "variant" not in frame:  # a frame built without results.runs (no params read)
        frame = frame.assign(variant="")
    scores = eval_score_columns(frame, final=None)
    spreads = {c for s in scores for c in spread_columns(frame, s)}
    others = [
        c
        for c in frame.columns
        if (c not in META_COLUMNS or c == "duration_s") and c not in scores and c not in spreads
    ]
    rows = []
    for keys, group in frame.groupby(list(CELL_KEYS), sort=False, dropna=False):
        row = dict(zip(CELL_KEYS, keys))
        row["label"] = cell_label(
            row["method"], row["sync_every"], row["ref_sync_every"], row["task_mix"], row["variant"]
        )
        row["n_seeds"] = len(group)
        row["seeds"] = ",".join(sorted(group["seed"].astype(str), key=seed_sort_key))
        for score in scores:
            values = group[score].dropna()
            row[score] = values.mean() if len(values) else math.nan
            if len(values) >= 2:
                row[f"{score}_se"] = values.std(ddof=1) / math.sqrt(len(values))
            else:
                row[f"{score}_se"] = logged_se(group.loc[values.index], score) if len(values) else math.nan
        for column in others:
            row[column] = pd.to_numeric(group[column], errors="coerce").mean()
        rows.append(row)
    head = [*CELL_KEYS, "label", "n_seeds", "seeds"]
    if not rows:
        return pd.DataFrame(columns=head)
    out = pd.DataFrame(rows)
    out = out[head + metric_column_order(c for c in out.columns if c not in head)]
    order = out.apply(
        lambda r: (
            r["sweep"],
            mix_sort_key(r["task_mix"]),
            row_order_key(r["method"], r["sync_every"]),
            r["ref_sync_every"],
            str(r["variant"]),
        ),
        axis=1,
    )
    return out.iloc[sorted(range(len(out)), key=lambda i: order.iloc[i])].reset_index(drop=True)


def paper_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{task_mix: table} with the paper's rows (seed, offline DPO, semi-online DPO s=100/10/5,
    online DPO, GRPO, then extensions) and one column per eval score with `_se`, plus the paper's
    headline numbers for the matching rows as `paper: <benchmark>` columns."""
    tables = {}
    for mix in task_mixes(frame):
        cells = seed_aggregate(with_seed_rows(frame, mix))
        trained = cells[cells["method"] != "seed"]
        scores = [s for s in headline_columns(cells) if trained[s].notna().any()] or headline_columns(cells)
        columns = ["label", "sweep", "n_seeds"] + [c for s in scores for c in (s, f"{s}_se")]
        table = cells[columns].reset_index(drop=True)
        for name, values in paper_columns(mix, table["label"]).items():
            table[name] = values
        tables[mix] = table
    return tables
