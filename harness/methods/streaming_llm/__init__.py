"""`streaming_llm`: StreamingLLM (Xiao et al., 2023, arXiv 2309.17453; mit-han-lab/streaming-llm).

Attention sinks + a sliding window: every query attends to the first `sinks` tokens and to the `window` most recent
tokens (itself included), i.e. to what the official `StartRecentKVCache` keeps (cache size = sinks + window,
`evict_for_space` before each step). Positions are the positions **within that cache** (the official pos-shift
attention): window keys keep their true relative distance, and sink j is seen from a query at cache slot
min(i, sinks + window − 1), i.e. at distance min(i, sinks + window − 1) − j. For L <= sinks + window nothing is evicted
and the method is the unmodified model.

Memory: the KV cache is `SinkWindowCache` (harness.methods.common.cache), which keeps the sinks and the last
`window` tokens of every layer and drops the rest, so it holds at most sinks + window tokens whatever the length.
Positions are cache slots (the cache holds un-rotated keys; the kernel rotates each by its slot at every forward).
Prompts are prefilled in chunks of max(window, PREFILL_CHUNK) tokens (a given `stride` overrides it): a forward
holds at most sinks + window + chunk keys per layer. See docs/methods/streaming.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import TOKENS, TOKENS0
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.banded import PositionTable
from harness.methods.common.cache import SinkWindowCache, decoder_layer_count
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.common.sinks import sink_band_attention
from harness.methods.streaming_llm.checks import INVARIANTS

OFFICIAL_SINKS = 4  # start_size of the official examples
OFFICIAL_RECENT = 2000  # recent_size of examples/run_streaming_llama.py (Llama-2, 4K window)
PREFILL_CHUNK = 512  # tokens per prefill forward at least (max(window, this)): bounds a forward's keys and activations


@dataclass
class StreamingLLMParams:
    """`sinks` (official start_size, 4) and `window` (recent tokens incl. the current one; default
    min(2000, M − sinks): the official recent_size where it fits the model's window M)."""

    sinks: int = field(default=OFFICIAL_SINKS, metadata=TOKENS0)
    window: int | None = field(default=None, metadata=TOKENS)


def streaming_window(params: StreamingLLMParams, original_window: int) -> int:
    """The sliding window W (default: min(2000, M − sinks))."""
    if params.window is not None:
        return params.window
    return max(1, min(OFFICIAL_RECENT, original_window - params.sinks))


class StreamingLLMKernel:
    """Band of `window` keys at their true distance + `sinks` starting keys seen from cache slot min(i, S + W − 1).

    Positions are indices into the keys of the forward. With every token cached (DynamicCache) an index is the
    token's position; with `SinkWindowCache` it is its cache slot (sinks first, then the contiguous recent tokens):
    once a token was evicted every query sits at slot >= S + W, so its sinks are at distance S + W − 1 − j and its
    window keys at their true distance either way: both caches give the same attention.
    """

    def __init__(self, tables: Any, sinks: int, window: int):
        self.tables, self.sinks, self.window = tables, sinks, window
        self.table = PositionTable(tables.inv_freq, float(getattr(tables, "attention_scaling", 1.0)))

    def _sink_q(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.tables.rotate(x, pos.clamp(max=self.sinks + self.window - 1))

    def _sink_k(self, x: torch.Tensor) -> torch.Tensor:
        return self.table.rotate(x, 0)

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sink_band_attention(q, k, v, self.sinks, self.window, self.table, self.tables.rotate,
                                   self._sink_q, self._sink_k, cast(float, module.scaling))


@METHODS.register("streaming_llm", aliases=("streamingllm",), invariants=INVARIANTS)
class StreamingLLM(Method[StreamingLLMParams]):
    """StreamingLLM: attention sinks + sliding window, positions within the cache."""

    @classmethod
    def validate(cls, params: StreamingLLMParams, cfg: ExperimentConfig, window: int | None) -> None:
        if window and params.sinks + streaming_window(params, window) > window:
            raise ConfigError("params.window", f"sinks + window = {params.sinks} + "
                              f"{streaming_window(params, window)} exceeds the model's window {window}: cache "
                              "positions up to sinks + window − 1 would be unseen",
                              f"use window <= {window - params.sinks}")

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        return {"sinks": OFFICIAL_SINKS, "window": max(1, window - OFFICIAL_SINKS)}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        self.validate(self.params, self.cfg, info.original_window)
        w = streaming_window(self.params, info.original_window)
        self.kernel = StreamingLLMKernel(RopeTables(model), self.params.sinks, w)
        install_kernel(model, self.kernel)

    def _kernel(self) -> StreamingLLMKernel:
        kernel = getattr(self, "kernel", None)
        if kernel is None:
            raise RuntimeError("StreamingLLM.apply(model, info) must run before the cache is used")
        return kernel

    def make_cache(self, model_config: Any) -> SinkWindowCache:
        """The attention-sink cache: sinks + window tokens per layer, the middle evicted."""
        k = self._kernel()
        return SinkWindowCache(k.sinks, k.window, decoder_layer_count(model_config))

    def cache_capacity(self, info: ModelInfo) -> int | None:
        return self._kernel().sinks + self._kernel().window

    def prefill_chunks(self, n_tokens: int, stride: int | None = None) -> list[int]:
        """Chunks of `stride`, else of max(window, PREFILL_CHUNK): a forward's working memory stays bounded."""
        if stride is None and getattr(self, "kernel", None) is not None:
            stride = max(self.kernel.window, PREFILL_CHUNK)
        return super().prefill_chunks(n_tokens, stride)

    def exact_length(self, info: ModelInfo) -> int | None:
        """While L <= sinks + window nothing is evicted: the unmodified model."""
        return min(self.kernel.sinks + self.kernel.window, info.original_window)
