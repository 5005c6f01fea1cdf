"""LoRA (peft): adapters train, the reference is the base with the adapter off, the generator and
the export get merged weights under plain names, and resume is exact."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.train import checkpoint as ckpt
from harness.config import load_run_config
from harness.errors import ConfigError
from harness.tracking import MemoryTracker
from harness.train.trainer import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sweeps" / "runs" / "tiny.yaml"
LORA = [
    "train.prompts_per_step=4",
    "train.samples_per_prompt=4",
    "train.max_new_tokens=24",
    "validation.prompts=4",
    "validation.every=100",
    "checkpoint.every=1",
    "train.lr=1e-2",
    "sync_every=2",
    "ref_sync_every=inf",
    "model.lora.rank=4",
    "method=grpo",
    "grpo.importance_sampling=true",
]


def export(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_lora_trains_adapters_against_the_base_and_syncs_merged_weights(tiny_assets, tmp_path):
    tracker = MemoryTracker()
    result = train(
        load_run_config(TINY, [*LORA, "train.steps=3", f"output_dir={tmp_path / 'a'}"]), tracker=tracker, progress=False
    )
    saved = dict(ckpt.list_checkpoints(result.output_dir))
    seed = load_file(str(Path(tiny_assets.policy_dir) / "model.safetensors"))
    final = export(saved[3])
    assert set(final) == set(seed)  # a plain from_pretrained folder, no peft names
    assert torch.equal(final["model.embed_tokens.weight"], seed["model.embed_tokens.weight"])  # not targeted
    assert not torch.equal(
        final["model.layers.0.self_attn.q_proj.weight"], seed["model.layers.0.self_attn.q_proj.weight"]
    )
    # the generator synced at step 2 holds the merged weights of that moment, under plain names
    _, tensors = ckpt.load_trainer_state(saved[3])
    generator = ckpt.weights_with_prefix(tensors, "generator")
    step2 = export(saved[2])
    assert all(torch.allclose(generator[k], step2[k], atol=1e-6) for k in step2)
    # reference = base: the KL is exactly 0 before the adapter (B = 0) has moved, and positive after
    kl = [v for _, v in tracker.series("train/kl")]
    assert kl[0] == 0.0 and kl[-1] > 0.0

    # resume: the adapters and their Adam moments come back, the frozen base needs nothing
    train(
        load_run_config(TINY, [*LORA, "train.steps=2", f"output_dir={tmp_path / 'b'}"]),
        tracker=MemoryTracker(),
        progress=False,
    )
    resumed = train(
        load_run_config(TINY, [*LORA, "train.steps=3", f"output_dir={tmp_path / 'b'}"]),
        tracker=MemoryTracker(),
        resume=True,
        progress=False,
    )
    again = export(ckpt.list_checkpoints(resumed.output_dir)[-1][1])
    assert all(torch.allclose(final[k], again[k], atol=1e-6) for k in final)


def test_lora_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="ref_sync_every=inf"):
        load_run_config(TINY, ["model.lora.rank=4"])  # verifiable online DPO: the reference would follow
    with pytest.raises(ConfigError, match="one process"):
        load_run_config(TINY, ["model.lora.rank=4", "ref_sync_every=inf", "train.parallel=fsdp"])
