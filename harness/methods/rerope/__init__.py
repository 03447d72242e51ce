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
from typing import Any, Literal, TypeVar

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import MAX_TOKENS, TOKENS, domain
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.attention import choose_kernel
from harness.methods.common.banded import Branches, PositionTable, banded_attention, module_scale
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.common.logn import plain_rope_length, scale_query_rows
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

    k: float = field(default=16.0, metadata=domain(ge=1, le=1e6, why="the slope divisor (16 official; 1 is plain RoPE, "
                                                                  "method 'rerope' is k = infinity)"))


RP = TypeVar("RP", bound=ReRopeParams)


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
                      near_width=self.window, far_start=self.window, scale=module_scale(module),
                      plain=self.tables.rotate)
        return banded_attention(q, k, v, br)


def check_window(w: int | None, window: int | None, name: str) -> None:
    """The window w must be below the model's window M (the far branch puts distant keys at w)."""
    if w is not None and window and w >= window:
        raise ConfigError("params.window", f"{name} window {w} must be below the model's window {window} "
                          "(the far branch puts every distant key at relative position w, which must have been seen)",
                          f"use about {window // 4}..{window // 2}")


class ReRopeFamily(Method[RP]):
    """What ReRoPE and Leaky ReRoPE share: the window w (default M/4), log-n scaling, the two-branch kernel."""

    invariants = INVARIANTS

    def slope(self) -> float | None:
        """k of the slope 1/k beyond the window (None: ReRoPE, every far key at w)."""
        return None

    @classmethod
    def validate(cls, params: RP, cfg: ExperimentConfig, window: int | None) -> None:
        check_window(params.window, window, cls.name)

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        w = self.params.window if self.params.window is not None else max(1, info.original_window // 4)
        check_window(w, info.original_window, self.name)
        logn = (self.params.train_len or info.original_window) if self.params.logn else None
        self.kernel = ReRopeKernel(RopeTables(model), w, self.slope(), logn)
        install_kernel(model, choose_kernel(model, self.kernel, self.params.kernel))

    def exact_length(self, info: ModelInfo) -> int | None:
        """With L <= w (and inside the log-n training length) the method is plain RoPE."""
        return plain_rope_length(self.kernel.window, info.original_window, self.kernel.logn_len)


@METHODS.register("rerope")
class ReRope(ReRopeFamily[ReRopeParams]):
    """ReRoPE: distances beyond w are all placed at w (infinite extrapolation, bounded positions)."""

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        return {"window": max(1, window // 4), "logn": True}


@METHODS.register("leaky_rerope")
class LeakyReRope(ReRopeFamily[LeakyReRopeParams]):
    """Leaky ReRoPE: slope 1/k beyond the window; the largest position w + (L−1−w)/k must stay below M."""

    def slope(self) -> float | None:
        return float(self.params.k)

    @classmethod
    def validate(cls, params: LeakyReRopeParams, cfg: ExperimentConfig, window: int | None) -> None:
        super().validate(params, cfg, window)
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
