"""Per-GPU memory plan of a run config, computed from shapes before anything is loaded.

    harness plan sweeps/runs/llama31_8b.yaml --gpus 8 [--generator-gpus 2] [--gpu-memory-gib 140]

Shapes (harness.train.model_shape) come from the model folder's config.json, else from a built-in
table of known models (Llama-3.1-8B, Athene-RM-8B), so the paper's setting can be planned on a
machine without its weights. Rank 0 is the fullest GPU (it also holds the colocated generator and the reward model),
so the plan reports rank 0. A step has three phases that never run at once: generation (the
rollouts), training (forward/backward/Adam) and validation (sampling + an entropy pass). What
lives through all of them (weights, Adam moments, a colocated generator) is counted once; each
phase adds its own temporaries, and the GPU needs the largest phase. `harness train` runs the
same check on CUDA and refuses a config that cannot fit, before loading, naming the keys that
shrink it; the table and that check are harness.train.plan_report. Measured on an H200 (tests/test_plan.py holds the measurements it is checked against).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.precision import BYTES
from harness.tasks import task_types
from harness.train.model_shape import Shape, model_shape

GIB = 2**30
PROMPT_TOKENS = 512  # planning allowance for the prompt part of a sequence (chat templates included)
CONTEXT_GIB = 2.0  # CUDA context, NCCL buffers, allocator slack
FRAGMENTATION = 0.05

# Training logits, measured on an H200 (2026-12-04, /work/shared/GPU.md): the forward of 4 x (512 + 2048)
# tokens at vocabulary 128,256 in bf16 peaked 20.7 GiB, 16.9 bytes per token per vocabulary entry. Those
# are the model's logits and the response rows gathered from them (2 x 2 B in bf16), the fp32 upcast that
# backward keeps (4 B), the entropy's fp32 log-softmax and its exp (2 x 4 B, transient) and about 0.9 B of
# allocator rounding. In another compute dtype only the first two change size.
MEASURED_LOGITS_BYTES = 20.7 * GIB / (4 * (512 + 2048) * 128256)
FP32_LOGITS_BYTES = MEASURED_LOGITS_BYTES - 2 * 2
# FSDP2 leaves the root unit (embeddings, final norm, LM head) all-gathered after a forward (it expects the
# backward next); after the reference's no-grad forward that copy stayed on the GPU, measured +0.49 GiB at
# 2.8B. The reference now reshards its root after every forward (harness/distributed.py, tests/test_fsdp*),
# so it is not counted; set True to count it for a build without that fix.
REFERENCE_ROOT_STAYS_GATHERED = False
WORKER_CONTEXT_GIB = 0.5  # a second process's own CUDA context on a shared GPU
PHASES = ("generate", "train", "validate")  # a step's phases; "resident" rows live through all of them
# PyTorch's caching allocator keeps the blocks the generator freed (one K or V tensor per layer) and
# training's tensors, of other sizes, mostly cannot reuse them: at 2.8B (tests/test_plan.py) memory
# reserved exceeded memory allocated by 14.1 GiB, more than the whole KV cache. So the training phase
# still holds the generation phase's blocks (an upper bound), and the plan is checked against reserved
# memory, which is what must fit.
KV_CARRY = "generation's blocks, still held by PyTorch's caching allocator"


@dataclass
class Plan:
    rows: list[tuple[str, str, float]]  # (phase, component, bytes on the fullest trainer GPU)
    generator_rows: list[tuple[str, float]]  # per generator GPU, in worker placement on --generator-gpus
    host_rows: list[tuple[str, float]]  # host memory of one machine while the models load
    capacity: float
    gpus: int
    generator_gpus: int
    header: str

    def phase_total(self, phase: str) -> float:
        """Bytes on the fullest trainer GPU while `phase` runs: what lives throughout, plus the phase's own."""
        return sum(value for where, _, value in self.rows if where in ("resident", phase))

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=self.phase_total)

    @property
    def total(self) -> float:
        return self.phase_total(self.peak_phase)

    @property
    def allocated(self) -> float:
        """The peak of what tensors occupy (torch.cuda.max_memory_allocated's counterpart): no CUDA
        context, no allocator slack and no cached blocks of an earlier phase."""
        return max(
            sum(
                v
                for where, name, v in self.rows
                if where in ("resident", phase) and name != KV_CARRY and not name.startswith("CUDA context")
            )
            for phase in PHASES
        )

    @property
    def generator_total(self) -> float:
        return sum(v for _, v in self.generator_rows)

    @property
    def host_total(self) -> float:
        return sum(v for _, v in self.host_rows)

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity and self.generator_total <= self.capacity


