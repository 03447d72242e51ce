"""`infllm`: InfLLM (Xiao et al., 2024, arXiv 2402.04617; thunlp/InfLLM) — training-free block memory.

Each query attends to its local window (`n_local` tokens, true distances), the `n_init` initial tokens and the
top-`topk` memory blocks (of `block_size` tokens) retrieved by representative keys, all memory tokens at distance
n_local. Defaults reproduce every InfLLM config (config/*-inf-llm.yaml): n_local = min(4096, M/2),
block_size = n_init = min(128, n_local/16), topk 16, repr_topk 4, exc_block_size = min(512, n_local/4).
The algorithm and its deviations from the official code are in harness/methods/infllm/kernel.py and
docs/methods/streaming.md (main one: retrieval per query by default; `retrieval = "chunk"` is InfLLM's prefill rule).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import MAX_TOKENS, TOKENS, TOKENS0, domain
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.infllm.checks import INVARIANTS
from harness.methods.infllm.kernel import InfLLMKernel, InfLLMSizes

log = logging.getLogger(__name__)


@dataclass
class InfLLMParams:
    """InfLLM's config keys. None: derived from the model's window M as the official configs are (see module doc).

    `retrieval`: "query" (default: every query retrieves for itself, InfLLM's decode rule; prefill = decode) or
    "chunk" (InfLLM's prefill rule: one retrieval per exc_block_size chunk by the chunk's mean query). With
    "query", `exc_block_size` is only the query block of the computation (speed and memory, not results).
    `max_cached_block` (the official GPU block cache) is accepted and has no effect: this implementation keeps every
    block where the KV cache is.
    """

    n_local: int | None = field(default=None, metadata=TOKENS)
    n_init: int | None = field(default=None, metadata=TOKENS0)
    block_size: int | None = field(default=None, metadata=TOKENS)
    topk: int = field(default=16, metadata=domain(ge=1, le=MAX_TOKENS))
    repr_topk: int = field(default=4, metadata=domain(ge=1, le=MAX_TOKENS))
    exc_block_size: int | None = field(default=None, metadata=TOKENS)
    max_cached_block: int = field(default=32, metadata=domain(ge=1, le=MAX_TOKENS))
    retrieval: Literal["query", "chunk"] = "query"


def infllm_sizes(params: InfLLMParams, window: int) -> InfLLMSizes:
    """Resolve the None defaults for a model of window M (reproduces the official configs for M >= 4096); with a
    derived block size, repr_topk is capped at it (small models)."""
    n_local = params.n_local if params.n_local is not None else max(1, min(4096, window // 2))
    small = max(1, min(128, n_local // 16))
    block = params.block_size if params.block_size is not None else small
    return InfLLMSizes(
        n_init=params.n_init if params.n_init is not None else small,
        n_local=n_local, block_size=block, topk=params.topk,
        repr_topk=params.repr_topk if params.block_size is not None else min(params.repr_topk, block),
        exc_block_size=params.exc_block_size if params.exc_block_size is not None else max(1, min(512, n_local // 4)),
        chunk_retrieval=params.retrieval == "chunk")


@METHODS.register("infllm", aliases=("inf_llm", "inf-llm"), invariants=INVARIANTS)
class InfLLM(Method[InfLLMParams]):
    """InfLLM: initial + local tokens plus top-k retrieved memory blocks."""

    @classmethod
    def validate(cls, params: InfLLMParams, cfg: ExperimentConfig, window: int | None) -> None:
        if params.block_size is not None and params.repr_topk > params.block_size:
            raise ConfigError("params.repr_topk", f"repr_topk {params.repr_topk} exceeds block_size "
                              f"{params.block_size}", "use repr_topk <= block_size (official: 4 of 128)")
        if not window:
            return
        z = infllm_sizes(params, window)
        if z.n_local > window:
            raise ConfigError("params.n_local", f"n_local {z.n_local} exceeds the model's window {window}: local "
                              "distances up to n_local would be unseen", f"use n_local <= {window // 2}")
        if z.exc_block_size > z.n_local:
            raise ConfigError("params.exc_block_size", f"exc_block_size {z.exc_block_size} exceeds n_local "
                              f"{z.n_local} (InfLLM requires exc_block_size <= n_local)",
                              f"use exc_block_size <= {z.n_local}")
        if z.repr_topk > z.block_size:
            raise ConfigError("params.repr_topk", f"repr_topk {z.repr_topk} exceeds block_size {z.block_size}",
                              f"use repr_topk <= {z.block_size}")

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        n_local = max(2, window // 2)
        small = max(1, min(128, n_local // 16))
        return {"n_local": n_local, "n_init": small, "block_size": small, "topk": 16,
                "repr_topk": min(4, small), "exc_block_size": max(1, min(512, n_local // 4))}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        self.validate(self.params, self.cfg, info.original_window)
        sizes = infllm_sizes(self.params, info.original_window)
        log.info("infllm: %s", sizes)
        self.kernel = InfLLMKernel(RopeTables(model), sizes)
        install_kernel(model, self.kernel)

    def prefill_chunks(self, n_tokens: int, stride: int | None = None) -> list[int]:
        """With chunk retrieval a `stride` is rounded up to a multiple of exc_block_size, so no retrieval chunk is
        split across forwards (the official scripts feed 8192-token forwards, a multiple of 512)."""
        kernel = getattr(self, "kernel", None)
        if stride is not None and kernel is not None and kernel.sizes.chunk_retrieval:
            e = kernel.sizes.exc_block_size
            stride = -(-stride // e) * e
        return super().prefill_chunks(n_tokens, stride)

    def exact_length(self, info: ModelInfo) -> int | None:
        """With L <= n_local every key is local: the unmodified model."""
        return min(self.kernel.sizes.n_local, info.original_window)
