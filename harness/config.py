"""The typed schema for one training run, and how YAML files and overrides become one.

    cfg = load_run_config("sweeps/runs/tiny.yaml", ["method=grpo", "train.lr=3e-4"])

The grid axes of the study (`method`, `sync_every`, `ref_sync_every`, `task_mix`, `seed`) are
top-level keys, so a sweep cell and a command-line override name them the same way. Everything
else lives in a section. Unknown keys, wrong types and out-of-range values fail here, before any
work starts, with one paragraph naming the file, the key path, the value and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AllowInfNan, Field, ValidationError, field_validator, model_validator

from harness.config_sections import (  # noqa: F401 - the sections, re-exported for `from harness.config import`
    INF,
    MAX_INT,
    MAX_SEED,
    CheckpointConfig,
    DataConfig,
    DPOConfig,
    EvalConfig,
    GRPOConfig,
    LoRASettings,
    ModelConfig,
    ModelDtype,
    RewardsConfig,
    RolloutConfig,
    Section,
    TrackingConfig,
    TrainConfig,
    ValidationConfig,
    VLLMEngineConfig,
)
from harness.errors import ConfigError
from harness.files import read_text_file
from harness.prompt_template import check_prompt_template, prompt_template_problem  # noqa: F401 - re-exported

_INF_SPELLINGS = {"inf", "+inf", ".inf", "infinity", "offline"}
IntervalFloat = Annotated[float, AllowInfNan(True)]  # only ever inf: parse_interval returns ints otherwise


def parse_interval(value: Any) -> float | int:
    """A sync interval: a positive integer number of optimizer steps, or inf (never sync)."""
    if isinstance(value, str) and value.strip().lower() in _INF_SPELLINGS:
        return INF
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return INF
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a positive integer or 'inf'")
    if isinstance(value, int):
        number: int | float = value
    else:
        try:
            number = float(value)
        except ValueError:
            raise ValueError("expected a positive integer or 'inf'") from None
        if not math.isfinite(number) or number != int(number):
            raise ValueError("expected a positive integer or 'inf'")
    if number < 1:
        raise ValueError("expected a positive integer or 'inf'")
    if number > MAX_INT:
        raise ValueError(f"expected a positive integer of at most {MAX_INT} steps, or 'inf' (never sync)")
    return int(number)


def format_interval(value: float | int) -> str:
    return "inf" if value == INF else str(int(value))


def default_ref_sync(method: str, sync_every: float | int, task_mix: str) -> float | int:
    """`ref_sync_every: auto`, the paper's setting (the one place this rule lives).

    The DPO reference follows the generator for verifiable semi-online/online runs (without it
    online DPO on math collapses to short answers); it stays fixed (inf) for offline DPO, for
    GRPO and for every non-verifiable or joint run.
    """
    follows = method == "dpo" and task_mix == "verifiable" and sync_every != INF
    return sync_every if follows else INF


class RunConfig(Section):
    """One training run: the grid axes at the top level, everything else in a section."""

    method: Literal["dpo", "grpo"] = Field(
        "dpo",
        description="`dpo` (sigmoid loss on chosen/rejected pairs) or "
        "`grpo` (group-centred advantages, k3 KL to a fixed reference)",
    )
    sync_every: int | IntervalFloat = Field(
        1,
        description="optimizer steps between generator syncs: `1` online, `5`/`10`/`100` semi-online, `inf` "
        "offline (rollouts always from the seed)",
        json_schema_extra={"doc_type": "int >= 1, or `inf`"},
    )
    ref_sync_every: int | IntervalFloat | Literal["auto"] = Field(
        "auto",
        description="steps between DPO reference syncs, or `inf`; `auto` (the paper's settings) follows "
        "`sync_every` for verifiable DPO and is `inf` otherwise",
        json_schema_extra={"doc_type": "int >= 1, `inf` or `auto`"},
    )
    task_mix: Literal["verifiable", "non_verifiable", "joint"] = Field(
        "verifiable",
        description="`verifiable` (math, Math-Verify 0/1), `non_verifiable` (chat, reward model) or "
        "`joint` (both in every batch, each prompt scored by its own reward)",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds torch, the prompt order, sampling and pair building")
    output_dir: str | None = Field(
        None,
        description="checkpoints, `config.yaml`, `checkpoints.json`, `run.json`; "
        "none = `runs/<run name>` under the working folder",
    )

    model: ModelConfig = Field(default_factory=ModelConfig, description="policy, reward model, precision, devices")
    data: DataConfig = Field(default_factory=DataConfig, description="prompt sources")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimizer, batch, rollout sampling")
    dpo: DPOConfig = Field(default_factory=DPOConfig, description="DPO loss")
    grpo: GRPOConfig = Field(default_factory=GRPOConfig, description="GRPO loss")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="generator backend and placement")
    rewards: RewardsConfig = Field(default_factory=RewardsConfig, description="reward functions")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="held-out validation")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="checkpoint folders")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation after training")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow names")

    @field_validator("sync_every", mode="before")
    @classmethod
    def _sync_interval(cls, value: Any) -> float | int:
        return parse_interval(value)

    @field_validator("ref_sync_every", mode="before")
    @classmethod
    def _ref_interval(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return parse_interval(value)

    @model_validator(mode="after")
    def _resolve_and_check(self) -> "RunConfig":
        if self.ref_sync_every == "auto":
            object.__setattr__(self, "ref_sync_every", default_ref_sync(self.method, self.sync_every, self.task_mix))
        if self.method == "grpo" and self.sync_every != 1 and not self.grpo.importance_sampling:
            raise ValueError(
                "GRPO with sync_every > 1 is off-policy: set grpo.importance_sampling=true "
                "(the paper's GRPO is purely on-policy, sync_every=1)"
            )
        if self.model.lora is not None and self.train.parallel == "fsdp":
            raise ValueError(
                "model.lora is for one process (one GPU); with train.parallel=fsdp train all weights, "
                "or drop train.parallel"
            )
        if self.model.lora is not None and self.ref_sync_every != INF:
            raise ValueError(
                f"model.lora makes the reference the base model with the adapter switched off, so it cannot "
                f"follow the policy; ref_sync_every resolved to {format_interval(self.ref_sync_every)}: set "
                f"ref_sync_every=inf"
            )
        worker_wait = self.rollout.worker_timeout_s
        if (
            self.train.parallel == "fsdp"
            and self.rollout.placement == "worker"
            and (worker_wait is None or worker_wait >= self.train.collective_timeout_s)
        ):
            raise ValueError(
                f"rollout.worker_timeout_s = {worker_wait} must be below train.collective_timeout_s = "
                f"{self.train.collective_timeout_s:g} under train.parallel=fsdp: the other ranks wait for rank 0 in a "
                f"collective while it waits for the worker, so a hung worker must be replaced before they time out"
            )
        if self.model.reference_offload and self.train.parallel != "fsdp":
            raise ValueError(
                "model.reference_offload=true needs train.parallel=fsdp (FSDP's CPU offload; it also "
                "works as a single process)"
            )
        return self

    # -- derived -------------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        if self.tracking.run_name:
            return self.tracking.run_name
        return f"{self.method}-s{format_interval(self.sync_every)}-{self.task_mix}-seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data, with inf intervals written as the string 'inf' (YAML- and JSON-safe)."""
        data = self.model_dump()
        for key in ("sync_every", "ref_sync_every"):
            data[key] = format_interval(data[key])
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


