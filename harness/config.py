"""The typed schema for one training run, and how YAML files and overrides become one.

    cfg = load_run_config("sweeps/runs/tiny.yaml", ["method=grpo", "train.lr=3e-4"])

The grid axes of the study (`method`, `sync_every`, `ref_sync_every`, `task_mix`, `seed`) are
top-level keys, so a sweep cell and a command-line override name them the same way. Everything
else lives in a section. Unknown keys, wrong types and out-of-range values fail here, before any
work starts, with one paragraph naming the file, the key path, the value and what is allowed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness import generator_devices
from harness.errors import ConfigError
from harness.files import read_text_file
from harness.prompt_template import check_prompt_template, prompt_template_problem  # noqa: F401 - re-exported

INF = math.inf
# Every integer key is at most this (counts and steps far beyond any real run; keeps later
# conversions such as torch.tensor(..., dtype=long) and seed arithmetic from overflowing).
MAX_INT = 2**31 - 1
# Seeds: torch.manual_seed takes 64 bits, but the trainer derives per-step seeds from it
# (seed * 1_000_003 + step), so the range is that of a 32-bit unsigned seed.
MAX_SEED = 2**32 - 1
_INF_SPELLINGS = {"inf", "+inf", ".inf", "infinity", "offline"}


ModelDtype = Literal["auto", "float32", "bfloat16", "float16"]
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


class Section(BaseModel):
    # allow_inf_nan=False: inf and nan are never a valid number here (the sync intervals, which
    # mean "never" by inf, are parsed by parse_interval and checked separately).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_numbers(cls, value: Any, info) -> Any:
        if info.field_name in ("sync_every", "ref_sync_every"):
            return value
        for number in _numbers_in(value):
            if isinstance(number, int) and not isinstance(number, bool) and abs(number) > MAX_INT \
                    and info.field_name != "seed":
                raise ValueError(f"expected an integer of at most {MAX_INT}")
            if isinstance(number, float) and (not math.isfinite(number) or abs(number) > 1e30):
                raise ValueError("expected a finite number (at most 1e30 in size)")
        return value


def _numbers_in(value: Any) -> list:
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _numbers_in(item)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers_in(item)]
    return []


class LoRASettings(Section):
    rank: int = Field(16, ge=1, description="adapter rank r")
    alpha: float = Field(32.0, gt=0, description="scale = alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


class ModelConfig(Section):
    policy: str = Field("tiny", description="'tiny' or a from_pretrained path / hub id of the seed policy")
    reward_model: str = Field("tiny", description="'tiny' or a path of a sequence-classification reward model")
    param_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="master weights and optimizer state (keep float32: bf16 rounds lr 1e-6 steps away)")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="matmul precision (FSDP MixedPrecisionPolicy, or autocast on one device)")
    gradient_checkpointing: bool = Field(False, description="recompute each decoder layer's activations in backward")
    reference_offload: bool = Field(False, description="keep the (sharded) reference on CPU, moved in per layer")
    lora: LoRASettings | None = Field(None, description="train LoRA adapters only (peft); None = full fine-tuning")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int | None = Field(None, ge=1, description="torch CPU threads per process; None = torch's default")
    trust_remote_code: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_old_dtype(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dtype" in data:
            raise ValueError(
                f"`model.dtype` ({data['dtype']!r}) was removed because it set the master weights' dtype, and "
                f"bfloat16 master weights silently ignore updates at the paper's lr 1e-6; set "
                f"`model.param_dtype` (master weights and optimizer state, default float32) and "
                f"`model.compute_dtype` (matmul precision, e.g. bfloat16) instead")
        return data


class DataConfig(Section):
    verifiable: Literal["tiny_math", "numinamath"] = "tiny_math"
    non_verifiable: Literal["tiny_chat", "wildchat"] = "tiny_chat"
    data_dir: str | None = Field(None, description="folder with the real data sets' JSONL files")
    joint_verifiable_fraction: float = Field(0.5, ge=0.0, le=1.0)
    math_prompt_template: str | None = Field(None, description="None: the source's own template")
    max_prompt_tokens: int | None = Field(None, ge=1, description="longer prompts (chat-templated) are dropped or cut")
    long_prompts: Literal["drop", "cut"] = Field("drop", description="what happens to a prompt over max_prompt_tokens")

    @field_validator("math_prompt_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        problem = None if value is None else prompt_template_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class TrainConfig(Section):
    steps: int = Field(300, ge=1)
    prompts_per_step: int = Field(16, ge=1)
    samples_per_prompt: int = Field(8, ge=2)
    lr: float = Field(1e-4, gt=0, le=1.0)
    adam_eps: float = Field(1e-8, gt=0, le=1.0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    micro_batch_size: int = Field(64, ge=1, description="sequences per forward/backward pass (per process)")
    parallel: Literal["none", "fsdp"] = Field("none", description="fsdp: FSDP2 sharding over the torchrun processes")
    collective_timeout_s: float = Field(900.0, gt=0, description="fsdp: seconds a rank waits in a collective for the "
                                        "others (a hung or dead rank ends the job after this); rank 0's checkpoint "
                                        "writes and validation must fit in it")


class DPOConfig(Section):
    beta: float = Field(0.1, gt=0)
    length_normalize: bool = False
    nll_coef: float = Field(0.0, ge=0)


class GRPOConfig(Section):
    kl_coef: float = Field(0.001, ge=0)
    scale_by_std: bool = False
    entropy_coef: float = Field(0.0, ge=0)
    importance_sampling: bool = Field(False, description="required for sync_every > 1 (off-policy)")
    is_cap: float = Field(2.0, gt=0, description="truncation of the token importance ratio")


class VLLMEngineConfig(Section):
    """The vLLM engine's settings (used only with rollout.backend: vllm)."""
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1.0, description="GPU: share of GPU memory the engine takes")
    cpu_kv_cache_gib: float = Field(1.0, gt=0, le=1024, description="CPU: GiB of KV-cache space")
    tensor_parallel_size: int | None = Field(None, ge=1, le=64, description="None: rollout.devices' count, else 1")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: the narrower of model.param_dtype and model.compute_dtype")
    max_model_len: int | None = Field(None, ge=2, description="prompt + response tokens; None: the model's own")
    enforce_eager: bool = Field(True, description="no CUDA graphs / compilation (fast start)")


class RolloutConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = Field(256, ge=1, description="sequences per generate call (vllm: per engine step)")
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)
    placement: Literal["colocated", "worker"] = Field(
        "colocated", description="colocated: the generator runs in the trainer's process; worker: in its own "
                                 "process, generating the sync window's steps ahead while the trainer trains")
    queue_depth: int = Field(8, ge=1, description="worker: steps of rollouts requested ahead and not yet trained "
                                                  "on, at most (never past the next sync)")
    devices: list[int] | None = Field(None, description="worker: its CUDA devices ([6, 7] or '6,7'); None = "
                                      "$HARNESS_GENERATOR_DEVICES when a launcher sets it, else model.device")
    worker_cpu_threads: int | None = Field(None, ge=1, description="worker: torch CPU threads; None = model.cpu_threads")
    worker_restarts: int = Field(3, ge=0, description="worker: restarts in a row without a delivered step before "
                                                      "the run fails")
    worker_timeout_s: float | None = Field(600.0, gt=0, description="worker: seconds a live worker may take to "
                                           "deliver the step the trainer waits for before it is declared hung, killed "
                                           "and restarted; None = wait forever")
    snapshot_dir: str | None = Field(None, description="worker: where weight snapshots are written; None = /dev/shm "
                                                       "(else the temp dir)")

    @model_validator(mode="before")
    @classmethod
    def _devices(cls, data: Any) -> Any:
        return generator_devices.parse_rollout_section(data)  # rollout.devices as a list; worker_device refused

    @model_validator(mode="after")
    def _devices_fit(self) -> RolloutConfig:
        generator_devices.check(self.devices, self.placement, self.backend, self.vllm.tensor_parallel_size)
        return self


