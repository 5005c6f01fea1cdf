"""The tiny assets shipped in the package: one build's weights in bf16, checked by sha256.

The recipe (harness.tiny.build) trains the seed policy and the reward model under bf16 autocast,
so two kinds of CPU build slightly different weights, and every number downstream moves. The
package therefore carries one build (``harness/tiny/shipped/``: about 8 MB of bf16 safetensors,
configs, tokenizers and ``MANIFEST.json``), and ``ensure_tiny_assets()`` installs it instead of
training: it regenerates the data (pure Python, seeded: identical everywhere), checks every
shipped file against the manifest's sha256, widens the weights to float32 (exact) and writes the
usual cache folder ``<cache>/tiny/shipped-<digest>/`` with a DONE.json. Seconds, not minutes.

    harness prepare                     install the shipped assets (or find them installed)
    harness prepare --rebuild           train them from the recipe instead (this CPU's weights)
    harness prepare --rebuild --ship    ... and replace the shipped files with that build

The manifest records the seed's measurements taken on the shipped (bf16-rounded) weights, the
build's reward-model statistics and the CPU that built it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from harness.errors import AssetMissingError

SHIPPED_DIR = Path(__file__).with_name("shipped")
MANIFEST = "MANIFEST.json"
MODEL_FOLDERS = ("policy", "reward_model")
WEIGHTS = "model.safetensors"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(shipped_dir: Path | None = None) -> dict | None:
    """The shipped manifest, or None when the package carries no assets."""
    shipped_dir = Path(shipped_dir or SHIPPED_DIR)
    path = Path(shipped_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def manifest_digest(manifest: dict) -> str:
    """12 hex digits naming the shipped file set (its names and checksums)."""
    canonical = json.dumps(sorted(manifest["files"].items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def shipped_for(recipe_digest: str, shipped_dir: Path | None = None) -> dict | None:
    """The manifest when the package ships a build of exactly this recipe, else None."""
    shipped_dir = Path(shipped_dir or SHIPPED_DIR)
    manifest = read_manifest(shipped_dir)
    return manifest if manifest is not None and manifest["recipe_hash"] == recipe_digest else None


def verify_shipped(manifest: dict, shipped_dir: Path | None = None) -> None:
    """Every file the manifest lists is there with its sha256, or one AssetMissingError naming it."""
    shipped_dir = Path(shipped_dir or SHIPPED_DIR)
    for name, expected in sorted(manifest["files"].items()):
        path = Path(shipped_dir) / name
        got = sha256_file(path) if path.is_file() else "missing"
        if got != expected:
            raise AssetMissingError(
                f"{path}: the shipped tiny asset has sha256 {got}, but {Path(shipped_dir) / MANIFEST} expects "
                f"{expected}. The package's copy is damaged or partial (a Git LFS pointer, an interrupted "
                f"checkout?); reinstall it, or train the assets on this machine with `harness prepare --rebuild`.")


def install_shipped(out_dir: Path, manifest: dict, recipe: dict, shipped_dir: Path | None = None) -> dict:
    """Write a cache folder's content from the shipped files: data, float32 weights, DONE.json."""
    shipped_dir = Path(shipped_dir or SHIPPED_DIR)
    from harness.tiny.build import write_data  # build imports this module
    verify_shipped(manifest, shipped_dir)
    out_dir = Path(out_dir)
    write_data(out_dir, recipe)
    for name in sorted(manifest["files"]):
        source, target = Path(shipped_dir) / name, out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.name == WEIGHTS:
            tensors = {key: value.to(torch.float32) for key, value in load_file(source).items()}
            save_file(tensors, target, metadata={"format": "pt"})
        else:
            shutil.copyfile(source, target)
    summary = {**manifest["summary"], "recipe_hash": manifest["recipe_hash"], "recipe": recipe,
               "source": "shipped", "shipped_digest": manifest_digest(manifest)}
    (out_dir / "DONE.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def ship_build(build_dir: Path, recipe: dict, shipped_dir: Path | None = None, log=print) -> dict:
    """Replace the shipped files with the build in `build_dir` (weights narrowed to bf16), measure
    the seed on the narrowed weights, and write the manifest last."""
    shipped_dir = Path(shipped_dir or SHIPPED_DIR)
    build_dir, shipped_dir = Path(build_dir), Path(shipped_dir)
    built = json.loads((build_dir / "DONE.json").read_text(encoding="utf-8"))
    staging = Path(tempfile.mkdtemp(prefix=".shipped.", dir=shipped_dir.parent))
    try:
        files = {}
        for folder in MODEL_FOLDERS:
            for source in sorted((build_dir / folder).iterdir()):
                name = f"{folder}/{source.name}"
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if source.name == WEIGHTS:
                    tensors = {key: value.to(torch.bfloat16) for key, value in load_file(source).items()}
                    save_file(tensors, target, metadata={"format": "pt"})
                else:
                    shutil.copyfile(source, target)
                files[name] = sha256_file(target)
        manifest = {"recipe_hash": built["recipe_hash"], "files": files,
                    "summary": {key: built[key] for key in ("timings", "total_wall_s", "policy", "reward_model",
                                                            "bf16_autocast", "versions", "built_at")}}
        manifest["summary"]["built_on"] = _cpu_name()
        log("measuring the seed on the bf16-rounded weights")
        manifest["summary"]["seed_eval"] = _seed_eval_of(manifest, recipe, staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for path in [staging, *staging.rglob("*")]:  # mkdtemp and save_file make them private
            path.chmod(0o755 if path.is_dir() else 0o644)
        if shipped_dir.exists():
            shutil.rmtree(shipped_dir)
        staging.rename(shipped_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"shipped tiny assets {manifest_digest(manifest)} written to {shipped_dir}")
    return manifest


def _seed_eval_of(manifest: dict, recipe: dict, shipped_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from harness.tiny.build import deterministic_torch, generate_splits
    from harness.tiny.seed_eval import evaluate_seed
    from harness.tiny.tokenizer import build_tiny_tokenizer
    math_splits, chat_splits = generate_splits(recipe)
    with tempfile.TemporaryDirectory(prefix="harness-ship-") as scratch:
        install_shipped(Path(scratch), {**manifest, "summary": {}}, recipe, shipped_dir)
        policy = AutoModelForCausalLM.from_pretrained(Path(scratch) / "policy", dtype=torch.float32).eval()
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            Path(scratch) / "reward_model", dtype=torch.float32).eval()
        with deterministic_torch():
            return evaluate_seed(policy, reward_model, build_tiny_tokenizer(), math_splits["validation"],
                                 chat_splits["validation"], recipe)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