AXIS_KEYS = ("method", "sync_every", "ref_sync_every", "task_mix", "seed")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-4}} -> {'train.lr': 1e-4}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def parse_override(text: str, source: str = "command line") -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(
            f"{source}: override `{text}` is not of the form key.path=value "
            f"(for example `train.lr=3e-4` or `sync_every=inf`)."
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{source}: override `{text}` has an empty key path; expected key.path=value.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise ConfigError(
            f"{source}: override `{text[:80]}` has a value that cannot be read ({str(exc)[:100]})."
        ) from None
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (expected a YAML file; shipped ones live under sweeps/).")
    text = read_text_file(path, "YAML config file", ConfigError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a timestamp out of range
        raise ConfigError(f"{path}: a value cannot be read: {exc}") from None
    if data is None:
        raise ConfigError(
            f"{path}: the config file is empty (or only comments); expected a mapping of keys to "
            f"values, e.g. `method: dpo`. To run with every default, copy sweeps/runs/tiny.yaml."
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {type(data).__name__}.")
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        raise ConfigError(f"{path}: key {bad[0]!r} is not a string; every key must be a name such as `train`.")
    return data


def describe_validation_error(source: str, exc: ValidationError) -> str:
    """One paragraph per problem: file, key path, value given, what is allowed."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            lines.append(
                f"{source}: unknown key `{loc}` (value {value!r}); check the spelling, "
                f"allowed keys are listed in docs/config.md."
            )
            continue
        message = err["msg"].removeprefix("Value error, ")
        if not loc:
            lines.append(f"{source}: {message}.")
            continue
        where = f"key `{loc}`" if loc else "the config"
        shown = value if len(repr(value)) < 200 else repr(value)[:200] + "..."
        lines.append(f"{source}: {where} = {shown!r} is invalid: {message}.")
    return " ".join(lines)


def validate_run_config(data: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None
    except (OverflowError, RecursionError, TypeError) as exc:  # a value pydantic could not even convert
        raise ConfigError(f"{source}: a value cannot be converted ({type(exc).__name__}: {exc}).") from None


def load_run_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a run YAML (or the defaults when path is None), apply overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    for text in overrides:
        key_path, value = parse_override(text)
        apply_override(data, key_path, value)
    if overrides:
        source += " (with overrides " + " ".join(overrides) + ")"
    return validate_run_config(data, source)
