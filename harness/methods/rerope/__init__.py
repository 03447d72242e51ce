"""`rerope` and `leaky_rerope`: ReRoPE / Leaky ReRoPE (Su Jianlin, 2023) with optional log-n query scaling.

Relative position (docs/reference/beyond.md §3.1): ReRoPE r = min(d, w); Leaky ReRoPE r = d for d < w, w + (d − w)/k
beyond.
Computed as two branches merged with their log-sum-exps (§3.5): near = ordinary RoPE for d < w; far = R(w)q against
**un-rotated** keys (ReRoPE) or R((i − w)/k + w)q against R(j/k)k (Leaky). O(n) memory, same code for prefill and
KV-cache decode (the cache holds un-rotated keys), so decode equals recomputation exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.core.errors import ConfigError
from harness.core.params import MAX_TOKENS, TOKENS, domain
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.banded import Branches, PositionTable, banded_attention
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.common.logn import scale_query_rows
from harness.methods.common.lse import choose_kernel
from harness.methods.rerope.checks import INVARIANTS


@dataclass
class ReRopeParams:
    """`window` w (default M/4, the README's w1024 for 4K Llama-2); `logn`: log-n query scaling (official: on)
    with training length `train_len` (default M)."""

    window: int | None = field(default=None, metadata=TOKENS)
    logn: bool = True
    train_len: int | None = field(default=None, metadata=domain(ge=2, le=MAX_TOKENS))
    #: attention kernel: "auto" (fastest exact for the device), "sdpa", "flex", "flash" (CUDA, flash-attn) or "eager"
    kernel: Literal["auto", "sdpa", "flex", "flash", "eager"] = "auto"


@dataclass
class LeakyReRopeParams(ReRopeParams):
    """Leaky ReRoPE adds the slope 1/k beyond the window (official k = 16; k = 1 is plain RoPE)."""

    k: float = field(default=16.0, metadata=domain(gt=0, le=1e6, why="the slope divisor (16 official)"))


def rerope_relative(d: int, window: int, k: float | None = None) -> float:
    """Relative position the method assigns to distance d (k None: ReRoPE; else Leaky with slope 1/k)."""
    if d < window:
        return float(d)
    return float(window) if k is None else window + (d - window) / k


class ReRopeKernel:
    """Near: R(i)q·R(j)k for d < w. Far: R(w)q·k (ReRoPE) or R((i−w)/k + w)q·R(j/k)k (Leaky)."""

    def __init__(self, tables: Any, window: int, k: float | None = None, logn_len: int | None = None):
        self.tables, self.window, self.k, self.logn_len = tables, window, k, logn_len
        att = float(getattr(tables, "attention_scaling", 1.0))
        self.att = att
        self.normal = PositionTable(tables.inv_freq, att)
        self.far_keys = None if k is None else PositionTable(tables.inv_freq, att, lambda j: j.double() / k)

    def _far_q(self, x: torch.Tensor, start: int) -> torch.Tensor:
        pos = torch.arange(start, start + x.shape[-2], device=x.device)
        if self.k is None:
            return self.tables.rotate(x, torch.full_like(pos, self.window))
        return self.tables.rotate(x, (pos.double() - self.window) / self.k + self.window)

    def _far_k(self, x: torch.Tensor, start: int) -> torch.Tensor:
        if self.far_keys is None:  # rotation by 0: the raw key (times the rope type's attention scaling, if any)
            return x if self.att == 1.0 else x * self.att
        return self.far_keys.rotate(x, start)

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = scale_query_rows(q, k.shape[-2] - q.shape[-2], self.logn_len)
        br = Branches(near_q=self.normal.rotate, near_k=self.normal.rotate, far_q=self._far_q, far_k=self._far_k,
                      near_width=self.window, far_start=self.window, scale=module.scaling, plain=self.tables.rotate)
        return banded_attention(q, k, v, br)


def _validate_common(params: ReRopeParams, window: int | None, name: str) -> None:
    if params.window is not None and params.window < 1:
        raise ConfigError("params.window", f"must be >= 1, got {params.window}",
                          "use about 1/4 to 1/2 of the model's window, e.g. window = 1024 for a 4K model")
    if params.window is not None and window and params.window >= window:
        raise ConfigError("params.window", f"{name} window {params.window} must be below the model's window {window} "
                          "(the far branch puts every distant key at relative position w, which must have been seen)",
                          f"use about {window // 4}..{window // 2}")
    if params.train_len is not None and params.train_len < 2:
        raise ConfigError("params.train_len", f"must be >= 2, got {params.train_len}",
                          "leave it out to use the model's window")


@METHODS.register
class ReRope(Method):
    """ReRoPE: distances beyond w are all placed at w (infinite extrapolation, bounded positions)."""

    name = "rerope"
    Params = ReRopeParams
    description = "ReRoPE: relative position min(d, w), log-n query scaling"
    invariants = INVARIANTS

    @classmethod
    def validate(cls, params: ReRopeParams, cfg: Any, window: int | None) -> None:
        _validate_common(params, window, cls.name)

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        return {"window": max(1, window // 4), "logn": True}

    def _window(self, info: ModelInfo) -> int:
        w = self.params.window if self.params.window is not None else max(1, info.original_window // 4)
        _validate_common(ReRopeParams(window=w, train_len=self.params.train_len), info.original_window, self.name)
        return w

    def _kernel(self, tables: RopeTables, info: ModelInfo) -> ReRopeKernel:
        logn = (self.params.train_len or info.original_window) if self.params.logn else None
        return ReRopeKernel(tables, self._window(info), None, logn)

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        self.kernel = self._kernel(RopeTables(model), info)
        install_kernel(model, choose_kernel(model, self.kernel, self.params.kernel))

    def exact_length(self, info: ModelInfo) -> int | None:
        """With L <= w (and inside the log-n training length) the method is plain RoPE."""
        w = info.original_window
        return min(self.kernel.window, w, self.kernel.logn_len or w)


@METHODS.register
class LeakyReRope(ReRope):
    """Leaky ReRoPE: slope 1/k beyond the window; the largest position w + (L−1−w)/k must stay below M."""

    name = "leaky_rerope"
    Params = LeakyReRopeParams
    description = "Leaky ReRoPE: relative position w + (d − w)/k beyond w"

    @classmethod
    def validate(cls, params: LeakyReRopeParams, cfg: Any, window: int | None) -> None:  # type: ignore[override]
        _validate_common(params, window, cls.name)
        if not params.k >= 1.0 or math.isinf(params.k):
            raise ConfigError("params.k", f"must be a finite number >= 1, got {params.k}",
                              "use k = 16 (official); k = 1 is plain RoPE; use method 'rerope' for k = infinity")
        w = params.window if params.window is not None else (window // 4 if window else None)
        if window and w and cfg.max_pe and w + (cfg.max_pe - 1 - w) / params.k > window - 1:
            need = math.ceil((cfg.max_pe - 1 - w) / (window - 1 - w))
            raise ConfigError("params.k", f"with window {w} and k {params.k:g} the largest relative position at "
                              f"max_pe {cfg.max_pe} is {w + (cfg.max_pe - 1 - w) / params.k:.0f}, beyond the model's "
                              f"window {window}", f"use k >= {need}, or method 'rerope'")

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        w = max(1, window // 4)
        need = math.ceil((target - 1 - w) / max(1, window - 1 - w)) if target > window else 1
        return {"window": w, "k": float(max(16, need)), "logn": True}

    def _kernel(self, tables: RopeTables, info: ModelInfo) -> ReRopeKernel:
        logn = (self.params.train_len or info.original_window) if self.params.logn else None
        return ReRopeKernel(tables, self._window(info), float(self.params.k), logn)
