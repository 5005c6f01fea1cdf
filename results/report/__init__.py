"""`harness report SWEEP.yaml --out DIR`: the paper's tables and figures, regenerated from MLflow.

    path = report_command("sweeps/tiny_grid.yaml", "outputs/tiny_grid/report")

reads the sweep's experiment through the results layer (MLflow only: run metrics, metric
histories and the `checkpoints.json` artifact) and writes `DIR/report.md` plus PNG figures under
`DIR/figures/`. The report holds, per task mix, a results table in the layout of the paper's
Tables 1-3 (seed row first, then offline DPO, semi-online DPO s=100/10/5, online DPO, GRPO,
extensions; mean ± SE over seeds), a comparison with the paper's numbers where the suite is a
real benchmark, the compute split per phase (the efficiency comparison the paper gives only in
words), what length-normalised checkpoint selection changed, and observations with numbers
phrased only from signs and 2-SE margins (no hard-coded verdicts).

Thin renderers: `markdown.py` (report.md), `figures.py` (PNGs), `observations.py` (sentences),
`command.py` (the entry point). Which runs count is `results.sweep_results`'s rule.
"""

from results.report.command import report_command

__all__ = ["report_command"]