def logits_bytes(compute_bytes: int) -> float:
    """Bytes per token per vocabulary entry of a log-prob pass (see MEASURED_LOGITS_BYTES)."""
    return 2 * compute_bytes + FP32_LOGITS_BYTES


def planned_prompt_tokens(cfg, prompt_tokens: int | None) -> int:
    """The prompt allowance: the one given, else `data.max_prompt_tokens`, else PROMPT_TOKENS."""
    return prompt_tokens or getattr(cfg.data, "max_prompt_tokens", None) or PROMPT_TOKENS


def reward_model_dtype(cfg) -> str:
    from harness.precision import resolve_dtype

    return resolve_dtype(getattr(cfg.rewards, "reward_model_dtype", "auto"), "cuda")


def plan_memory(
    cfg,
    gpus: int,
    capacity_gib: float,
    generator_gpus: int = 0,
    policy: Shape | None = None,
    reward_model: Shape | None = None,
    prompt_tokens: int | None = None,
) -> Plan:
    """Bytes per trainer GPU (rank 0) for the config, with `gpus` FSDP ranks, phase by phase."""
    from harness.train.setup import reference_dtype

    policy = policy or model_shape(cfg.model.policy)
    uses_rm = "non_verifiable" in task_types(cfg.task_mix) and cfg.rewards.non_verifiable == "reward_model"
    if uses_rm and reward_model is None:
        reward_model = model_shape(cfg.model.reward_model, classifier=True)
    placement = "worker" if generator_gpus else cfg.rollout.placement
    vllm = cfg.rollout.backend == "vllm"
    sharded = cfg.train.parallel == "fsdp"
    shards = gpus if sharded else 1
    p, c, r = BYTES[cfg.model.param_dtype], BYTES[cfg.model.compute_dtype], BYTES[reference_dtype(cfg)]
    n, vocab = policy.params, policy.vocab_size
    seq = planned_prompt_tokens(cfg, prompt_tokens) + cfg.train.max_new_tokens
    tokens = cfg.train.micro_batch_size * seq
    share = f"1/{shards}" if shards > 1 else "whole"
    lora = cfg.model.lora
    trained = policy.lora_params(lora.rank, lora.target_modules) if lora else n
    what = f"LoRA rank {lora.rank}, " if lora else ""
    kv_token = policy.num_hidden_layers * 2 * policy.kv_dim  # K and V entries per token
    rollout_rows = min(cfg.rollout.batch_size, cfg.train.prompts_per_step * cfg.train.samples_per_prompt)
    kv_cache = rollout_rows * seq * kv_token * r
    rows: list[tuple[str, str, float]] = [
        (
            "resident",
            f"policy master weights ({cfg.model.param_dtype}, {share})",
            (n + (trained if lora else 0)) * p / shards,
        ),
        ("resident", f"AdamW moments ({what}2 x {cfg.model.param_dtype}, {share})", 2 * trained * p / shards),
    ]
    if lora:
        rows.append(("resident", "reference (the base, adapter switched off)", 0.0))
    else:
        rows.append(
            (
                "resident",
                f"reference ({reference_dtype(cfg)}, {'on CPU' if cfg.model.reference_offload else share})",
                0.0 if cfg.model.reference_offload else n * r / shards,
            )
        )
        if sharded and REFERENCE_ROOT_STAYS_GATHERED:
            rows.append(
                (
                    "resident",
                    f"reference root left gathered by FSDP ({cfg.model.compute_dtype}: embeddings + head)",
                    policy.root_params * c,
                )
            )
    rows += generator_on_trainer_gpu(
        cfg, placement, generator_gpus, n * r, kv_cache, rollout_rows, seq, vocab, capacity_gib
    )
    if uses_rm:
        dtype = reward_model_dtype(cfg)
        rows.append(("resident", f"reward model ({dtype}, rank 0)", reward_model.params * BYTES[dtype]))
    gathered = (policy.root_params + 2 * policy.layer_params) * c if sharded and (shards > 1 or c != p) else 0.0
    rows += training_rows(cfg, policy, trained, p, c, shards, what, share, tokens, seq, gathered)
    if placement == "colocated" and not vllm:  # see KV_CARRY
        rows.append(("train", KV_CARRY, sum(v for phase, _, v in rows if phase == "generate")))
    rows += validation_rows(cfg, policy, c if sharded else p, seq, gathered)
    peak = max(sum(v for where, _, v in rows if where in ("resident", phase)) for phase in PHASES)
    rows.append(
        (
            "resident",
            f"CUDA context and allocator slack ({CONTEXT_GIB:g} GiB + {FRAGMENTATION:.0%})",
            CONTEXT_GIB * GIB + FRAGMENTATION * peak,
        )
    )
    generator_rows = generator_gpu_rows(
        cfg, placement, generator_gpus, n * r, kv_cache, rollout_rows, seq, capacity_gib
    )
    header = (
        f"policy {policy.params / 1e9:.2f}B parameters ({policy.source}); {gpus} trainer GPU(s)"
        f"{' with FSDP' if sharded else ''}; generator {placement} ({cfg.rollout.backend})"
        f"{f' on {generator_gpus} GPU(s)' if generator_rows else ''}; sequences of {seq} tokens"
    )
    return Plan(
        rows,
        generator_rows,
        host_rows(cfg, policy, reward_model if uses_rm else None, gpus, placement),
        capacity_gib * GIB,
        gpus,
        generator_gpus,
        header,
    )