class RewardsConfig(Section):
    verifiable: str = "math_verify"
    non_verifiable: str = "reward_model"
    math_verify_workers: int = Field(2, ge=1)
    math_verify_timeout_s: float = Field(5.0, gt=0)
    reward_model_batch_size: int = Field(64, ge=1)
    reward_model_dtype: ModelDtype = Field("auto", description="auto: bfloat16 on CUDA, float32 on CPU")


class ValidationConfig(Section):
    every: int = Field(25, ge=1, description="optimizer steps between validations")
    prompts: int = Field(64, ge=1, description="held-out prompts per task type, one sample each")
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.9, gt=0, le=1.0)


class CheckpointConfig(Section):
    every: int = Field(50, ge=1)
    keep_last: int | None = Field(None, ge=1, description="keep only the newest K checkpoints; None keeps all")


class EvalConfig(Section):
    suites: list[str] = Field(default_factory=list)
    samples: int = Field(4, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.9, gt=0, le=1.0)
    max_new_tokens: int | None = Field(None, ge=1)
    rule: str = "len_norm"
    data: dict[str, str] = Field(default_factory=dict, description="suite name -> local data file")
    judge: dict[str, Any] = Field(default_factory=lambda: {"name": "reward_model"})
    dtype: ModelDtype = Field("auto", description="evaluated policy and reward-model judge; auto: bf16 on CUDA")


class TrackingConfig(Section):
    experiment: str = Field("harness", min_length=1)
    run_name: str | None = None


class RunConfig(Section):
    method: Literal["dpo", "grpo"] = "dpo"
    sync_every: int | IntervalFloat = Field(1, description="optimizer steps between generator syncs; inf = offline")
    ref_sync_every: int | IntervalFloat | Literal["auto"] = "auto"
    task_mix: Literal["verifiable", "non_verifiable", "joint"] = "verifiable"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    output_dir: str | None = None

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

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
            raise ValueError("model.lora is for one process (one GPU); with train.parallel=fsdp train all weights, "
                             "or drop train.parallel")
        if self.model.lora is not None and self.ref_sync_every != INF:
            raise ValueError(
                f"model.lora makes the reference the base model with the adapter switched off, so it cannot "
                f"follow the policy; ref_sync_every resolved to {format_interval(self.ref_sync_every)}: set "
                f"ref_sync_every=inf")
        worker_wait = self.rollout.worker_timeout_s
        if self.train.parallel == "fsdp" and self.rollout.placement == "worker" and \
                (worker_wait is None or worker_wait >= self.train.collective_timeout_s):
            raise ValueError(
                f"rollout.worker_timeout_s = {worker_wait} must be below train.collective_timeout_s = "
                f"{self.train.collective_timeout_s:g} under train.parallel=fsdp: the other ranks wait for rank 0 in a "
                f"collective while it waits for the worker, so a hung worker must be replaced before they time out")
        if self.model.reference_offload and self.train.parallel != "fsdp":
            raise ValueError(
                "model.reference_offload=true needs train.parallel=fsdp (FSDP's CPU offload; it also "
                "works as a single process)")
        return self

    # -- derived -------------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        if self.tracking.run_name:
            return self.tracking.run_name
        return (f"{self.method}-s{format_interval(self.sync_every)}-{self.task_mix}-seed{self.seed}")

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
        raise ConfigError(f"{source}: override `{text[:80]}` has a value that cannot be read "
                          f"({str(exc)[:100]}).") from None
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
        raise ConfigError(f"{path}: the config file is empty (or only comments); expected a mapping of keys to "
                          f"values, e.g. `method: dpo`. To run with every default, copy sweeps/runs/tiny.yaml.")
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
            lines.append(f"{source}: unknown key `{loc}` (value {value!r}); check the spelling, "
                         f"allowed keys are listed in the README's config reference.")
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
