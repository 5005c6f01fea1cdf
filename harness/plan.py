"""Per-GPU memory plan of a run config, computed from shapes before anything is loaded.

    harness plan sweeps/runs/llama31_8b.yaml --gpus 8 [--generator-gpus 2] [--gpu-memory-gib 140]

Shapes come from the model folder's config.json, else from a built-in table of known models
(Llama-3.1-8B, Athene-RM-8B), so the paper's setting can be planned on a machine without its
weights. Rank 0 is the fullest GPU (it also holds the colocated generator and the reward model),
so the plan reports rank 0. `harness train` runs the same check on CUDA and refuses a config
that cannot fit, before loading, naming the keys that shrink it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.precision import BYTES

log = logging.getLogger("harness.plan")

GIB = 2 ** 30
PROMPT_TOKENS = 512  # planning allowance for the prompt part of a sequence (chat templates included)
CONTEXT_GIB = 2.0  # CUDA context, NCCL buffers, allocator slack
FRAGMENTATION = 0.05

# Built-in shapes (from the models' published config.json) for planning without the weights.
KNOWN_SHAPES = {
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, head_dim=128),
    "athene-rm-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, head_dim=128,
                         classifier=True),
}


@dataclass
class Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None
    classifier: bool = False  # a sequence-classification head (one score) instead of the LM head
    source: str = ""

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * (self.head_dim or self.hidden_size // self.num_attention_heads)

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * (self.head_dim or self.hidden_size // self.num_attention_heads)

    @property
    def layer_params(self) -> int:
        h = self.hidden_size
        attention = h * self.q_dim * 2 + h * self.kv_dim * 2
        return attention + 3 * h * self.intermediate_size + 2 * h

    @property
    def root_params(self) -> int:
        """Embeddings, final norm and the head: what FSDP's root unit all-gathers."""
        embed = self.vocab_size * self.hidden_size
        head = self.hidden_size if self.classifier else (0 if self.tie_word_embeddings else embed)
        return embed + head + self.hidden_size

    def lora_params(self, rank: int, targets: list[str]) -> int:
        h, q, kv, i = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size
        dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
                "up_proj": (h, i), "down_proj": (i, h)}
        return self.num_hidden_layers * sum(rank * sum(dims[t]) for t in targets if t in dims)

    @property
    def params(self) -> int:
        return self.root_params + self.num_hidden_layers * self.layer_params


def model_shape(path: str, classifier: bool = False) -> Shape:
    """The shape of a model folder (its config.json) or of a known model named in the path."""
    if path == "tiny":
        from harness.tiny import ensure_tiny_assets
        assets = ensure_tiny_assets(progress=False)
        path = str(assets.reward_model_dir if classifier else assets.policy_dir)
    config = Path(path) / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        fields = {k: data[k] for k in Shape.__dataclass_fields__ if k in data and k not in ("classifier", "source")}
        fields.setdefault("num_key_value_heads", data.get("num_attention_heads"))
        try:
            return Shape(**fields, classifier=classifier, source=str(config))
        except TypeError as exc:
            raise ConfigError(f"{config}: not a decoder-only transformer config the planner knows ({exc}).") from None
    for name, fields in KNOWN_SHAPES.items():
        if name in path.lower().replace("_", "-"):
            return Shape(**{"classifier": classifier, **fields}, source=f"built-in {name} shape")
    raise ConfigError(
        f"model path {path}: no config.json there and not a model the planner knows "
        f"({', '.join(KNOWN_SHAPES)}); put the model's config.json there to plan its memory.")


@dataclass
class Plan:
    rows: list[tuple[str, float]]  # (component, bytes on the fullest trainer GPU)
    generator_rows: list[tuple[str, float]]  # per generator GPU, in worker placement
    total: float
    generator_total: float
    capacity: float
    gpus: int
    generator_gpus: int
    header: str

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity and self.generator_total <= self.capacity


