"""The shipped tiny assets (harness.tiny.shipped): installed in seconds, identical on every machine,
refused with one clear error when a shipped file is damaged, and bypassed by `--rebuild`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness.tiny.shipped as shipped
from harness.errors import AssetMissingError
from harness.tiny import ensure_tiny_assets, recipe_hash, tiny_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_ships_the_default_recipe_and_its_checksums_hold():
    manifest = shipped.read_manifest()
    assert manifest is not None, "harness/tiny/shipped/MANIFEST.json is missing"
    assert manifest["recipe_hash"] == recipe_hash(tiny_recipe()), "the shipped build is of another recipe"
    for name, digest in manifest["files"].items():  # hashed here, independently of the installer
        assert hashlib.sha256((shipped.SHIPPED_DIR / name).read_bytes()).hexdigest() == digest, name
    sizes = sum((shipped.SHIPPED_DIR / name).stat().st_size for name in manifest["files"])
    assert sizes < 10_000_000, f"the shipped assets grew to {sizes:,} bytes; expected a few MB of bf16 weights"


def test_install_reproduces_the_seed_measured_when_shipping(tmp_path):
    """The installed weights are the ones the manifest's seed accuracy was measured on: sampling them
    again (same seed, same prompts) gives the recorded accuracy, and the data is the recipe's."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.tiny.build import deterministic_torch
    from harness.tiny.seed_eval import sample_math_accuracy
    from harness.tiny.tokenizer import build_tiny_tokenizer

    assets = ensure_tiny_assets(tmp_path, progress=False)
    assert assets.summary["source"] == "shipped" and assets.root.name.startswith("shipped-")
    policy = AutoModelForCausalLM.from_pretrained(assets.policy_dir, dtype=torch.float32).eval()
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    records = [json.loads(line) for line in (assets.data_dir / "math" / "validation.jsonl").read_text().splitlines()]
    recipe = tiny_recipe()["seed_eval"]
    with deterministic_torch():
        stats = sample_math_accuracy(
            policy,
            build_tiny_tokenizer(),
            records[: recipe["problems"]],
            recipe["temperature"],
            seed=tiny_recipe()["seed"],
            max_new_tokens=recipe["max_new_tokens"],
        )
    assert stats["accuracy"] == shipped.read_manifest()["summary"]["seed_eval"]["math"]["accuracy"]
    assert len(records) == tiny_recipe()["math"]["splits"]["validation"]


def _copy_shipped(tmp_path: Path, monkeypatch) -> Path:
    copy = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED_DIR, copy)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", copy)
    return copy


def test_a_damaged_shipped_file_is_refused_and_leaves_no_cache(tmp_path, monkeypatch):
    copy = _copy_shipped(tmp_path, monkeypatch)
    weights = copy / "policy" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(AssetMissingError) as caught:
        ensure_tiny_assets(cache, progress=False)
    message = str(caught.value)
    assert str(weights) in message and "sha256" in message and "--rebuild" in message
    assert [p.name for p in (cache / "tiny").iterdir() if p.name != ".lock"] == []  # nothing half-written


def test_a_git_lfs_pointer_instead_of_weights_is_refused(tmp_path, monkeypatch):
    copy = _copy_shipped(tmp_path, monkeypatch)
    (copy / "reward_model" / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0000\nsize 2678952\n"
    )
    with pytest.raises(AssetMissingError, match="reward_model/model.safetensors"):
        ensure_tiny_assets(tmp_path / "cache", progress=False)


def test_another_recipe_is_not_served_the_shipped_build():
    assert shipped.shipped_for(recipe_hash(tiny_recipe(seed=1))) is None
    assert shipped.shipped_for(recipe_hash(tiny_recipe())) is not None


def test_prepare_ship_without_rebuild_is_refused_before_any_work(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "prepare", "--ship", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode != 0
    assert "--rebuild" in done.stderr
    assert not any(tmp_path.iterdir())
