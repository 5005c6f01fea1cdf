"""The `harness` command line: the only place that parses arguments.

harness prepare                      install (or find) the embedded tiny assets
harness train CONFIG [k.path=v ...]  one training run, logged to MLflow
    (sharded: torchrun --standalone --nproc-per-node N -m harness train CONFIG train.parallel=fsdp)
harness plan CONFIG --gpus N         per-GPU memory table of a config, before loading anything
harness bench [CONFIG]               time per phase of a short tiny run
harness bench CONFIG --sync-every 1,10 rollout.placement=worker   per-step time at each s
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
import shlex
import sys
import textwrap

import yaml
from pathlib import Path

from harness.cli_arguments import (
    add_bench_arguments,
    add_eval_arguments,
    add_leaderboard_arguments,
    add_plan_arguments,
    add_prepare_arguments,
    add_report_arguments,
    add_score_arguments,
    add_train_arguments,
)
from harness.errors import HarnessError, redact, redact_logs

log = logging.getLogger("harness")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    redact_logs()
    _quiet_transformers()
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "filelock", "datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _quiet_transformers() -> None:
    """transformers' per-shard progress bars and warnings drown the training log. Set through its
    environment variables (read when it is imported, and inherited by trial and rank processes) so
    that a command that never loads a model, or fails on bad input, does not import it (~2 s)."""
    if "transformers" in sys.modules:  # imported already (an in-process caller): set it directly
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        if "=" not in pair:
            raise HarnessError(f"{pair!r}: expected KEY=VALUE.")
        key, value = pair.split("=", 1)
        tags[key] = value
    return tags


def check_output_folder(path: str | None, flag: str) -> None:
    """An output folder flag: not a file, and not under one (checked before any work)."""
    if path is None:
        return
    existing = Path(path)
    if existing.exists() and not existing.is_dir():
        raise HarnessError(f"{flag} {path}: is a file; expected a folder (existing or new).")
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HarnessError(f"{flag} {path}: lies under the file {existing}; expected a folder path.")


# -- commands -------------------------------------------------------------------------------


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.ship and not args.rebuild:
        raise HarnessError(
            "harness prepare --ship: ships a build trained on this machine, so it needs --rebuild too "
            "(the installed assets already are the shipped ones)."
        )
    from harness.tiny import prepare_main

    prepare_main(cache_root=args.cache_dir, force=args.force, rebuild=args.rebuild, ship=args.ship)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from harness.config import load_run_config

    cfg = load_run_config(args.config, args.overrides)  # a bad config fails before torch is imported
    from harness.distributed import launch_env
    from harness.training_run import run_training

    source = args.config + (f" (with overrides {' '.join(args.overrides)})" if args.overrides else "")
    result = run_training(
        cfg,
        resume=args.resume,
        parent_run_id=args.parent_run_id,
        tags=_tags(args.tag),
        use_mlflow=not args.no_mlflow,
        progress=not args.no_progress,
        source=source,
    )
    if launch_env()[0] == 0:
        print(
            json.dumps({"run_id": result.run_id, "output_dir": str(result.output_dir), "final_val": result.final_val})
        )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.config import load_run_config
    from harness.train.plan import plan_memory
    from harness.train.plan_report import default_capacity_gib, format_plan

    cfg = load_run_config(args.config, args.overrides)
    capacity = args.gpu_memory_gib or default_capacity_gib()
    plan = plan_memory(cfg, args.gpus, capacity, generator_gpus=args.generator_gpus, prompt_tokens=args.prompt_tokens)
    print(format_plan(plan))
    return 0 if plan.fits else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import compare, parse_sync_list, run_bench

    if args.repeats < 1 or args.steps < 1:
        raise HarnessError(f"harness bench: --steps {args.steps} --repeats {args.repeats}: both must be at least 1.")
    if args.sync_every:
        compare(
            args.config,
            args.overrides,
            parse_sync_list(args.sync_every),
            steps=args.steps,
            repeats=args.repeats,
            as_json=args.json,
        )
    else:
        report = run_bench(args.config, args.overrides, steps=args.steps)
        if args.json:
            print(json.dumps({k: v if v != float("inf") else "inf" for k, v in report.items()}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from evaluators.run import evaluate_into_run, evaluate_run, parse_data_flags, summary_lines
    from harness.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    if args.config:
        # --config RUN.yaml: the run config's eval section (the sweep's seed baseline, its own process)
        from harness.eval_config import eval_settings

        target, suites, settings = eval_settings(args.config, args.target, args.suites)
        samples = settings.pop("samples")
        if args.log_run:
            if not args.out:
                raise HarnessError("harness eval --log-run needs --out DIR (where the generations are written).")
            summary = evaluate_into_run(
                target,
                args.log_run,
                suites,
                samples,
                tracking_uri=uri,
                out_dir=args.out,
                show_progress=False,
                **settings,
            )
        else:
            summary = evaluate_run(
                target,
                suites,
                samples,
                rule=args.rule,
                tracking_uri=uri,
                out_dir=args.out,
                as_alternative=args.as_alternative,
                **settings,
            )
    else:
        if args.log_run:
            raise HarnessError("harness eval --log-run needs --config RUN.yaml (whose eval settings are used).")
        suites = [name.strip() for name in (args.suites or "").split(",") if name.strip()]
        if args.suites is not None and not suites:
            raise HarnessError(
                f"--suites {args.suites!r} names no suite; expected e.g. --suites tiny_math,tiny_chat "
                f"(or leave it out: the run's own eval.suites are used)."
            )
        judge = {"name": "reward_model"}
        for key, value in _tags(args.judge).items():
            try:
                judge[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                judge[key] = value
        summary = evaluate_run(
            args.target,
            suites,
            args.samples,
            rule=args.rule,
            tracking_uri=uri,
            data_paths=parse_data_flags(args.data),
            judge=judge,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
            out_dir=args.out,
            as_alternative=args.as_alternative,
        )
    for key in dict.fromkeys(("eval", "eval_final", f"eval_{args.rule}")):
        if key in summary:
            label = "selected" if key == "eval" and "selected_step" in summary else key
            for line in summary_lines(summary[key], label):
                print(line)
    print(json.dumps(summary, default=str))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from evaluators.run import score_predictions

    if args.out and Path(args.out).is_dir():
        raise HarnessError(f"--out {args.out}: is a directory; expected the path of the per-sample results file.")
    result = score_predictions(args.suite, args.data, args.predictions, out_path=args.out)
    if not args.json:
        print(
            f"{result['suite']}: {result['score']:.2f} ± {result['stderr']:.2f} "
            f"({result['n_problems']} problems, {result['n_samples']} samples) -> {result['results_path']}"
        )
    print(json.dumps({k: result[k] for k in ("suite", "score", "stderr", "n_problems", "n_samples")}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.tracking_uri import check_tracking_uri
    from results.report import report_command
    from harness.tracking import default_tracking_uri

    check_tracking_uri(args.tracking_uri or default_tracking_uri(), "--tracking-uri", must_exist=True)
    check_output_folder(args.out, "--out")
    if args.sweep is not None:
        from harness.config import read_yaml

        read_yaml(args.sweep)  # missing, a directory, not UTF-8, empty: said before MLflow is asked
    path = report_command(args.sweep, args.out, tracking_uri=args.tracking_uri, experiment=args.experiment)
    uri = args.tracking_uri or default_tracking_uri()
    print(f"report: {path}")
    print(f"leaderboard: harness leaderboard --tracking-uri {shlex.quote(uri)}   (then open http://localhost:8501)")
    print(f"MLflow runs: mlflow ui --backend-store-uri {shlex.quote(uri)}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import subprocess
    from harness.tracking_uri import check_tracking_uri
    from harness.tracking import default_tracking_uri

    if not 1 <= args.port <= 65535:
        raise HarnessError(f"--port {args.port}: expected a TCP port in 1..65535 (default 8501).")
    check_tracking_uri(args.tracking_uri or default_tracking_uri(), "--tracking-uri", must_exist=True)
    # The dashboard is a program of its own (it reads MLflow through the results layer); the
    # harness starts it as a process and never imports it.
    command = [
        sys.executable,
        "-m",
        "dashboard.launch",
        "--tracking-uri",
        args.tracking_uri or default_tracking_uri(),
        "--port",
        str(args.port),
        "--address",
        args.address,
    ] + (["--mlflow-ui-url", args.mlflow_ui_url] if args.mlflow_ui_url else [])
    host = "localhost" if args.address == "127.0.0.1" else args.address
    log.info("leaderboard on http://%s:%d (listening on %s; Ctrl-C to stop)", host, args.port, args.address)
    return subprocess.run(command).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(__doc__.split("\n\n", 1)[1]),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="install (or find) the embedded tiny model, tasks and reward model")
    add_prepare_arguments(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="one training run (DPO or GRPO at any sync_every)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "plan",
        help="per-GPU memory table of a config (weights, grads, Adam, reference, "
        "generator, activations, reward model) and whether it fits",
    )
    add_plan_arguments(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("bench", help="time per phase (generate, score, train, sync) of a short run")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    from harness.sweep.commands import add_status_arguments, add_sweep_arguments, status_from_args, sweep_from_args

    p = sub.add_parser("sweep", help="run the method x s x task-mix grid of a sweep file through Optuna")
    add_sweep_arguments(p)
    p.set_defaults(func=sweep_from_args)

    p = sub.add_parser("status", help="one row per cell of a sweep: state, progress, objective, MLflow run")
    add_status_arguments(p)
    p.set_defaults(func=status_from_args)

    p = sub.add_parser("eval", help="evaluate a run's selected and final checkpoints (or one checkpoint folder)")
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("score", help="re-score an existing predictions file")
    add_score_arguments(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("report", help="the paper's tables and figures for a finished sweep, from MLflow")
    add_report_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("leaderboard", help="the Streamlit leaderboard over MLflow")
    add_leaderboard_arguments(p)
    p.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "func", None) is cmd_bench and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra  # `harness bench CONFIG --sync-every 1,10 rollout.placement=worker`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    try:
        return args.func(args) or 0
    except HarnessError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
