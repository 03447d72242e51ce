"""`string`: STRING, ShifTed Rotary position embeddING (An et al., ICLR 2025; docs/reference/beyond.md §2).

Relative distance d >= S is replaced by d − S + W (d < S unchanged): the rarely trained largest positions are dropped
and well-trained ones reused. Near branch = ordinary RoPE for d < S; far branch = the query rotated to i − S + W
against the *same* normally rotated keys; exact log-sum-exp merge, O(n) memory, one code path for prefill and decode.

Deviations from the official code, each a switch:
- `official_attention_factor` (default off): the code multiplies cos/sin by 1 + 0.1·ln 2 for q and k, i.e. logits by
  ~1.1434, for every attention (also d < S); the README does not mention it.
- `mode = "reference"`: the official prefill counts the key at exactly d = S twice (flash window (S, 0) plus the
  shifted branch). Default `"paper"` counts it once, as W, like the paper figure and the official decode. Decode steps
  (one query) always use the paper semantics, as the official decode does.
- The official decode reads out of bounds when the cache is shorter than S; here such steps are plain RoPE.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import MAX_TOKENS, TOKENS, TOKENS0, domain
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.attention import choose_kernel
from harness.methods.common.banded import Branches, PositionTable, banded_attention, module_scale
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.common.logn import plain_rope_length, scale_query_rows
from harness.methods.string_rope.checks import INVARIANTS

log = logging.getLogger(__name__)

OFFICIAL_ATTENTION_FACTOR = 1.0 + 0.1 * math.log(2.0)  # on cos and sin, so logits × its square (1.143434)


@dataclass
class StringParams:
    """S = `shifted_offset`, or ⌊offset_ratio · L⌋ with L = `max_length` (default max_pe, else the model's window);
    W = `local_value`."""

    shifted_offset: int | None = field(default=None, metadata=TOKENS)
    offset_ratio: float = field(default=0.33, metadata=domain(gt=0, lt=1, why="S / L: 0.33 official, 0.25–0.4 advised"))
    max_length: int | None = field(default=None, metadata=domain(ge=2, le=MAX_TOKENS, why="the longest test length"))
    local_value: int = field(default=128, metadata=TOKENS0)
    official_attention_factor: bool = False
    mode: Literal["paper", "reference"] = "paper"
    logn: bool = False
    train_len: int | None = field(default=None, metadata=domain(ge=2, le=MAX_TOKENS))
    #: attention kernel: "auto" (fastest exact for the device), "sdpa", "flex", "flash" (CUDA, flash-attn) or "eager"
    kernel: Literal["auto", "sdpa", "flex", "flash", "eager"] = "auto"


def string_offset(params: StringParams, max_pe: int | None, window: int | None) -> int | None:
    """S for this experiment: explicit, else int(ratio · L) (official: int(0.33 · 131072) = 43253)."""
    if params.shifted_offset is not None:
        return params.shifted_offset
    length = params.max_length or max_pe or window
    return int(params.offset_ratio * length) if length else None


class StringKernel:
    """Near: R(i)q·R(j)k for d < S (d <= S in reference prefill). Far: R(i − S + W)q·R(j)k for d >= S."""

    def __init__(self, tables: Any, offset: int, local_value: int, factor: float = 1.0, reference: bool = False,
                 logn_len: int | None = None):
        self.tables, self.offset, self.local_value = tables, offset, local_value
        self.factor, self.reference, self.logn_len = factor, reference, logn_len
        self.normal = PositionTable(tables.inv_freq, float(getattr(tables, "attention_scaling", 1.0)))

    def _far_q(self, x: torch.Tensor, start: int) -> torch.Tensor:
        first = start - self.offset + self.local_value
        return self.tables.rotate(x, torch.arange(first, first + x.shape[-2], device=x.device))

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = q.shape[-2]
        q = scale_query_rows(q, k.shape[-2] - s, self.logn_len)
        width = self.offset + 1 if (self.reference and s > 1) else self.offset
        br = Branches(near_q=self.normal.rotate, near_k=self.normal.rotate, far_q=self._far_q, far_k=None,
                      near_width=width, far_start=self.offset, scale=module_scale(module) * self.factor ** 2,
                      plain=self.tables.rotate)
        return banded_attention(q, k, v, br)


@METHODS.register("string", invariants=INVARIANTS)
class String(Method[StringParams]):
    """STRING: shift relative positions >= S down to W (used within, or modestly beyond, the trained window)."""

    @classmethod
    def validate(cls, params: StringParams, cfg: ExperimentConfig, window: int | None) -> None:
        offset = string_offset(params, cfg.max_pe, window)
        if offset is None:
            return
        if offset < 1:
            raise ConfigError("params.offset_ratio", f"gives S = {offset}", "raise offset_ratio or set shifted_offset")
        if params.local_value > offset:
            raise ConfigError("params.local_value", f"W = {params.local_value} exceeds the shift offset S = {offset}: "
                              "shifted keys would get larger positions than unshifted ones",
                              f"use local_value <= {offset} (W = S is plain RoPE), e.g. {max(1, offset // 8)}")
        length = params.max_length or cfg.max_pe
        if window and length and length - 1 - offset + params.local_value > window - 1:
            log.warning("string: at length %d the largest relative position %d is beyond the model's window %d",
                        length, length - 1 - offset + params.local_value, window)

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        w = min(128, max(1, window // 16))
        offset = int(0.33 * target)
        if target > window:  # keep the largest position target − 1 − S + W inside the window where possible
            offset = min(window, max(offset, target - window + w))
        return {"shifted_offset": max(offset, w), "local_value": w}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        p = self.params
        offset = string_offset(p, self.cfg.max_pe if self.cfg is not None else None, info.original_window)
        assert offset is not None  # the model's window is known here
        if p.local_value > offset:
            raise ConfigError("params.local_value", f"W = {p.local_value} exceeds S = {offset}",
                              f"use local_value <= {offset}")
        factor = OFFICIAL_ATTENTION_FACTOR if p.official_attention_factor else 1.0
        logn = (p.train_len or info.original_window) if p.logn else None
        log.info("string: S=%d W=%d factor=%.6f mode=%s", offset, p.local_value, factor, p.mode)
        self.kernel = StringKernel(RopeTables(model), offset, p.local_value, factor, p.mode == "reference", logn)
        install_kernel(model, choose_kernel(model, self.kernel, self.params.kernel))

    def exact_length(self, info: ModelInfo) -> int | None:
        """With L <= S the method is plain RoPE (only without the official attention factor)."""
        if self.kernel.factor != 1.0:
            return None
        return plain_rope_length(self.kernel.offset, info.original_window, self.kernel.logn_len)
