"""`streaming_llm`: StreamingLLM (Xiao et al., 2023, arXiv 2309.17453; mit-han-lab/streaming-llm).

Attention sinks + a sliding window: every query attends to the first `sinks` tokens and to the `window` most recent
tokens (itself included), i.e. to what the official `StartRecentKVCache` keeps (cache size = sinks + window,
`evict_for_space` before each step). Positions are the positions **within that cache** (the official pos-shift
attention): window keys keep their true relative distance, and sink j is seen from a query at cache slot
min(i, sinks + window − 1), i.e. at distance min(i, sinks + window − 1) − j. For L <= sinks + window nothing is evicted
and the method is the unmodified model.

What is bounded: the keys each query reads (sinks + window) and the attention's working memory. The harness's KV
cache (transformers' DynamicCache, which has no public sink-cache in 5.23 / 5.25) still stores every key; see
docs/methods/streaming.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.core.errors import ConfigError
from harness.core.params import TOKENS, TOKENS0
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.banded import PositionTable
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.common.sinks import sink_band_attention
from harness.methods.streaming_llm.checks import INVARIANTS

OFFICIAL_SINKS = 4  # start_size of the official examples
OFFICIAL_RECENT = 2000  # recent_size of examples/run_streaming_llama.py (Llama-2, 4K window)


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


def streaming_relative(i: int, j: int, sinks: int, window: int) -> int | None:
    """Relative position StreamingLLM gives key j from query i (None: evicted, not attended)."""
    if i - j < window:
        return i - j
    if j < sinks:
        return min(i, sinks + window - 1) - j
    return None


class StreamingLLMKernel:
    """Band of `window` keys at their true distance + `sinks` starting keys seen from cache slot min(i, S + W − 1)."""

    def __init__(self, tables: Any, sinks: int, window: int):
        self.tables, self.sinks, self.window = tables, sinks, window
        self.table = PositionTable(tables.inv_freq, float(getattr(tables, "attention_scaling", 1.0)))

    def _sink_q(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.tables.rotate(x, pos.clamp(max=self.sinks + self.window - 1))

    def _sink_k(self, x: torch.Tensor) -> torch.Tensor:
        return self.table.rotate(x, 0)

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sink_band_attention(q, k, v, self.sinks, self.window, self.table, self.tables.rotate,
                                   self._sink_q, self._sink_k, module.scaling)


@METHODS.register
class StreamingLLM(Method):
    """StreamingLLM: attention sinks + sliding window, positions within the cache."""

    name = "streaming_llm"
    aliases = ("streamingllm",)
    Params = StreamingLLMParams
    description = "StreamingLLM: attention sinks + sliding window (positions within the cache)"
    invariants = INVARIANTS

    @classmethod
    def validate(cls, params: StreamingLLMParams, cfg: Any, window: int | None) -> None:
        if params.sinks < 0:
            raise ConfigError("params.sinks", f"must be >= 0, got {params.sinks}", "use 4 (official start_size)")
        if params.window is not None and params.window < 1:
            raise ConfigError("params.window", f"must be >= 1, got {params.window}",
                              "leave it out for min(2000, M − sinks), or use a value below the model's window")
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

    def exact_length(self, info: ModelInfo) -> int | None:
        """While L <= sinks + window nothing is evicted: the unmodified model."""
        return min(self.kernel.sinks + self.kernel.window, info.original_window)
