"""LoRA training of the policy (`model.lora`, through peft), for researchers with one GPU.

    harness train sweeps/runs/tiny.yaml model.lora.rank=8 ref_sync_every=inf

The base weights stay frozen; only the low-rank adapters train (so gradients and Adam moments
are tiny). The reference is the same model with the adapter switched off, so no second copy
exists; that is why the reference cannot follow the policy (`ref_sync_every` must be inf).
The generator and the checkpoint export receive merged weights (W + scale * B @ A) under the
base model's own parameter names, so evaluation and `from_pretrained` never see peft.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError

ADAPTER_PREFIX = "adapter"


def apply_lora(policy, settings):
    """Wrap the policy with fresh LoRA adapters (B = 0, so it starts equal to the base)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError(
            "model.lora is set but peft is not installed; install the extra: pip install -e '.[lora]'."
        ) from None
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(policy, config)


def is_lora(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


class AdapterDisabled:
    """The reference: the LoRA policy's forward with its adapter switched off (the frozen base)."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def __call__(self, **inputs):
        with self.policy.disable_adapter():
            return self.policy(**inputs)

    def parameters(self):
        return self.policy.parameters()

    def eval(self):
        return self

    def requires_grad_(self, flag: bool = True):
        return self


@torch.no_grad()
def merged_state_dict(policy) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter folded in, under the base's own names."""
    from peft.tuners.lora import LoraLayer

    base = policy.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
            merged[f"{name}.weight"] = (weight + delta.to(weight.dtype)).detach()
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        merged.setdefault(plain, value)
    return merged


def adapter_state_dict(policy) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach() for k, v in get_peft_model_state_dict(policy).items()}


def load_adapter_state(policy, tensors: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(policy, tensors)
