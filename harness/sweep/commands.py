"""`harness sweep` and `harness status` as plain functions, plus their argparse arguments.

harness/cli.py wires them:

    p = sub.add_parser("sweep", help=...);  add_sweep_arguments(p);  p.set_defaults(func=sweep_from_args)
    p = sub.add_parser("status", help=...); add_status_arguments(p); p.set_defaults(func=status_from_args)

User errors raise HarnessError (the CLI prints them and exits 2). `sweep_command` returns 0 when
no cell is left failed, 1 when some are (rerun the same command to retry them), 130 when
interrupted.
"""

from __future__ import annotations

import argparse

from harness.errors import redact
from harness.sweep.gpus import torchrun_command, trial_gpu_split
from harness.sweep.runner import local_gpus, run_sweep
from harness.sweep.trial import trial_command, trial_dir_of
from harness.sweep.spec import load_sweep
from harness.tracking import sweep_tracking_uri
from harness.sweep.status import counts, dry_run_text, format_table, unit_rows
from harness.sweep.study import GRACE_S, HEARTBEAT_S, default_storage_url, open_study, storage_kind

STORAGE_HELP = (
    "Optuna storage shared by every worker: postgresql://user:pass@host/db (many machines), "
    "journal:PATH (a journal file), or sqlite:////abs/study.db; default: "
    "sqlite in the sweep's output_dir"
)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep YAML, e.g. sweeps/tiny_grid.yaml")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="trials to run at once from this process")
    parser.add_argument("--storage", default=None, help=STORAGE_HELP)
    parser.add_argument(
        "--launcher",
        choices=("local", "submitit"),
        default="local",
        help="local subprocesses, or submitit jobs (Slurm when available, else its local executor)",
    )
    parser.add_argument(
        "--gpus-per-trial",
        type=int,
        default=None,
        metavar="N",
        help="local launcher: give each running trial N of this node's GPUs of its own (training "
        "= N - the sweep file's local.generator_gpus; more than one training GPU runs "
        "under torchrun); refused when --jobs x N is more than the node has",
    )
    parser.add_argument(
        "--gpus",
        default=None,
        metavar="0,1,...",
        help="local launcher: the GPUs to share between trials (default: CUDA_VISIBLE_DEVICES, "
        "else every GPU `nvidia-smi -L` lists); alone, one GPU per trial",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the cell table and exit; creates nothing")
    parser.add_argument("--out-dir", default=None, help="override the sweep file's output_dir")
    parser.add_argument(
        "--enqueue-only",
        action="store_true",
        help="create the study, MLflow parent run and waiting trials, then exit (run once "
        "before starting workers on a server database)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")
    parser.add_argument(
        "--heartbeat-s",
        type=int,
        default=HEARTBEAT_S,
        help=f"seconds between a worker's heartbeats for its trials (default {HEARTBEAT_S})",
    )
    parser.add_argument(
        "--grace-s",
        type=int,
        default=GRACE_S,
        help=f"a trial whose worker sent no heartbeat for this long is taken over by another "
        f"worker, from its last checkpoint (default {GRACE_S}; RDB storages and journal files)",
    )


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep YAML, e.g. sweeps/tiny_grid.yaml")
    parser.add_argument("--storage", default=None, help=STORAGE_HELP)
    parser.add_argument("--out-dir", default=None, help="override the sweep file's output_dir")


def sweep_command(
    path: str,
    jobs: int = 1,
    storage: str | None = None,
    launcher: str = "local",
    dry_run: bool = False,
    out_dir: str | None = None,
    enqueue_only: bool = False,
    progress: bool = True,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
    gpus_per_trial: int | None = None,
    gpus: str | None = None,
) -> int:
    sweep = load_sweep(path, out_dir)
    url = storage or default_storage_url(sweep.output_dir)
    storage_kind(url)
    if not dry_run:  # every check that can run before a storage, folder or MLflow run exists
        local_gpus(sweep, launcher, jobs, gpus_per_trial, gpus, enqueue_only)  # GPUs first: no torch, no assets
        from harness.preflight import check_sweep_inputs

        check_sweep_inputs(sweep, this_machine=launcher == "local")
    if dry_run:
        first = sweep.cells[0]
        example = trial_command(sweep, first, 0, 0, [], trial_dir_of(sweep, first.key, 0), "<sweep-run-id>")
        split = trial_gpu_split(sweep, gpus_per_trial, gpus) if launcher == "local" else None
        placed = torchrun_command(example, split.train) if split else example
        print(dry_run_text(sweep, url, ["torchrun", *placed[3:]] if placed != example else ["harness", *example[3:]]))
        return 0
    result = run_sweep(
        sweep,
        jobs=jobs,
        storage=url,
        launcher=launcher,
        progress=progress,
        enqueue_only=enqueue_only,
        heartbeat_s=heartbeat_s,
        grace_s=grace_s,
        gpus_per_trial=gpus_per_trial,
        gpus=gpus,
    )
    print(format_table(result.rows))
    failed = [r["cell"] for r in result.rows if str(r["state"]).startswith("FAIL")]
    if failed and not result.interrupted:
        print(
            f"\n{len(failed)} cell(s) failed: {', '.join(failed)}. Each trial's log is in "
            f"{sweep.output_dir}/trials/<cell>/<slot>/trial.log; rerun the same command to retry them."
        )
    return result.exit_code


def status_command(path: str, storage: str | None = None, out_dir: str | None = None) -> int:
    sweep = load_sweep(path, out_dir)
    url = storage or default_storage_url(sweep.output_dir)
    handle = open_study(url, sweep.study_name, create=False)
    if handle is None:
        print(format_table(unit_rows(sweep, [])))
        print(f"\nno study {sweep.study_name!r} at {redact(url)} yet: run `harness sweep {path}` first.")
        return 0
    from harness.sweep.records import PARENT_ATTR, client_for

    attrs = handle.study.user_attrs
    client = client_for(sweep_tracking_uri(attrs.get("mlflow_tracking_uri")))
    trials = handle.trials()
    print(format_table(unit_rows(sweep, trials, client)))
    tally = counts(sweep, trials)
    print(
        f"\n{tally['done']}/{tally['total']} done, {tally['running']} running, {tally['failed']} failed, "
        f"{tally['waiting']} waiting. Study {sweep.study_name!r} at {url}; MLflow parent run "
        f"{attrs.get(PARENT_ATTR, '-')} in experiment {attrs.get('mlflow_experiment', sweep.experiment)!r}."
    )
    return 0


def sweep_from_args(args: argparse.Namespace) -> int:
    return sweep_command(
        args.sweep,
        jobs=args.jobs,
        storage=args.storage,
        launcher=args.launcher,
        dry_run=args.dry_run,
        out_dir=args.out_dir,
        enqueue_only=args.enqueue_only,
        progress=not args.no_progress,
        heartbeat_s=args.heartbeat_s,
        grace_s=args.grace_s,
        gpus_per_trial=args.gpus_per_trial,
        gpus=args.gpus,
    )


def status_from_args(args: argparse.Namespace) -> int:
    return status_command(args.sweep, storage=args.storage, out_dir=args.out_dir)
