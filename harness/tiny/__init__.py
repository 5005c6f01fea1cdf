"""Embedded tiny default: a character tokenizer, a tiny SFT-warm-started Llama policy, a
synthetic verifiable math task, a synthetic chat task and a tiny length-biased reward model.

The package ships one build's weights (bf16, sha256-checked; `harness.tiny.shipped`), installed into
the cache in seconds, so every machine runs the same seed. `harness.tiny.build` holds the recipe that
trains them (about 7 minutes on 2 CPU cores: `harness prepare --rebuild`).
"""

from harness.tiny.build import (
    RECIPE_VERSION,
    TinyAssets,
    build_tiny_assets,
    ensure_tiny_assets,
    prepare_main,
    recipe_hash,
    resolve_cache_root,
    tiny_recipe,
)
from harness.tiny.math_task import TINY_MATH_PROMPT_TEMPLATE
from harness.tiny.tokenizer import build_tiny_tokenizer

__all__ = [
    "RECIPE_VERSION",
    "TINY_MATH_PROMPT_TEMPLATE",
    "TinyAssets",
    "build_tiny_assets",
    "build_tiny_tokenizer",
    "ensure_tiny_assets",
    "prepare_main",
    "recipe_hash",
    "resolve_cache_root",
    "tiny_recipe",
]
