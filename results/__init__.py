"""The results layer: MLflow -> pandas frames -> tables and figures.

Both `harness report` (results/report/) and the dashboard (dashboard/) read runs through it; nothing
in training imports it. It reads MLflow only (no torch, no model code), so it runs on a laptop
against a remote tracking server.

    store.py          connect, list the sweeps, page through runs (TrackingUnavailable when unreachable)
    runs.py           one row per training run: axes as logged, latest metrics (`runs_frame`)
    labels.py         the paper's row names and order ("semi-online DPO s=10")
    metrics.py        what a metric column is: eval score, spread, count, step-wise; headline per suite
    aggregate.py      mean ± SE over seeds per cell; the paper-layout tables
    paper.py          the paper's headline numbers, for side-by-side columns
    artifacts.py      histories, params, generations.jsonl, checkpoints.json of a run
    sweep_results.py  the runs of one sweep that count, with their histories (what the report reads)
    numbers.py        the report's frames: compute per phase, selected vs final, curves over seeds
    formatting.py     how numbers are written in tables
    errors.py         the errors raised here (the dashboard catches them from this module)
    report/           `harness report`: markdown and figures rendered from the frames above

Importing this package imports none of its modules (each is imported by name).
"""
