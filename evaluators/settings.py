"""Which sampling settings `harness eval` uses: a flag, else the run's config, else the default.

    resolve_eval_settings(flags, run_config) -> {"samples", "temperature", "top_p", "max_new_tokens",
                                                 "seed", "device", "batch_size", "prompt_template"}
    run_eval_options(cfg) -> evaluate_checkpoint keyword arguments of a typed run config

`run_config` is the run's config as plain data (its `config.yaml`: the MLflow artifact of a run
id, or `<output_dir>/config.yaml` two folders above a checkpoint folder), or None. From it come
`eval.samples`, `eval.temperature`, `eval.top_p`, `eval.max_new_tokens` (else
`train.max_new_tokens`), `seed`, `model.device`, `rollout.batch_size`,
`data.math_prompt_template` and `eval.dtype` (the evaluated model's dtype; auto: bf16 on CUDA). A flag the user gave (not None) always wins. The settings used are
printed and logged on the run (tag `harness.eval_settings`), so a cut-short answer is never silent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "samples": 4,
    "temperature": 0.6,
    "top_p": 0.9,
    "max_new_tokens": 64,
    "seed": 0,
    "device": "cpu",
    "batch_size": 256,
    "prompt_template": None,
    "dtype": "auto",
}


def _get(data: dict | None, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def settings_from_run_config(config: dict | None) -> dict[str, Any]:
    """The eval settings a run's config implies (only those it sets)."""
    if not isinstance(config, dict):
        return {}
    found = {
        "samples": _get(config, "eval.samples"),
        "temperature": _get(config, "eval.temperature"),
        "top_p": _get(config, "eval.top_p"),
        "max_new_tokens": _get(config, "eval.max_new_tokens") or _get(config, "train.max_new_tokens"),
        "seed": _get(config, "seed"),
        "device": _get(config, "model.device"),
        "batch_size": _get(config, "rollout.batch_size"),
        "prompt_template": _get(config, "data.math_prompt_template"),
        "dtype": _get(config, "eval.dtype"),
    }
    return {key: value for key, value in found.items() if value is not None}


def run_eval_options(cfg) -> dict[str, Any]:
    """The evaluator keyword arguments a (typed) run config implies: its sampling settings by the
    same mapping `harness eval RUN_ID` reads a run's config.yaml with (settings_from_run_config),
    the device resolved, plus data files, judge and generator backend. Used after training and by
    the sweep's seed baseline (`harness eval --config`)."""
    from harness.models import resolve_device
    from harness.rollout import generator_options

    settings = settings_from_run_config(cfg.to_dict())
    settings.pop("samples", None)
    settings["device"] = str(resolve_device(cfg.model.device))
    return dict(
        data_paths=cfg.eval.data,
        judge=cfg.eval.judge,
        backend=cfg.rollout.backend,
        backend_options=generator_options(cfg),
        **settings,
    )


def resolve_eval_settings(flags: dict[str, Any], run_config: dict | None) -> dict[str, Any]:
    """flags > run config > DEFAULTS, checked; `device: auto` becomes the device torch sees."""
    settings = {
        **DEFAULTS,
        **settings_from_run_config(run_config),
        **{key: value for key, value in flags.items() if value is not None and key in DEFAULTS},
    }
    check_eval_settings(settings)
    if settings["device"] == "auto":
        from harness.models import resolve_device

        settings["device"] = str(resolve_device("auto"))
    return settings


def check_eval_settings(settings: dict[str, Any]) -> None:
    """Every value a user can get wrong, before any model is loaded (ConfigError otherwise)."""

    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(
            f"eval setting `{key}` (flag --{key.replace('_', '-')} or the run's config) = "
            f"{settings[key]!r} is invalid: expected {expected}."
        )

    for key in ("samples", "max_new_tokens", "batch_size"):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**7:
            raise bad(key, "a positive integer (at most 10^7)")
    seed = settings["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise bad("seed", "an integer in [0, 2^63)")
    temperature = settings["temperature"]
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise bad("temperature", "a finite number >= 0 (0 = greedy)")
    top_p = settings["top_p"]
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise bad("top_p", "a number in (0, 1]")
    device = settings["device"]
    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        raise bad("device", "cpu, cuda, cuda:N or auto")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise bad("device", "a device this machine has: torch sees no CUDA GPU here, use --device cpu")
    if settings["dtype"] not in ("auto", "float32", "bfloat16", "float16"):
        raise bad("dtype", "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16")
    template = settings["prompt_template"]
    if template is not None:
        from harness.config import check_prompt_template

        check_prompt_template(template, "eval prompt template (data.math_prompt_template of the run)")


def read_config_next_to(checkpoint_dir: str | Path) -> dict | None:
    """`<output_dir>/config.yaml` for a checkpoint folder `<output_dir>/checkpoints/step_N`, if any."""
    path = Path(checkpoint_dir).resolve().parent.parent / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def read_run_config(client, run_id: str) -> dict | None:
    """A run's `config.yaml` artifact as plain data, or None when it has none."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="harness-config-") as scratch:
        try:
            local = client.download_artifacts(run_id, "config.yaml", scratch)
            data = yaml.safe_load(Path(local).read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - no artifact, unreadable: fall back to the defaults
            return None
    return data if isinstance(data, dict) else None


def describe(settings: dict[str, Any]) -> str:
    template = settings.get("prompt_template")
    shown = {**settings, "prompt_template": None if template is None else (template[:40] + "...")}
    return json.dumps(shown)
