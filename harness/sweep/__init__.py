"""Sweeps: a grid of cells (method x s x task mix x seed, ...) run as Optuna trials.

    spec.py      the sweep file schema and cell expansion (validated through harness.config)
    grid.py      the grid's axes, exclusions and cell keys
    study.py     Optuna storage, enqueue-once, safe claims across workers, orphans
    launch.py    local subprocess and submitit launchers; child.py, the per-trial process shim
    objective.py the selected checkpoint's objective; per-cell sampling and pruning
    records.py   MLflow parent run, child tags, failure logs, summary.csv
    runner.py    run_sweep: flags, study, MLflow parent run;  coordinator.py  the loop over trials
    trial.py     one trial's folder, command, exit, and its record while it runs
    status.py    tables and the progress line
    commands.py  `harness sweep` / `harness status` as functions + argparse arguments

This package never imports the trainer: every trial is a `harness train` process.
"""
