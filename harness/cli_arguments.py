"""The flags of each `harness` command, one function per command (harness/cli.py makes the
subcommands, wires each to its `cmd_*` function and parses the command line).

    p = sub.add_parser("train", help=...);  add_train_arguments(p);  p.set_defaults(func=cmd_train)

`harness sweep` and `harness status` take theirs from harness/sweep/commands.py.
"""

from __future__ import annotations

import argparse


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness prepare`."""
    parser.add_argument("--cache-dir", default=None, help="cache root (default $HARNESS_CACHE or ~/.cache/harness)")
    parser.add_argument("--force", action="store_true", help="make them again even if cached")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="train them from the recipe on this machine instead of installing the shipped build",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help="with --rebuild: replace the package's shipped files (harness/tiny/shipped) with this build",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness train`."""
    parser.add_argument("config", help="run config YAML, e.g. sweeps/runs/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. method=grpo sync_every=inf")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    parser.add_argument("--parent-run-id", default=None, help="MLflow parent run (set by sweeps)")
    parser.add_argument("--tag", action="append", default=[], help="extra MLflow tag KEY=VALUE (repeatable)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness plan`."""
    parser.add_argument("config", help="run config YAML, e.g. sweeps/runs/llama31_8b.yaml")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    parser.add_argument("--gpus", type=int, default=1, help="trainer GPUs (FSDP ranks when train.parallel=fsdp)")
    parser.add_argument(
        "--generator-gpus",
        type=int,
        default=0,
        help="GPUs of a separate generator (worker placement, e.g. vLLM); 0 = as the config says",
    )
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="memory per GPU (default: this machine's)")
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        help="planning allowance for prompt length (default: data.max_prompt_tokens, else 512)",
    )


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness bench`."""
    parser.add_argument("config", nargs="?", default=None, help="run config (default sweeps/runs/tiny.yaml)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps to time")
    parser.add_argument(
        "--sync-every",
        default=None,
        metavar="LIST",
        help="comparison mode: run each sync interval, e.g. 1,5,10,inf, and print their per-step times",
    )
    parser.add_argument("--repeats", type=int, default=1, help="comparison mode: interleaved repeats of every setting")
    parser.add_argument(
        "--json", action="store_true", help="last line: the result as JSON (comparison: a list, one object per setting)"
    )


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness eval`."""
    parser.add_argument("target", help="MLflow run id, or a checkpoint folder")
    parser.add_argument(
        "--suites",
        default=None,
        help="comma-separated suites, e.g. tiny_math,tiny_chat or math500,amc23 "
        "(default: the run's, or --config's, eval.suites)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="samples per problem (default: the run's eval.samples, else 4; the paper uses 50)",
    )
    parser.add_argument("--rule", default="len_norm", help="checkpoint selection rule: len_norm, max_val_reward, final")
    parser.add_argument(
        "--as-alternative",
        action="store_true",
        help="evaluate only the checkpoint --rule picks and log it under eval_<rule>/ (the run's eval/* "
        "and selected_step stay): e.g. --rule max_val_reward beside the length-normalized pick",
    )
    parser.add_argument("--data", action="append", default=[], metavar="SUITE=PATH", help="local data file for a suite")
    parser.add_argument(
        "--judge",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pairwise judge option, e.g. name=openai_compatible base_url=http://host:8000/v1 model=M "
        "(default name=reward_model, the tiny reward model)",
    )
    # None = inherit from the run's config (evaluators/settings.py), else the default shown
    parser.add_argument("--temperature", type=float, default=None, help="default: the run's eval.temperature, else 0.6")
    parser.add_argument("--top-p", type=float, default=None, help="default: the run's eval.top_p, else 0.9")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="default: the run's eval.max_new_tokens, else its train.max_new_tokens, else 64",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's rollout.batch_size, else 256")
    parser.add_argument("--seed", type=int, default=None, help="default: the run's seed, else 0")
    parser.add_argument("--device", default=None, help="default: the run's model.device, else cpu")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument(
        "--out", default=None, help="folder for generations (default: a temp folder; always logged to MLflow)"
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="RUN.yaml",
        help="take suites, samples and the sampling, judge, data and device settings from this run "
        "config (its eval section); TARGET `tiny` is then the embedded seed policy",
    )
    parser.add_argument(
        "--log-run",
        default=None,
        metavar="RUN_ID",
        help="evaluate TARGET as one model folder and log its scores to this existing MLflow run "
        "under eval/ (how a sweep logs its seed-model baseline)",
    )


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness score`."""
    parser.add_argument("--suite", required=True)
    parser.add_argument("--data", required=True, help="the benchmark's data file in its published format")
    parser.add_argument("--predictions", required=True, help='JSONL of {"id", "output"} or {"id", "outputs": [...]}')
    parser.add_argument("--out", default=None, help="per-sample results (default PREDICTIONS.scored.jsonl)")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary line")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness report`."""
    parser.add_argument("sweep", nargs="?", default=None, help="the sweep file (names the MLflow experiment)")
    parser.add_argument("--out", required=True, help="output folder for report.md and figures/")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the sweep's)")


def add_leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
    """`harness leaderboard`."""
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--mlflow-ui-url", default=None, help="base URL of an MLflow UI for run links")
