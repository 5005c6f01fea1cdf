"""Build, cache and load the embedded tiny assets: data, SFT-warm-started policy, reward model.

``ensure_tiny_assets()`` returns the cached assets for the current recipe, making them first if
needed: installed from the package's shipped build when it is of this recipe (seconds, the same
weights on every CPU; ``harness.tiny.shipped``), else trained here (about 7 minutes on 2 CPU
cores; bf16 autocast makes the weights depend on the CPU's kernels). The cache lives in
``<root>/tiny/shipped-<digest>/`` or ``<root>/tiny/<recipe_hash>/`` with root = argument, else
``$HARNESS_CACHE``, else ``~/.cache/harness``. A build writes into a temp folder beside the final one, writes
``DONE.json`` last and renames the folder into place, so a half-written build is never seen;
an ``fcntl`` lock on ``<root>/tiny/.lock`` makes concurrent callers (e.g. sweep trials) wait
for one builder and then reuse its result.

The recipe (every size, seed, step count and learning rate, plus ``RECIPE_VERSION``) is hashed
into the folder name, so any change to it gives a fresh build instead of a stale one.

The steps live in their own modules: ``sft`` (the policy's warm start), ``reward_training``
(the reward model), ``seed_eval`` (the measurements in DONE.json), ``train_utils``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig
from transformers.utils import logging as hf_logging

from harness.errors import ConfigError
from harness.tiny import chat_task, math_task
from harness.tiny.reward_training import score_responses, train_reward_model
from harness.tiny.seed_eval import evaluate_seed, sample_math_accuracy, sample_responses
from harness.tiny.sft import train_policy
from harness.tiny.shipped import install_shipped, manifest_digest, ship_build, shipped_for
from harness.tiny.tokenizer import build_tiny_tokenizer
from harness.tiny.train_utils import special_ids, use_bf16
from harness.files import resolve_cache_root

__all__ = [
    "RECIPE_VERSION",
    "TinyAssets",
    "build_tiny_assets",
    "ensure_tiny_assets",
    "prepare_main",
    "recipe_hash",
    "resolve_cache_root",
    "sample_math_accuracy",
    "sample_responses",
    "score_responses",
    "tiny_recipe",
]

RECIPE_VERSION = 1
_DEFAULT_RECIPE = {
    "version": RECIPE_VERSION,
    "seed": 0,
    "math": {"splits": dict(math_task.DEFAULT_MATH_SPLITS), **math_task.DEFAULT_MATH_PARAMS},
    "chat": {
        "splits": dict(chat_task.DEFAULT_CHAT_SPLITS),
        "length_bias": chat_task.DEFAULT_LENGTH_BIAS,
        "preference_temperature": 0.1,
    },
    "policy": {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
    },
    # `direct_answer_fraction` of the math SFT targets are the bare boxed answer, the rest work the
    # chain step by step. The seed then mixes a guessing style (about 5% correct at T=1.0) with a
    # reliable one (about 54%), as a model that sometimes skips its reasoning does: RL has a
    # behaviour to select for, which a 3M model can learn in tens of steps, whereas its
    # arithmetic slips barely move in that budget. Measured at 600 steps and 0.3: 30% of answers
    # direct, 39% correct at T=1.0 and 53% at T=0.6; online DPO reached 67% at T=0.6 in 40 steps.
    # (Without direct answers, 400 steps gave 37% and RL moved it by less than its noise.)
    "sft": {
        "steps": 600,
        "direct_answer_fraction": 0.3,
        "math_per_batch": 56,
        "chat_per_batch": 16,
        "lr": 2e-3,
        "warmup_steps": 30,
        "min_lr_ratio": 0.1,
        "grad_clip": 1.0,
        "bf16_autocast": "auto",
        "pack_length": 128,
    },
    # The reward model starts from the SFT policy's embeddings and first 2 layers (as RLHF reward
    # models start from the SFT model): a from-scratch one learned the task worse in budget.
    # Each step scores `group_size` synthetic responses to each of `prompts_per_batch` prompts
    # and trains on every pair within a group.
    "reward_model": {
        "num_hidden_layers": 2,
        "steps": 200,
        "prompts_per_batch": 16,
        "group_size": 4,
        "lr": 1e-3,
        "warmup_steps": 20,
        "heldout_pairs": 512,
        "bf16_autocast": "auto",
    },
    "seed_eval": {"problems": 256, "temperature": 1.0, "max_new_tokens": 48},
}


@dataclass(frozen=True)
class TinyAssets:
    """Paths of one finished build, and its ``DONE.json`` summary."""

    root: Path
    recipe_hash: str
    summary: dict = field(repr=False, compare=False)

    @property
    def policy_dir(self) -> Path:
        return self.root / "policy"

    @property
    def reward_model_dir(self) -> Path:
        return self.root / "reward_model"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


def tiny_recipe(**overrides) -> dict:
    """The default recipe, with top-level keys or sections overridden, e.g.
    ``tiny_recipe(seed=1, sft={"steps": 500})``. Unknown keys raise ConfigError."""
    recipe = copy.deepcopy(_DEFAULT_RECIPE)
    for key, value in overrides.items():
        if key not in recipe:
            raise ConfigError(f"tiny recipe: unknown key {key!r}; expected one of {sorted(recipe)}.")
        if isinstance(recipe[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"tiny recipe: {key} must be a mapping of overrides, got {value!r}.")
            unknown = sorted(set(value) - set(recipe[key]))
            if unknown:
                raise ConfigError(
                    f"tiny recipe: unknown keys {unknown} under {key!r}; expected some of {sorted(recipe[key])}."
                )
            recipe[key].update(copy.deepcopy(value))
        else:
            recipe[key] = value
    return recipe


def recipe_hash(recipe: dict) -> str:
    """Short sha256 of the canonical JSON of the recipe."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _load_assets(folder: Path) -> TinyAssets | None:
    done = folder / "DONE.json"
    if not done.is_file():
        return None
    summary = json.loads(done.read_text(encoding="utf-8"))
    return TinyAssets(root=folder, recipe_hash=summary["recipe_hash"], summary=summary)


