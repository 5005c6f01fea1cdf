"""KV caches for the sampler and the trainer, over transformers' layered `Cache` API.

- `preallocated_cache(model, capacity)`: the sampler's cache. Each layer's keys and values live in a
  buffer of the final width, written in place; growing them by concatenation (transformers'
  `DynamicLayer`) copies the whole cache at every token, which is quadratic in the length.
  `select_rows` drops finished rows from the batch or repeats a prompt's rows for its samples.
- `cache_from_states(states)`: a cache that starts from given (keys, values) per layer, with their
  autograd history; the trainer's shared-prompt forward (`harness.train.sequences`) continues from it.
- `CACHE_KWARG`, `cache_of`: the forward argument and output field, whose names changed in
  transformers 5.

`LAYERED` is False on a transformers without that API; callers then use the model's own cache.
"""

from __future__ import annotations

import inspect

import torch
from transformers import LlamaForCausalLM

try:  # the layered KV-cache API
    from transformers.cache_utils import Cache, DynamicLayer

    LAYERED = True
except ImportError:  # pragma: no cover - an older transformers
    Cache, DynamicLayer, LAYERED = None, object, False


class PreallocatedLayer(DynamicLayer):
    """One decoder layer's KV cache in a buffer of fixed capacity, written in place; `update` returns
    views of the filled part, so attention sees exactly what the concatenating DynamicLayer would."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.key_buffer = key_states.new_empty((*key_states.shape[:2], self.capacity, key_states.shape[-1]))
        self.value_buffer = value_states.new_empty((*value_states.shape[:2], self.capacity, value_states.shape[-1]))
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} positions)")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def select_rows(self, index: torch.Tensor) -> None:
        """Row i of the batch becomes old row index[i] (drops or repeats rows; copies the filled part)."""
        if not self.is_initialized:
            return
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            new = old.new_empty((len(index), *old.shape[1:]))
            new[:, :, : self.length] = old[index, :, : self.length]
            setattr(self, name, new)
        self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]


def group_repeats(keys: list) -> tuple[list[int], list[int]]:
    """(first, source) for rows keyed by `keys` (e.g. prompt token tuples): `first` lists the first row of
    each distinct key in order of appearance, `source[row]` is the index of the row's key in `first`."""
    first_row: dict = {}
    for row, key in enumerate(keys):
        first_row.setdefault(key, row)
    number = {key: i for i, key in enumerate(first_row)}
    return list(first_row.values()), [number[key] for key in keys]


def num_layers(model) -> int:
    return model.config.get_text_config(decoder=True).num_hidden_layers


def preallocated_cache(model, capacity: int):
    """A cache of `capacity` positions per layer for `model`; None without the layered API."""
    if not LAYERED:
        return None
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(num_layers(model))])


def cache_from_states(states: list[tuple[torch.Tensor, torch.Tensor]]):
    """A cache holding (keys [B, H, P, D], values) per layer, gradients flowing back into them; the next
    forward appends to copies, never writes into them. None without the layered API."""
    if not LAYERED:
        return None
    layers = []
    for keys, values in states:
        layer = DynamicLayer()
        layer.dtype, layer.device = keys.dtype, keys.device
        layer.keys, layer.values, layer.is_initialized = keys, values, True
        layers.append(layer)
    return Cache(layers=layers)


def cache_states(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a layered cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_kwarg() -> str:
    # transformers 5 renamed the forward argument `past_key_values` to `cache` in some releases.
    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


CACHE_KWARG = _cache_kwarg()
