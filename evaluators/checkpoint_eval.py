"""Evaluate one checkpoint folder on benchmark suites (the building block of `harness eval`).

    evaluate_checkpoint(checkpoint_dir, suites, samples, *, data_paths=None, judge=None,
                        max_new_tokens=1024, batch_size=64, seed=0, temperature=0.6, top_p=0.9,
                        out_dir=None, device="cpu", show_progress=True) -> {suite: {metric: value}}
        Load one checkpoint, run each suite's `evaluate` hook, write every generation to
        `<out_dir>/<suite>/generations.jsonl` (default out_dir: `<checkpoint_dir>/eval`).

    check_checkpoint_dir(path) -> Path
        A folder `from_pretrained` can load (it holds config.json), or an AssetMissingError.

    write_jsonl(path, rows) -> Path
        One JSON object a line (generations files, per-sample scoring results).

A run's selected and final checkpoints, MLflow logging and offline scoring: evaluators/run.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluators.data import load_records
from evaluators.registry import EvalGenerator, EvalOptions, get_suite
from harness.errors import AssetMissingError, ConfigError

GENERATIONS_FILE = "generations.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    suites: list[str],
    samples: int,
    *,
    data_paths: dict[str, str] | None = None,
    judge: dict | None = None,
    max_new_tokens: int = 1024,
    batch_size: int = 64,
    seed: int = 0,
    temperature: float = 0.6,
    top_p: float = 0.9,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    backend: str = "hf",
    backend_options: dict | None = None,
    prompt_template: str | None = None,
    dtype: str = "auto",
) -> dict[str, dict[str, float]]:
    """Evaluate one checkpoint on each suite (see module docstring), sampling through `backend`."""
    from harness.rollout import make_generator, require_backend

    options = EvalOptions(
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        judge=dict(judge or {}),
        show_progress=show_progress,
        prompt_template=prompt_template,
    )
    checkpoint_dir = Path(checkpoint_dir)
    out_dir = Path(out_dir) if out_dir else checkpoint_dir / "eval"
    data_paths = data_paths or {}
    unknown = sorted(set(data_paths) - set(suites))
    if unknown:
        raise ConfigError(
            f"--data names suite(s) {unknown} that are not being evaluated (--suites {','.join(suites)})."
        )
    # Names, then all data: a typo or a malformed file fails before minutes of model loading
    # (or of building the tiny assets that tiny_math defaults to).
    resolved = [get_suite(name) for name in suites]
    require_backend(backend)
    loaded = [(suite, load_records(suite, data_paths.get(suite.name))) for suite in resolved]
    from harness.precision import resolve_dtype

    sampler = make_generator(
        backend,
        checkpoint_dir,
        **{
            **(backend_options or {}),
            "device": device,
            "batch_size": batch_size,
            "dtype": resolve_dtype(dtype, device),
        },
    )
    generator = EvalGenerator(backend=sampler, tokenizer=sampler.tokenizer, options=options)
    results: dict[str, dict[str, float]] = {}
    for suite, records in loaded:
        metrics, rows = suite.evaluate(suite, checkpoint_dir, records, generator, options)
        write_jsonl(out_dir / suite.name / GENERATIONS_FILE, rows)
        results[suite.name] = metrics
    return results


def check_checkpoint_dir(path: str | Path) -> Path:
    """A folder `from_pretrained` can load, or an AssetMissingError naming what is missing."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise AssetMissingError(
            f"{path}: is a folder but holds no config.json, so it is not a model checkpoint; "
            f"pass a checkpoint folder (e.g. runs/NAME/checkpoints/step_000050) or a run id."
        )
    return path