def generator_on_trainer_gpu(
    cfg,
    placement: str,
    generator_gpus: int,
    weights: float,
    kv_cache: float,
    rollout_rows: int,
    seq: int,
    vocab: int,
    capacity_gib: float,
) -> list[tuple[str, str, float]]:
    """Rank 0's generator rows: a colocated copy, or a worker process sharing the GPU, or nothing."""
    from harness.train.setup import reference_dtype

    dtype = reference_dtype(cfg)
    if cfg.rollout.backend == "vllm" and (placement == "colocated" or not generator_gpus):
        share = cfg.rollout.vllm.gpu_memory_utilization
        where = "colocated" if placement == "colocated" else "worker process on this GPU"
        return [
            (
                "resident",
                f"vLLM engine ({where}: gpu_memory_utilization {share:g} x {capacity_gib:g} GiB)",
                share * capacity_gib * GIB,
            )
        ]
    if placement == "colocated":
        return [
            ("resident", f"generator copy ({dtype}, colocated on rank 0)", weights),
            ("generate", f"generator KV cache ({rollout_rows} sequences x {seq} tokens)", kv_cache),
            ("generate", "sampling logits (fp32 softmax, per sequence)", rollout_rows * vocab * 12),
        ]
    if generator_gpus:  # validation samples through the same worker (weights gathered to rank 0's host memory)
        return [("resident", "generator (worker: on its own GPUs)", 0.0)]
    # A worker with no GPUs of its own runs on model.device, beside rank 0, and generates while it trains.
    return [
        (
            "resident",
            f"rollout worker on this GPU (weights {dtype} + KV cache + its CUDA context)",
            weights + kv_cache + WORKER_CONTEXT_GIB * GIB,
        )
    ]


def training_rows(
    cfg,
    policy: Shape,
    trained: int,
    p: int,
    c: int,
    shards: int,
    what: str,
    share: str,
    tokens: int,
    seq: int,
    gathered: float,
) -> list[tuple[str, str, float]]:
    h = policy.hidden_size
    per_token_layer = c * (6 * h + 2 * policy.kv_dim + 4 * policy.intermediate_size) + 8 * h  # + fp32 norms
    if cfg.model.gradient_checkpointing:  # each layer's input kept, one layer recomputed at a time
        activations = tokens * (policy.num_hidden_layers * h * c + per_token_layer)
    else:
        activations = tokens * policy.num_hidden_layers * per_token_layer
    rows = [("train", f"gradients ({what}{cfg.model.param_dtype}, {share})", trained * p / shards)]
    if gathered:
        rows.append(("train", f"FSDP all-gathered units ({cfg.model.compute_dtype}: root + 2 layers)", gathered))
    elif c != p and not cfg.model.lora:  # autocast caches a compute-dtype copy of every trained weight
        rows.append(("train", f"autocast's {cfg.model.compute_dtype} weight copies", policy.params * c))
    rows.append(
        (
            "train",
            f"activations ({cfg.train.micro_batch_size} x {seq} tokens"
            f"{', checkpointed' if cfg.model.gradient_checkpointing else ''})",
            activations,
        )
    )
    rows.append(
        (
            "train",
            f"logits and log-prob temporaries ({policy.vocab_size} vocab, "
            f"{logits_bytes(c):.1f} B per token and entry, measured)",
            tokens * policy.vocab_size * logits_bytes(c),
        )
    )
    return rows


