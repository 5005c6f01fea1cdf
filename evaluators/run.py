"""The `harness eval` and `harness score` engines (plain functions; harness/cli.py parses flags).

Evaluating one checkpoint folder on suites (`evaluate_checkpoint`): evaluators/checkpoint_eval.py.

    evaluate_run(run_id_or_checkpoint, suites, samples, rule="len_norm", tracking_uri=None, *,
                 data_paths=None, evaluate_final=True, out_dir=None, **evaluate_checkpoint options)
        Given a checkpoint folder: evaluate_checkpoint on it. Given an MLflow run id: read the run's
        `checkpoints.json` artifact (or take `checkpoints`, the listing the trainer hands over within
        one `harness train`) and `val/*` metric history, pick the checkpoint with `rule`
        (harness/selection.py), evaluate it and the final checkpoint, and log to that run:
        metric `selected_step`, tag `selection_rule`, metrics `eval/<suite>/<metric>` (selected)
        and `eval_final/<suite>/<metric>` (final), artifacts `eval[_final]/<suite>/generations.jsonl`.
        The trainer calls this at the end of training when its config lists suites.
        `as_alternative=True` (`harness eval RUN_ID --rule R --as-alternative`): evaluate only the
        checkpoint `R` picks and log it under `eval_<R>/<suite>/<metric>` (`alternative_prefix`), with
        metric `selected_step_<R>` and tag `eval_<R>/settings`: the run's `eval/*`, `selected_step`
        and `selection_rule` stay as they were (how a report sets two selection rules side by side).

    evaluate_into_run(model, run_id, suites, samples, tracking_uri=None, *, out_dir, **options)
        Evaluate one model folder and log its scores to an existing run under `eval/` (the
        sweep's seed baseline runs `harness eval MODEL --log-run RUN_ID` as its own process).

    score_predictions(suite_name, data_path, predictions_path, *, out_path=None, options=None)
        -> {"suite", "score", "stderr", "n_problems", "n_samples", "results_path"}
        Grade an existing predictions JSONL ({"id", "output"} or {"id", "outputs"}) against a data
        file; score in percent (pass@1 for math suites). Per-sample results go to `out_path`
        (default: `<predictions>.scored.jsonl`).

Math metrics are `pass_at_1` / `pass_at_1_se` (percent); see evaluators/math_suites.py.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from evaluators.checkpoint_eval import GENERATIONS_FILE, check_checkpoint_dir, evaluate_checkpoint, write_jsonl
from evaluators.data import load_records, match_predictions
from evaluators.registry import EvalOptions, get_suite
from harness.errors import AssetMissingError, ConfigError, DataError
from harness.selection import DEFAULT_RULE, LISTING_FILE, CheckpointEntry, history_rows, read_listing, select_checkpoint


def parse_data_flags(values: list[str] | None) -> dict[str, str]:
    """`["math500=/x.jsonl", ...]` (repeated `--data suite=PATH`) -> {"math500": "/x.jsonl"}."""
    paths: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--data {value!r}: expected SUITE=PATH, e.g. --data math500=/data/math500.jsonl.")
        get_suite(name)  # unknown suite names fail here, listing the known ones
        paths[name] = path
    return paths


def score_predictions(
    suite_name: str,
    data_path: str | Path,
    predictions_path: str | Path,
    *,
    out_path: str | Path | None = None,
    options: EvalOptions | None = None,
) -> dict[str, Any]:
    """Grade a predictions file against a data file (see module docstring)."""
    suite = get_suite(suite_name)
    if suite.score_outputs is None:
        raise ConfigError(
            f"Suite {suite_name!r} cannot score a predictions file offline (it has no score_outputs hook)."
        )
    records = load_records(suite, data_path)
    outputs = match_predictions(suite, records, predictions_path)
    options = options or EvalOptions()
    metrics, rows = suite.score_outputs(suite, records, outputs, options)
    out_path = Path(out_path) if out_path else Path(predictions_path).with_suffix(".scored.jsonl")
    write_jsonl(out_path, rows)
    main = primary_metric(metrics)
    return {
        "suite": suite_name,
        "score": metrics[main],
        "stderr": metrics.get(f"{main}_se", float("nan")),
        "n_problems": len(records),
        "n_samples": sum(len(o) for o in outputs),
        "results_path": str(out_path),
    }


def primary_metric(metrics: dict[str, float]) -> str:
    """The headline metric: the first key that is neither an SE nor a count."""
    for key in metrics:
        if not key.endswith("_se") and not key.startswith("n_") and key != "mean_length":
            return key
    raise ValueError(f"no headline metric in {sorted(metrics)}")


def _is_checkpoint_dir(value: str) -> bool:
    return Path(value).is_dir()


def alternative_prefix(rule: str) -> str:
    """Where an alternative selection rule's scores go: `eval_<rule>` (`eval_final` is rule `final`'s)."""
    return f"eval_{rule}"


def _configured_suites(config: dict | None, where: str) -> list[str]:
    """The suites a run's own config names (`eval.suites`), for `harness eval` without --suites."""
    suites = ((config or {}).get("eval") or {}).get("suites") or []
    if not suites:
        raise ConfigError(
            f"{where}: no --suites given and its config names none (eval.suites is "
            f"{suites!r}); expected e.g. --suites tiny_math,tiny_chat."
        )
    for name in suites:
        get_suite(name)
    return list(suites)


