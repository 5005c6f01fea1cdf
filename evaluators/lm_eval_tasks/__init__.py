"""lm-evaluation-harness task definitions (YAML) and their hooks (utils.py); a package only so
that they ship with the wheel. Use with `lm_eval --include_path evaluators/lm_eval_tasks`."""
