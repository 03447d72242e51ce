"""Bounded KV caches for methods that attend to a bounded set of keys, on transformers' public cache API.

`SinkWindowCache` is a `transformers.cache_utils.Cache` whose layers (`SinkWindowLayer`, a `DynamicLayer`) keep the
first `sinks` tokens and the most recent `window` tokens of the sequence and drop the tokens in between: the
attention-sink cache of StreamingLLM (the official `StartRecentKVCache(start_size, recent_size)`). Its memory is
bounded by sinks + window tokens per layer, whatever the length.

Layout. After every update a layer holds at most `capacity = sinks + window` tokens: cache slots 0..sinks−1 are the
first tokens, the slots after them a contiguous run of the most recent tokens. `update` returns the stored tokens
followed by the new ones (the keys a forward attends over), so a forward of c tokens briefly holds
capacity + c keys per layer; the engine feeds StreamingLLM prompts in bounded chunks.

`get_seq_length()` is the number of tokens held (<= capacity), as for every `DynamicLayer`: the model then numbers
the new tokens by their cache slots, which is the position rule of StreamingLLM. The number of tokens seen so far is
`cumulative_length` (the attribute name transformers' own windowed layers use, so `reset` clears it).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class SinkWindowLayer(DynamicLayer):
    """One layer's cache: the first `sinks` tokens + the last `window` tokens (evicting the middle)."""

    is_croppable = False  # evicted tokens cannot be brought back

    def __init__(self, sinks: int, window: int):
        super().__init__()
        if sinks < 0 or window < 1:
            raise ValueError(f"SinkWindowLayer needs sinks >= 0 and window >= 1, got {sinks} and {window}")
        self.sinks, self.window = sinks, window
        self.capacity = sinks + window
        self.cumulative_length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new states; return the held + new states, then keep only sinks + window of them."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.keys is not None and self.values is not None
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        self.cumulative_length += key_states.shape[-2]
        self.keys, self.values = self._keep(keys), self._keep(values)
        return keys, values

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-2]
        if n <= self.capacity:
            return x
        # a copy, so the stored tensor does not keep the forward's larger one alive
        return torch.cat([x[..., :self.sinks, :], x[..., n - self.window:, :]], dim=-2)

    def evicted(self) -> int:
        """Tokens dropped so far."""
        return self.cumulative_length - self.get_seq_length()

    def get_max_length(self) -> int:
        return self.capacity

    def crop(self, tokens_to_remove: int) -> None:
        if self.evicted():
            raise RuntimeError("SinkWindowLayer cannot be cropped once tokens were evicted")
        super().crop(tokens_to_remove)
        self.cumulative_length = self.get_seq_length()


class SinkWindowCache(Cache):
    """A KV cache of `num_layers` `SinkWindowLayer`s (attention sinks + sliding window)."""

    def __init__(self, sinks: int, window: int, num_layers: int):
        super().__init__(layers=[SinkWindowLayer(sinks, window) for _ in range(num_layers)])
        self.sinks, self.window = sinks, window

    @property
    def capacity(self) -> int:
        """Most tokens a layer holds between forwards."""
        return self.sinks + self.window


def decoder_layer_count(model_config: Any) -> int:
    """Number of decoder layers (the text decoder's, for multimodal configs such as Gemma 3's)."""
    return int(model_config.get_text_config(decoder=True).num_hidden_layers)


def cache_nbytes(cache: Cache) -> int:
    """Bytes of the key and value tensors a cache holds (all layers)."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
