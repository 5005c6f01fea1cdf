"""Model loading: a causal LM and its tokenizer from a local checkpoint, its dtype and device.

The trainer (policy, reference), the rollout backends and the evaluators all load models here,
so a checkpoint is read one way everywhere; `resolve_paths` turns a run config's `model.policy`
and `model.reward_model` ('tiny' included) into what is loaded (training and `harness eval --config`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from harness.errors import AssetMissingError
from harness.tasks import task_types

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_paths(cfg) -> tuple[str, str | None]:
    """(policy, reward model) folders or hub ids of a run config: 'tiny' means the embedded assets
    (built on first use); the reward model only if the task mix needs one."""
    policy = cfg.model.policy
    reward_model = cfg.model.reward_model if "non_verifiable" in task_types(cfg.task_mix) else None
    if "tiny" in (policy, reward_model):
        from harness.tiny import ensure_tiny_assets

        assets = ensure_tiny_assets()
        policy = str(assets.policy_dir) if policy == "tiny" else policy
        reward_model = str(assets.reward_model_dir) if reward_model == "tiny" else reward_model
    return policy, reward_model


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when a GPU is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_policy(
    path: str | Path, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer exactly as a real checkpoint is loaded."""
    _require_checkpoint_folder(path)
    try:
        tokenizer = load_tokenizer(path, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise AssetMissingError(
            f"model {path}: could not be loaded with from_pretrained ({exc}). Point model.policy "
            f"at a local folder with the weights; nothing is downloaded at run time."
        ) from None
    model.to(resolve_device(device))
    return model, tokenizer


def build_on_meta(
    path: str | Path, dtype: str = "float32", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The checkpoint's architecture with no weights (meta device), in the mode `from_pretrained`
    leaves a model (eval), and its tokenizer: an FSDP rank other than 0 builds this and receives
    its shards from rank 0 (harness.distributed.shard_from_rank0)."""
    from transformers import AutoConfig, GenerationConfig

    _require_checkpoint_folder(path)
    try:
        tokenizer = load_tokenizer(path, trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise AssetMissingError(f"model {path}: could not read its config or tokenizer ({exc}).") from None
    if (Path(path) / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval(), tokenizer


def _require_checkpoint_folder(path: str | Path) -> None:
    local = Path(path)
    looks_local = local.is_absolute() or str(path).startswith((".", "~")) or local.exists()
    if looks_local and not (local / "config.json").is_file():
        raise AssetMissingError(
            f"model path {path}: no config.json there. Expected a folder written by "
            f"save_pretrained (config.json, model.safetensors, tokenizer files); for the paper "
            f"setting download meta-llama/Llama-3.1-8B-Instruct there first (this machine cannot)."
        )


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A checkpoint's tokenizer; one without a pad token pads with EOS (the loss masks padding)."""
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