def plan_memory(cfg, gpus: int, capacity_gib: float, generator_gpus: int = 0, policy: Shape | None = None,
                reward_model: Shape | None = None, prompt_tokens: int = PROMPT_TOKENS) -> Plan:
    """Bytes per trainer GPU (rank 0) for the config, with `gpus` FSDP ranks."""
    from harness.train_setup import generator_placement, reference_dtype
    policy = policy or model_shape(cfg.model.policy)
    uses_rm = cfg.task_mix != "verifiable" and cfg.rewards.non_verifiable == "reward_model"
    if uses_rm and reward_model is None:
        reward_model = model_shape(cfg.model.reward_model, classifier=True)
    placement = "worker" if generator_gpus else generator_placement(cfg)
    sharded = cfg.train.parallel == "fsdp"
    shards = gpus if sharded else 1
    p, c, r = BYTES[cfg.model.param_dtype], BYTES[cfg.model.compute_dtype], BYTES[reference_dtype(cfg)]
    n, h = policy.params, policy.hidden_size
    seq = prompt_tokens + cfg.train.max_new_tokens
    tokens = cfg.train.micro_batch_size * seq
    per_token_layer = c * (6 * h + 2 * policy.kv_dim + 4 * policy.intermediate_size) + 8 * h  # + fp32 norms
    if cfg.model.gradient_checkpointing:  # each layer's input kept, one layer recomputed at a time
        activations = tokens * (policy.num_hidden_layers * h * c + per_token_layer)
    else:
        activations = tokens * policy.num_hidden_layers * per_token_layer
    share = f"1/{shards}" if shards > 1 else "whole"
    lora = cfg.model.lora
    trained = policy.lora_params(lora.rank, lora.target_modules) if lora else n
    what = f"LoRA rank {lora.rank}, " if lora else ""
    rows = [
        (f"policy master weights ({cfg.model.param_dtype}, {share})", (n + (trained if lora else 0)) * p / shards),
        (f"gradients ({what}{cfg.model.param_dtype}, {share})", trained * p / shards),
        (f"AdamW moments ({what}2 x {cfg.model.param_dtype}, {share})", 2 * trained * p / shards),
    ]
    if sharded and (shards > 1 or c != p):
        rows.append((f"FSDP all-gathered units ({cfg.model.compute_dtype}: root + 2 layers)",
                     (policy.root_params + 2 * policy.layer_params) * c))
    if lora:
        rows.append(("reference (the base, adapter switched off)", 0.0))
    else:
        rows.append((f"reference ({reference_dtype(cfg)}, "
                     f"{'on CPU' if cfg.model.reference_offload else share})",
                     0.0 if cfg.model.reference_offload else n * r / shards))
    kv_cache = cfg.rollout.batch_size * seq * policy.num_hidden_layers * 2 * policy.kv_dim * r
    if placement == "colocated":
        rows.append((f"generator copy ({reference_dtype(cfg)}, colocated on rank 0)", n * r))
        rows.append((f"generator KV cache ({cfg.rollout.batch_size} sequences x {seq} tokens)", kv_cache))
    else:
        rows.append((f"generator ({placement}: on its own GPUs)", 0.0))
    rows.append((f"activations ({cfg.train.micro_batch_size} x {seq} tokens"
                 f"{', checkpointed' if cfg.model.gradient_checkpointing else ''})", activations))
    rows.append((f"logits and log-prob temporaries ({policy.vocab_size} vocab)", tokens * policy.vocab_size * (2 * c + 8)))
    if uses_rm:
        rows.append(("reward model (float32 as loaded, rank 0)", reward_model.params * 4))
    subtotal = sum(value for _, value in rows)
    rows.append((f"CUDA context and allocator slack ({CONTEXT_GIB:g} GiB + {FRAGMENTATION:.0%})",
                 CONTEXT_GIB * GIB + FRAGMENTATION * subtotal))
    generator_rows: list[tuple[str, float]] = []
    if placement != "colocated" and generator_gpus:
        generator_rows = [(f"generator weights ({reference_dtype(cfg)}, tensor-parallel 1/{generator_gpus})",
                           n * r / generator_gpus),
                          (f"KV cache ({cfg.rollout.batch_size} sequences x {seq} tokens, 1/{generator_gpus})",
                           kv_cache / generator_gpus),
                          (f"CUDA context ({CONTEXT_GIB:g} GiB)", CONTEXT_GIB * GIB)]
    header = (f"policy {policy.params / 1e9:.2f}B parameters ({policy.source}); {gpus} trainer GPU(s)"
              f"{' with FSDP' if sharded else ''}; generator {placement}"
              f"{f' on {generator_gpus} GPU(s)' if generator_rows else ''}")
    return Plan(rows, generator_rows, sum(v for _, v in rows), sum(v for _, v in generator_rows),
                capacity_gib * GIB, gpus, generator_gpus, header)


