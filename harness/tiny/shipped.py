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
                f"checkout?); reinstall it, or train the assets on this machine with `harness prepare --rebuild`."
            )


def install_shipped(out_dir: Path, manifest: dict, recipe: dict, shipped_dir: Path | None = None) -> dict:
    """Write a cache folder's models from the shipped files (float32 weights) and its DONE.json;
    the caller writes the recipe's data (harness.tiny.build.write_data)."""
    shipped_dir = Path(shipped_dir or SHIPPED_DIR)
    verify_shipped(manifest, shipped_dir)
    out_dir = Path(out_dir)
    for name in sorted(manifest["files"]):
        source, target = Path(shipped_dir) / name, out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.name == WEIGHTS:
            tensors = {key: value.to(torch.float32) for key, value in load_file(source).items()}
            save_file(tensors, target, metadata={"format": "pt"})
        else:
            shutil.copyfile(source, target)
    summary = {
        **manifest["summary"],
        "recipe_hash": manifest["recipe_hash"],
        "recipe": recipe,
        "source": "shipped",
        "shipped_digest": manifest_digest(manifest),
    }
    (out_dir / "DONE.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def ship_build(build_dir: Path, recipe: dict, seed_eval, shipped_dir: Path | None = None, log=print) -> dict:
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
        manifest = {
            "recipe_hash": built["recipe_hash"],
            "files": files,
            "summary": {
                key: built[key]
                for key in (
                    "timings",
                    "total_wall_s",
                    "policy",
                    "reward_model",
                    "bf16_autocast",
                    "versions",
                    "built_at",
                )
            },
        }
        manifest["summary"]["built_on"] = _cpu_name()
        log("measuring the seed on the bf16-rounded weights")
        manifest["summary"]["seed_eval"] = seed_eval(manifest, recipe, staging)
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


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