def validation_rows(cfg, policy: Shape, sample_bytes: int, seq: int, gathered: float) -> list[tuple[str, str, float]]:
    """Validation samples one response per held-out prompt from the live policy (in its own dtype
    on one process, the gathered compute dtype under FSDP), then an entropy pass per micro-batch."""
    tasks = len(task_types(cfg.task_mix))
    rows_sampled = min(cfg.validation.prompts * tasks, cfg.rollout.batch_size)
    kv = rows_sampled * seq * policy.num_hidden_layers * 2 * policy.kv_dim * sample_bytes
    c = BYTES[cfg.model.compute_dtype]
    micro = min(cfg.train.micro_batch_size, cfg.validation.prompts)
    rows = (
        []
        if cfg.rollout.backend == "vllm"
        else [  # vLLM samples inside its own reservation
            ("validate", f"validation KV cache ({rows_sampled} sequences x {seq} tokens)", kv)
        ]
    )
    rows += [
        (
            "validate",
            f"validation entropy pass ({micro} x {seq} tokens, no grad)",
            micro * seq * policy.vocab_size * logits_bytes(c),
        )
    ]
    if gathered:
        rows.append(("validate", "FSDP all-gathered units (root + 2 layers)", gathered))
    return rows


def generator_gpu_rows(
    cfg,
    placement: str,
    generator_gpus: int,
    weights: float,
    kv_cache: float,
    rollout_rows: int,
    seq: int,
    capacity_gib: float,
) -> list[tuple[str, float]]:
    """Per generator GPU in worker placement on GPUs of its own: vLLM reserves its share of each GPU
    up front (weights and KV cache inside it); the hf backend holds one whole copy on one GPU."""
    if placement == "colocated" or not generator_gpus:
        return []
    from harness.train.setup import reference_dtype

    if cfg.rollout.backend == "vllm":
        share = cfg.rollout.vllm.gpu_memory_utilization
        return [
            (
                f"vLLM reservation (gpu_memory_utilization {share:g} x {capacity_gib:g} GiB; weights "
                f"{weights / generator_gpus / GIB:.1f} GiB of it, KV cache the rest)",
                share * capacity_gib * GIB,
            ),
            (f"CUDA context ({WORKER_CONTEXT_GIB:g} GiB)", WORKER_CONTEXT_GIB * GIB),
        ]
    return [
        (f"generator weights ({reference_dtype(cfg)}, hf: one whole copy)", weights),
        (f"KV cache ({rollout_rows} sequences x {seq} tokens)", kv_cache),
        (f"CUDA context ({CONTEXT_GIB:g} GiB)", CONTEXT_GIB * GIB),
    ]


def host_rows(cfg, policy: Shape, reward_model: Shape | None, gpus: int, placement: str) -> list[tuple[str, float]]:
    """Host memory of one machine while the models load: rank 0 alone reads the whole policy (master
    dtype) and reference (inference dtype) on the CPU; under FSDP the other ranks build them on the
    meta device and receive only their shards, one tensor at a time (harness.distributed.shard_from_rank0)."""
    from harness.train.setup import reference_dtype

    n, p, r = policy.params, BYTES[cfg.model.param_dtype], BYTES[reference_dtype(cfg)]
    rows = [
        (
            f"policy + reference loaded on the CPU by rank 0 only ({cfg.model.param_dtype} + {reference_dtype(cfg)})",
            n * (p + r),
        )
    ]
    if cfg.train.parallel == "fsdp" and cfg.model.reference_offload:
        rows.append((f"reference shards kept on the CPU (model.reference_offload, 1/{gpus} per rank)", n * r))
    if placement == "colocated":
        rows.append((f"rank 0's generator copy, made on the CPU ({cfg.model.param_dtype}) before moving", n * p))
    else:
        rows.append((f"weight snapshots for the worker (/dev/shm: the newest 2, {reference_dtype(cfg)})", 2 * n * r))
    if reward_model is not None:
        rows.append(
            (
                f"reward model ({reward_model_dtype(cfg)}), loaded by rank 0",
                reward_model.params * BYTES[reward_model_dtype(cfg)],
            )
        )
    return rows
