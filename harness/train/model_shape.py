"""A model's shape (layers, widths, vocabulary), the memory plan's input (harness.train.plan).

Read from the model folder's config.json, else taken from a built-in table of known models
(Llama-3.1-8B, Athene-RM-8B), so the paper's setting can be planned on a machine without its weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

# Built-in shapes (from the models' published config.json) for planning without the weights.
LLAMA_31_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    tie_word_embeddings=False,
    head_dim=128,
)
KNOWN_SHAPES = {
    "llama-3.1-8b": LLAMA_31_8B,
    "athene-rm-8b": {**LLAMA_31_8B, "classifier": True},  # the same shape with a one-score classification head
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
        dims = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
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
        f"({', '.join(KNOWN_SHAPES)}); put the model's config.json there to plan its memory."
    )
