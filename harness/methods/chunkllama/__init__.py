"""`chunkllama`: ChunkLlama / Dual Chunk Attention (An et al., 2024; docs/reference/methods.md §4).

The sequence is cut into chunks of C = S − W tokens; every logit uses a relative distance ≤ S < M (intra-chunk:
exact; previous chunk: query capped at S; older chunks: query at min(2C − 1, S)). Exact for inputs up to C tokens.
Runs on CPU and GPU (no flash-attn needed). See docs/methods/selfextend_dca.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.core.config import ExperimentConfig
from harness.core.params import TOKENS, TOKENS0
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.chunkllama.checks import INVARIANTS
from harness.methods.chunkllama.kernel import DcaKernel
from harness.methods.chunkllama.positions import check_sizes, dca_sizes
from harness.methods.common.attention import choose_kernel
from harness.methods.common.hook import RopeTables, install_kernel


@dataclass
class ChunkLlamaParams:
    """Chunk size S (default floor(3M/4)) and local window W (default floor(M/16)); chunk length C = S − W.

    `mscale`: the YaRN-style factor c·ln(len/M) + 1 that ChunkLlama puts on q and k (logits × mscale²) when the
    length exceeds M. "per_sample" (default): from the current sequence length, no state; "stateful": the
    reference's behaviour — the factor follows the longest length seen so far in the run (never shrinks), cached
    keys keep the factor of the step that wrote them; "off": no factor.

    `mscale_variant`: which official ChunkLlama entry point gives c. "flash_decoding" (default, c = 0.1): its
    `flash_decoding_chunkllama.py`, the one the GALI reference runs; "attn_replace" (c = 0.05): its
    `chunkllama_attn_replace.py`, the one ChunkLlama's README uses (docs/methods/selfextend_dca.md).
    """

    chunk_size: int | None = field(default=None, metadata=TOKENS)
    local_window: int | None = field(default=None, metadata=TOKENS0)
    mscale: Literal["per_sample", "stateful", "off"] = "per_sample"
    mscale_variant: Literal["flash_decoding", "attn_replace"] = "flash_decoding"
    #: attention kernel: "auto" (fastest exact for the device), "sdpa", "flex", "flash" (CUDA, flash-attn) or "eager"
    kernel: Literal["auto", "sdpa", "flex", "flash", "eager"] = "auto"


MSCALE_COEF = {"flash_decoding": 0.1, "attn_replace": 0.05}  # c of c·ln(len/M) + 1 per ChunkLlama entry point


@METHODS.register("chunkllama", aliases=("repro_chunkllama",), invariants=INVARIANTS)
class ChunkLlama(Method[ChunkLlamaParams]):
    """Dual Chunk Attention: three position schemes per chunk pair, merged exactly by log-sum-exp, O(n) memory."""

    @classmethod
    def validate(cls, params: ChunkLlamaParams, cfg: ExperimentConfig, window: int | None) -> None:
        if window is None:
            if params.chunk_size is not None and params.local_window is not None:
                check_sizes(params.chunk_size, params.local_window, None)
            return
        check_sizes(*dca_sizes(window, params.chunk_size, params.local_window)[:2], window)

    @classmethod
    def derived_params(cls, params: ChunkLlamaParams, cfg: ExperimentConfig, window: int | None) -> dict[str, Any]:
        """chunk_size and local_window left unset default to 3M/4 and M/16."""
        if not window or None not in (params.chunk_size, params.local_window):
            return {}
        size, local, _ = dca_sizes(window, params.chunk_size, params.local_window)
        derived = {"chunk_size": size, "local_window": local}
        return {k: v for k, v in derived.items() if getattr(params, k) is None}

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        S, W, _ = dca_sizes(window)
        return {"chunk_size": S, "local_window": W}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        S, W, C = dca_sizes(info.original_window, self.params.chunk_size, self.params.local_window)
        check_sizes(S, W, info.original_window)
        self.params.chunk_size, self.params.local_window = S, W
        self.kernel = DcaKernel(RopeTables(model), info.original_window, S, C, self.params.mscale,
                                max_cache_len=self.cfg.max_pe, mscale_coef=MSCALE_COEF[self.params.mscale_variant])
        install_kernel(model, choose_kernel(model, self.kernel, self.params.kernel))

    def exact_length(self, info: ModelInfo) -> int | None:
        """Up to C = S − W tokens everything is one chunk (and mscale is 1 inside the window): plain RoPE."""
        kernel = getattr(self, "kernel", None)
        return min(kernel.chunk_len, info.original_window) if kernel is not None else None

    def start_example(self, seed: int) -> None:
        """A new sequence: drop the decode-time rotated-key buffers."""
        kernel = getattr(self, "kernel", None)
        if kernel is not None:
            kernel.buffers.reset()