def evaluate_run(
    run_id_or_checkpoint: str,
    suites: list[str],
    samples: int | None = None,
    rule: str = DEFAULT_RULE,
    tracking_uri: str | None = None,
    *,
    data_paths: dict[str, str] | None = None,
    evaluate_final: bool = True,
    out_dir: str | Path | None = None,
    judge: dict | None = None,
    show_progress: bool = True,
    report=print,
    backend: str = "hf",
    backend_options: dict | None = None,
    as_alternative: bool = False,
    checkpoints: list[CheckpointEntry] | None = None,
    **flags: Any,
) -> dict[str, Any]:
    """Evaluate a checkpoint folder, or a run's selected and final checkpoints (module docstring).

    Sampling settings (`samples` and `flags`: temperature, top_p, max_new_tokens, seed, device,
    batch_size, prompt_template; None = not given) are resolved by evaluators.settings: a given
    value, else the run's config, else the default. They are reported with `report` and, for a
    run, logged as its tag `harness.eval_settings`.

    `checkpoints`: the run's checkpoint listing when the caller holds it (the trainer, in the same
    process); else it is read from the run's `checkpoints.json` artifact.

    Returns {"checkpoint", "eval", "settings"} for a folder; for a run {"run_id", "rule",
    "selected_step", "selected_path", "final_step", "final_path", "settings", "eval": {suite:
    metrics}, "eval_final": {...}}.
    """
    from harness.selection import get_rule, negative_reward_warning
    from evaluators.settings import describe, read_config_next_to, read_run_config, resolve_eval_settings

    for name in suites:
        get_suite(name)  # a typo fails now, not after checkpoint selection and model loading
    get_rule(rule)
    given = {"samples": samples, **flags}
    if _is_checkpoint_dir(run_id_or_checkpoint):
        if as_alternative:
            raise ConfigError(
                f"--as-alternative logs rule {rule!r}'s pick into a run, but {run_id_or_checkpoint!r} is "
                f"a checkpoint folder; pass the training run's MLflow id."
            )
        check_checkpoint_dir(run_id_or_checkpoint)
        config = read_config_next_to(run_id_or_checkpoint)
        suites = suites or _configured_suites(config, run_id_or_checkpoint)
        settings = resolve_eval_settings(given, config)
        report(f"eval settings: {describe(settings)}")
        results = evaluate_checkpoint(
            run_id_or_checkpoint,
            suites,
            data_paths=data_paths,
            out_dir=out_dir,
            judge=judge,
            show_progress=show_progress,
            backend=backend,
            backend_options=backend_options,
            **settings,
        )
        return {"checkpoint": str(run_id_or_checkpoint), "eval": results, "settings": settings}
    if any(sep in run_id_or_checkpoint for sep in ("/", "\\")) or run_id_or_checkpoint.startswith((".", "~")):
        state = "is a file" if Path(run_id_or_checkpoint).exists() else "does not exist"
        raise AssetMissingError(
            f"{run_id_or_checkpoint}: {state}; expected a checkpoint folder (holding config.json) or an MLflow run id."
        )
    from mlflow.tracking import MlflowClient

    from harness.tracking_uri import check_tracking_uri

    check_tracking_uri(tracking_uri, "--tracking-uri", must_exist=True)
    client = MlflowClient(tracking_uri)
    run_id = run_id_or_checkpoint
    run = _get_run(client, run_id, tracking_uri)
    config = read_run_config(client, run_id)
    suites = suites or _configured_suites(config, f"run {run_id}")
    settings = resolve_eval_settings(given, config)
    if checkpoints is None:
        checkpoints = _read_checkpoints(client, run_id)
    elif not checkpoints:
        raise DataError(f"Run {run_id} saved no checkpoint, so there is nothing to evaluate.")
    history = _val_history(client, run) or history_rows(checkpoints)
    step, path = select_checkpoint(history, checkpoints, rule)
    final_step, final_path = select_checkpoint(history, checkpoints, "final")
    for target in {path, final_path}:
        _resolve_checkpoint(target, run)  # a moved checkpoint fails before any generation
    report(f"eval settings: {describe(settings)}")
    if as_alternative:
        return _evaluate_alternative(
            client,
            run,
            rule,
            step,
            path,
            suites,
            settings,
            out_dir,
            dict(
                data_paths=data_paths,
                judge=judge,
                show_progress=show_progress,
                backend=backend,
                backend_options=backend_options,
            ),
        )
    summary: dict[str, Any] = {
        "run_id": run_id,
        "rule": rule,
        "selected_step": step,
        "final_step": final_step,
        "settings": settings,
    }
    client.set_tag(run_id, "selection_rule", rule)
    client.set_tag(run_id, "harness.eval_settings", describe(settings))
    warning = negative_reward_warning(history, rule)
    if warning:
        import logging

        logging.getLogger("harness.eval").warning("run %s: %s", run_id, warning)
        client.set_tag(run_id, "harness.selection_warning", warning)
    client.log_metric(run_id, "selected_step", step)
    with tempfile.TemporaryDirectory(prefix="harness-eval-") as scratch:
        base = Path(out_dir) if out_dir else Path(scratch)
        targets = [("eval", step, path)] + ([("eval_final", final_step, final_path)] if evaluate_final else [])
        done: dict[int, tuple[dict, Path]] = {}
        for prefix, target_step, target_path in targets:
            folder = _resolve_checkpoint(target_path, run)
            summary["selected_path" if prefix == "eval" else "final_path"] = str(folder)
            if target_step not in done:  # selected == final: evaluate once, log under both prefixes
                step_out = base / f"step_{target_step}"
                done[target_step] = (
                    evaluate_checkpoint(
                        folder,
                        suites,
                        data_paths=data_paths,
                        out_dir=step_out,
                        judge=judge,
                        show_progress=show_progress,
                        backend=backend,
                        backend_options=backend_options,
                        **settings,
                    ),
                    step_out,
                )
            results, step_out = done[target_step]
            log_results(client, run_id, prefix, results, step_out)
            summary[prefix] = results
    return summary