def format_plan(plan: Plan) -> str:
    width = max(len(name) for name, _ in plan.rows + plan.generator_rows) + 2
    lines = [plan.header, "", f"{'per trainer GPU (rank 0)':<{width}}{'GiB':>8}"]
    lines += [f"{name:<{width}}{value / GIB:>8.1f}" for name, value in plan.rows]
    lines.append(f"{'total':<{width}}{plan.total / GIB:>8.1f}  of {plan.capacity / GIB:.1f}")
    if plan.generator_rows:
        lines += ["", f"{'per generator GPU':<{width}}{'GiB':>8}"]
        lines += [f"{name:<{width}}{value / GIB:>8.1f}" for name, value in plan.generator_rows]
        lines.append(f"{'total':<{width}}{plan.generator_total / GIB:>8.1f}  of {plan.capacity / GIB:.1f}")
    verdict = "FITS" if plan.fits else "DOES NOT FIT"
    lines += ["", f"{verdict}: {plan.total / GIB:.1f} GiB needed on the fullest trainer GPU, "
                  f"{plan.capacity / GIB:.1f} GiB available"]
    return "\n".join(lines)


def not_fitting_message(plan: Plan, source: str) -> str:
    biggest = sorted(plan.rows, key=lambda row: -row[1])[:3]
    return (f"{source}: the run needs {plan.total / GIB:.1f} GiB on its fullest GPU but each has "
            f"{plan.capacity / GIB:.1f} GiB (largest parts: "
            + ", ".join(f"{name} {value / GIB:.1f} GiB" for name, value in biggest)
            + "). Shrink it with `train.micro_batch_size`, `model.gradient_checkpointing=true`, "
              "`rollout.batch_size`, `train.max_new_tokens`, `model.reference_offload=true`, "
              "`model.compute_dtype=bfloat16`, or more GPUs (`train.parallel=fsdp` under torchrun "
              "--nproc-per-node N); `harness plan CONFIG --gpus N` prints the whole table.")


def check_fits(cfg, source: str = "config") -> Plan | None:
    """`harness train`'s check on CUDA (one GPU per process); nothing to check on CPU."""
    import torch
    from harness.distributed import launch_env
    from harness.models import resolve_device
    if resolve_device(cfg.model.device).type != "cuda":
        return None
    _, world, local_rank, _ = launch_env()
    capacity = torch.cuda.get_device_properties(local_rank).total_memory / GIB
    try:
        plan = plan_memory(cfg, world, capacity)
    except ConfigError as exc:  # a hub id or an unknown architecture: from_pretrained may still load it
        log.warning("memory plan skipped: %s", exc)
        return None
    if not plan.fits:
        raise ConfigError(not_fitting_message(plan, source))
    return plan


def default_capacity_gib() -> float:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB
    raise ConfigError("--gpu-memory-gib is required on a machine without a GPU (an H200 has about 140 GiB).")