def ensure_tiny_assets(
    cache_root: str | os.PathLike | None = None,
    progress: bool = True,
    recipe: dict | None = None,
    force: bool = False,
    rebuild: bool = False,
) -> TinyAssets:
    """Return the cached assets for `recipe` (default `tiny_recipe()`), making them if missing (or if
    `force`): installed from the package's shipped build when it matches the recipe (seconds, the
    same weights on every machine; harness.tiny.shipped), else trained from the recipe (minutes,
    this CPU's weights). `rebuild` trains even when a shipped build matches. Safe to call from
    several processes at once."""
    recipe = tiny_recipe() if recipe is None else recipe
    digest = recipe_hash(recipe)
    manifest = None if rebuild else shipped_for(digest)
    parent = resolve_cache_root(cache_root) / "tiny"
    final = parent / (f"shipped-{manifest_digest(manifest)}" if manifest else digest)
    if not force and (assets := _load_assets(final)) is not None:
        return assets
    parent.mkdir(parents=True, exist_ok=True)
    log = _logger(progress)
    with open(parent / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process making tiny assets (lock {parent / '.lock'})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (assets := _load_assets(final)) is not None:
            return assets  # the process we waited for made them
        building = Path(tempfile.mkdtemp(prefix=f".{final.name}.building.", dir=parent))
        try:
            if manifest:
                log(f"installing the shipped tiny assets {manifest_digest(manifest)} in {final}")
                install_shipped(building, manifest, recipe)  # checks every sha256 first
                write_data(building, recipe)
            else:
                log(f"building tiny assets {digest} from the recipe in {final}")
                build_tiny_assets(building, recipe, progress)
            building.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            _replace_folder(building, final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return _load_assets(final)


def _replace_folder(new: Path, final: Path) -> None:
    """Rename `new` to `final`; an older folder there (forced rebuild, or one left without
    DONE.json) is moved aside first and deleted."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.rename(final, old / "previous")
        os.rename(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, final)


def prepare_main(
    cache_root: str | os.PathLike | None = None, force: bool = False, rebuild: bool = False, ship: bool = False
) -> TinyAssets:
    """What `harness prepare` runs: ensure the assets (installed from the package, or with
    `rebuild` trained from the recipe; `ship` then replaces the package's shipped files with
    that build), then print paths and the build summary."""
    assets = ensure_tiny_assets(cache_root, progress=True, force=force or rebuild, rebuild=rebuild)
    if ship:
        ship_build(assets.root, assets.summary["recipe"], evaluate_shipped, log=_logger(True))
    summary = assets.summary
    seed, rm = summary["seed_eval"], summary["reward_model"]
    source = (
        f"shipped build {summary['shipped_digest']} (made on {summary.get('built_on', 'unknown CPU')})"
        if summary.get("source") == "shipped"
        else "trained on this machine from the recipe"
    )
    print(f"tiny assets {assets.recipe_hash}: {assets.root}")
    print(f"  source:       {source}")
    print(f"  policy:       {assets.policy_dir} ({summary['policy']['params']:,} params)")
    print(f"  reward model: {assets.reward_model_dir} ({rm['params']:,} params)")
    print(f"  data:         {assets.data_dir}")
    print(
        f"  seed math accuracy (T={seed['math']['temperature']}, {seed['math']['problems']} "
        f"validation problems): {seed['math']['accuracy']:.3f}"
    )
    print(f"  seed chat quality: {seed['chat']['mean_quality']:.3f}, RM score {seed['chat']['mean_rm_score']:.2f}")
    print(
        f"  reward model held-out pair accuracy: {rm['heldout_pair_accuracy']:.3f} "
        f"(correct vs wrong: {rm['correct_vs_wrong_accuracy']:.3f}); filler suffix adds "
        f"{rm['filler_suffix_delta']:+.2f} to the score"
    )
    phases = ", ".join(f"{name} {t['wall_s']:.1f}s" for name, t in summary["timings"].items())
    where = f" on {summary['built_on']}" if summary.get("built_on") else ""
    print(f"  recipe build seconds{where}: {summary['total_wall_s']:.1f} ({phases})")
    return assets


def build_tiny_assets(out_dir: str | os.PathLike, recipe: dict | None = None, progress: bool = True) -> dict:
    """Build everything into `out_dir` (data/, policy/, reward_model/, then DONE.json) and
    return the summary written to DONE.json. Prefer `ensure_tiny_assets`, which caches."""
    recipe = tiny_recipe() if recipe is None else recipe
    out_dir, log, timings = Path(out_dir), _logger(progress), {}
    started = time.perf_counter()
    with deterministic_torch(), _phase(timings, "data"):
        log("building tiny tokenizer and data")
        tokenizer, math_splits, chat_splits = write_data(out_dir, recipe)
    with deterministic_torch(), _phase(timings, "sft"):
        policy = train_policy(tokenizer, math_splits["train"], chat_splits["train"], recipe, log)
        _save_policy(policy, tokenizer, out_dir / "policy")
    with deterministic_torch(), _phase(timings, "reward_model"):
        reward_model, rm_stats = train_reward_model(tokenizer, chat_splits, recipe, policy, log)
        _save_pretrained(reward_model, tokenizer, out_dir / "reward_model")
    with deterministic_torch(), _phase(timings, "seed_eval"):
        seed_eval = evaluate_seed(
            policy, reward_model, tokenizer, math_splits["validation"], chat_splits["validation"], recipe, log
        )
    summary = {
        "recipe_hash": recipe_hash(recipe),
        "recipe": recipe,
        "timings": timings,
        "total_wall_s": round(time.perf_counter() - started, 2),
        "policy": {"params": sum(p.numel() for p in policy.parameters())},
        "reward_model": {"params": sum(p.numel() for p in reward_model.parameters()), **rm_stats},
        "seed_eval": seed_eval,
        "bf16_autocast": {
            "sft": use_bf16(recipe["sft"]["bf16_autocast"]),
            "reward_model": use_bf16(recipe["reward_model"]["bf16_autocast"]),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "built_by_pid": os.getpid(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / "DONE.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(
        f"tiny assets built in {summary['total_wall_s']:.0f}s: seed math accuracy "
        f"{seed_eval['math']['accuracy']:.3f}, RM held-out accuracy "
        f"{rm_stats['heldout_pair_accuracy']:.3f}"
    )
    return summary


def generate_splits(recipe: dict) -> tuple[dict, dict]:
    """The recipe's math and chat splits (seeded pure Python: the same on every machine)."""
    math_splits = math_task.generate_math_splits(
        recipe["seed"], recipe["math"]["splits"], {key: recipe["math"][key] for key in math_task.DEFAULT_MATH_PARAMS}
    )
    chat_splits = chat_task.generate_chat_splits(recipe["seed"] + 1, recipe["chat"]["splits"])
    return math_splits, chat_splits


def write_data(out_dir: Path, recipe: dict):
    """Write data/math/*.jsonl and data/chat/*.jsonl; return (tokenizer, math_splits, chat_splits)."""
    math_splits, chat_splits = generate_splits(recipe)
    math_task.write_math_splits(Path(out_dir) / "data", math_splits)
    for name, records in chat_splits.items():
        math_task.write_jsonl(Path(out_dir) / "data" / "chat" / f"{name}.jsonl", records)
    return build_tiny_tokenizer(), math_splits, chat_splits


def _save_policy(model, tokenizer, folder: Path) -> None:
    model.generation_config = GenerationConfig(**special_ids(tokenizer))
    _save_pretrained(model, tokenizer, folder)


def _save_pretrained(model, tokenizer, folder: Path) -> None:
    """save_pretrained (safetensors) without transformers' per-shard progress bar."""
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def _logger(progress: bool):
    def log(message: str) -> None:
        if progress:
            print(f"[tiny] {message}", file=sys.stderr, flush=True)

    return log


@contextlib.contextmanager
def _phase(timings: dict, name: str):
    """Record wall and process-CPU seconds of a phase (CPU/wall ~ 2 means 2 busy cores; less
    means the cores were shared)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[name] = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2)}


@contextlib.contextmanager
def deterministic_torch():
    """At most 2 threads and deterministic kernels during the build; restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(min(2, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def evaluate_shipped(manifest: dict, recipe: dict, shipped_dir: Path) -> dict:
    """The seed evaluation of a shipped build, loaded from its bf16 files as a user would get it."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    math_splits, chat_splits = generate_splits(recipe)
    with tempfile.TemporaryDirectory(prefix="harness-ship-") as scratch:
        install_shipped(Path(scratch), {**manifest, "summary": {}}, recipe, shipped_dir)
        write_data(Path(scratch), recipe)
        policy = AutoModelForCausalLM.from_pretrained(Path(scratch) / "policy", dtype=torch.float32).eval()
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            Path(scratch) / "reward_model", dtype=torch.float32
        ).eval()
        with deterministic_torch():
            return evaluate_seed(
                policy,
                reward_model,
                build_tiny_tokenizer(),
                math_splits["validation"],
                chat_splits["validation"],
                recipe,
            )