def _evaluate_alternative(
    client,
    run,
    rule: str,
    step: int,
    path: str,
    suites: list[str],
    settings: dict,
    out_dir: str | Path | None,
    options: dict,
) -> dict[str, Any]:
    """Evaluate the checkpoint `rule` picks and log it under `alternative_prefix(rule)` only."""
    from evaluators.settings import describe

    run_id, prefix = run.info.run_id, alternative_prefix(rule)
    folder = _resolve_checkpoint(path, run)
    with tempfile.TemporaryDirectory(prefix="harness-eval-") as scratch:
        step_out = (Path(out_dir) if out_dir else Path(scratch)) / f"step_{step}"
        results = evaluate_checkpoint(folder, suites, out_dir=step_out, **options, **settings)
        client.log_metric(run_id, f"selected_step_{rule}", step)
        client.set_tag(run_id, f"{prefix}/settings", describe(settings))
        log_results(client, run_id, prefix, results, step_out)
    return {
        "run_id": run_id,
        "rule": rule,
        "alternative": True,
        "selected_step": step,
        "selected_path": str(folder),
        "settings": settings,
        prefix: results,
    }


def evaluate_into_run(
    model: str | Path,
    run_id: str,
    suites: list[str],
    samples: int,
    tracking_uri: str | None = None,
    *,
    out_dir: str | Path,
    **eval_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate one model folder and log its scores to an existing MLflow run (as `eval/...`).

    `harness eval MODEL --log-run RUN_ID` (the sweep's seed baseline, launched as its own
    process): metrics `eval/<suite>/<metric>` and artifacts `eval/<suite>/generations.jsonl`,
    as for a trained run's selected checkpoint. Returns {"checkpoint", "run_id", "eval"}.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    _get_run(client, run_id, tracking_uri)  # a wrong id fails before the model loads
    results = evaluate_checkpoint(model, suites, samples, out_dir=out_dir, **eval_kwargs)
    log_results(client, run_id, "eval", results, Path(out_dir))
    return {"checkpoint": str(model), "run_id": run_id, "eval": results}


def _get_run(client, run_id: str, tracking_uri: str | None):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(
            f"{run_id!r} is neither a checkpoint folder nor a run id in the MLflow store "
            f"{tracking_uri or '(default tracking URI)'}; pass a folder holding config.json and "
            f"model weights, or a training run's id (and --tracking-uri)."
        ) from None


def _read_checkpoints(client, run_id: str) -> list[CheckpointEntry]:
    """The run's checkpoints.json artifact (harness.selection.read_listing)."""
    with tempfile.TemporaryDirectory(prefix="harness-ckpt-") as scratch:
        try:
            local = client.download_artifacts(run_id, LISTING_FILE, scratch)
        except Exception:  # noqa: BLE001 - any failure means the same thing to the user
            raise DataError(
                f"Run {run_id} has no {LISTING_FILE} artifact, so there is nothing to evaluate; "
                f"the trainer writes it when it saves checkpoints (checkpoint.every)."
            ) from None
        entries = read_listing(local, f"Run {run_id}: its {LISTING_FILE} artifact")
    if not entries:
        raise DataError(f"Run {run_id}: its {LISTING_FILE} artifact lists no checkpoint; nothing to evaluate.")
    return entries


def _val_history(client, run) -> list[dict]:
    """Every `val/*` metric's full history as rows {"step", key: value}."""
    rows = []
    for key in run.data.metrics:
        if key.startswith("val/"):
            rows.extend({"step": m.step, key: m.value} for m in client.get_metric_history(run.info.run_id, key))
    return rows


def _resolve_checkpoint(path: str, run) -> Path:
    """The checkpoint folder: as written, else relative to the run's logged output_dir."""
    candidates = [Path(path)]
    for key, value in run.data.params.items():
        if key == "output_dir" or key.endswith(".output_dir"):
            candidates.append(Path(value) / path)
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise AssetMissingError(
        f"checkpoints.json of run {run.info.run_id} points at {path!r}, but no checkpoint folder "
        f"(with config.json) is there (tried {', '.join(map(str, candidates))}); the checkpoint was "
        f"moved or deleted. Evaluate a folder directly with `harness eval PATH`."
    )


def log_results(client, run_id: str, prefix: str, results: dict[str, dict[str, float]], out_dir: Path) -> None:
    """Each suite's metrics as `<prefix>/<suite>/<metric>`, and its generations file as an artifact.

    A string value (alpaca_eval's `lc_method`) is logged as the tag `<prefix>/<suite>/<name>`."""
    # Non-finite values (an SE over a single problem) are left out rather than logged as NaN.
    for suite, metrics in results.items():
        for name, value in metrics.items():
            if isinstance(value, str):
                client.set_tag(run_id, f"{prefix}/{suite}/{name}", value)
            elif isinstance(value, (int, float)) and math.isfinite(value):
                client.log_metric(run_id, f"{prefix}/{suite}/{name}", float(value))
        generations = out_dir / suite / GENERATIONS_FILE
        if generations.is_file():
            client.log_artifact(run_id, str(generations), artifact_path=f"{prefix}/{suite}")


def summary_lines(results: dict[str, dict[str, float]], label: str = "") -> list[str]:
    """Human-readable lines, one per suite: '[selected] math500  pass_at_1 = 53.70 ± 2.10  (500 problems)'."""
    lines, prefix = [], f"[{label}] " if label else ""
    for suite, metrics in results.items():
        main = primary_metric(metrics)
        se = metrics.get(f"{main}_se", float("nan"))
        count = metrics.get("n_problems")
        extra = f"  ({int(count)} problems)" if count is not None else ""
        if "lc_method" in metrics:
            extra += f"  [LC {metrics['lc_method']}]"
        lines.append(f"{prefix}{suite:<12} {main} = {metrics[main]:.2f} ± {se:.2f}{extra}")
    return lines
