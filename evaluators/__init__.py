"""Evaluation: benchmark suites by name and the eval/score engines (checkpoint selection: harness.selection).

- `evaluators.registry`: `Suite`, `register_suite`, `get_suite`, `list_suites`, `EvalOptions`.
- `evaluators.math_suites`: math500, amc23, numinamath, tiny_math (pass@1 with Math-Verify).
- `evaluators.pairwise`, `evaluators.arena_hard`: AlpacaEval LC and Arena-Hard (judged pairwise suites).
- `evaluators.settings`: which sampling settings an evaluation uses (flags > run config > defaults).
- `evaluators.checkpoint_eval`: `evaluate_checkpoint` (one checkpoint folder on suites).
- `evaluators.run`: `evaluate_run`, `evaluate_into_run`, `score_predictions` (the CLI engines).
- `evaluators/lm_eval_tasks/`: the math suites as lm-evaluation-harness tasks
  (`lm_eval --include_path evaluators/lm_eval_tasks --tasks harness_math500 ...`).
"""

from evaluators.registry import EvalOptions, Suite, get_suite, list_suites, register_suite

__all__ = ["EvalOptions", "Suite", "get_suite", "list_suites", "register_suite"]
