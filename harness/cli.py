"""The `harness` command line: the only place that parses arguments.

    harness prepare                      build (or find) the embedded tiny assets
    harness train CONFIG [k.path=v ...]  one training run, logged to MLflow
    harness bench [CONFIG]               time per phase of a short tiny run
    harness sweep SWEEP.yaml             the method x s x task-mix grid through Optuna
    harness status SWEEP.yaml            one row per cell: state, progress, objective, run id
    harness eval RUN_ID|CHECKPOINT       score a run's selected and final checkpoints
    harness score --suite S --data F --predictions P   re-score existing generations
    harness leaderboard                  the Streamlit leaderboard over MLflow
    harness report SWEEP.yaml --out DIR  the paper's tables and figures from MLflow
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

from harness.errors import HarnessError

log = logging.getLogger("harness")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import transformers
    transformers.utils.logging.disable_progress_bar()  # per-shard bars drown the training log
    transformers.utils.logging.set_verbosity_error()
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "filelock", "datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        if "=" not in pair:
            raise HarnessError(f"--tag {pair!r}: expected KEY=VALUE.")
        key, value = pair.split("=", 1)
        tags[key] = value
    return tags


# -- commands -------------------------------------------------------------------------------


def cmd_prepare(args: argparse.Namespace) -> int:
    from harness.tiny import prepare_main
    prepare_main(cache_root=args.cache_dir, force=args.force)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from harness.config import load_run_config
    from harness.runner import run_training
    cfg = load_run_config(args.config, args.overrides)
    result = run_training(cfg, resume=args.resume, parent_run_id=args.parent_run_id, tags=_tags(args.tag),
                          use_mlflow=not args.no_mlflow, progress=not args.no_progress)
    print(json.dumps({"run_id": result.run_id, "output_dir": str(result.output_dir),
                      "final_val": result.final_val}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import run_bench
    run_bench(args.config, args.overrides, steps=args.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=textwrap.dedent(__doc__.split("\n\n", 1)[1]))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="build or find the embedded tiny model, tasks and reward model")
    p.add_argument("--cache-dir", default=None, help="cache root (default $HARNESS_CACHE or ~/.cache/harness)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="one training run (DPO or GRPO at any sync_every)")
    p.add_argument("config", help="run config YAML, e.g. sweeps/runs/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. method=grpo sync_every=inf")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("--parent-run-id", default=None, help="MLflow parent run (set by sweeps)")
    p.add_argument("--tag", action="append", default=[], help="extra MLflow tag KEY=VALUE (repeatable)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="time per phase (generate, score, train, sync) of a short run")
    p.add_argument("config", nargs="?", default=None, help="run config (default sweeps/runs/tiny.yaml)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps to time")
    p.set_defaults(func=cmd_bench)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args) or 0
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
