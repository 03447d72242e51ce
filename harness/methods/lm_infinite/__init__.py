"""`lm_infinite`: LM-Infinite (Han et al., NAACL 2024, arXiv 2308.16137; Glaciohound/LM-Infinite).

Λ-shaped attention: every query attends to the `n_local` nearest tokens (itself included) at their true relative
distance, and to the first `n_global` tokens; starting tokens outside the local branch are seen at the capped
distance `limit_distance` (default n_local = L_pretrain, the official drop-in `convert_llama_model(model, 4096, 10)`):
the query is rotated to that position and the starting keys are not rotated (the official "stationary" branch).
O(n) memory: banded local attention in query blocks merged with the [s, n_global] global branch by log-sum-exp.
For L <= n_local the method is the unmodified model.

Deviation: the official prefill rotates the stationary queries to min(limit_distance, K − 1) with K the keys of the
forward call; here query i uses min(limit_distance, i) (the official decode rule, so prefill and decode agree).
Both are limit_distance whenever limit_distance <= n_local (the default), because a starting token is outside the
local branch only for i >= n_local. See docs/methods/streaming.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import TOKENS, TOKENS0
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.banded import PositionTable, module_scale
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.common.sinks import sink_band_attention
from harness.methods.lm_infinite.checks import INVARIANTS

OFFICIAL_GLOBAL = 10  # global_branch of the official drop-in replacement


@dataclass
class LMInfiniteParams:
    """`n_global` starting tokens (official 10), `n_local` local branch (default the model's window M) and
    `limit_distance` (default n_local)."""

    n_global: int = field(default=OFFICIAL_GLOBAL, metadata=TOKENS0)
    n_local: int | None = field(default=None, metadata=TOKENS)
    limit_distance: int | None = field(default=None, metadata=TOKENS)


class LMInfiniteKernel:
    """Local branch: RoPE for d < n_local. Global branch: R(min(limit, i))q · k for starting keys with d >= n_local."""

    def __init__(self, tables: Any, n_global: int, n_local: int, limit: int):
        self.tables, self.n_global, self.n_local, self.limit = tables, n_global, n_local, limit
        self.att = float(getattr(tables, "attention_scaling", 1.0))
        self.table = PositionTable(tables.inv_freq, self.att)

    def _global_q(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.tables.rotate(x, pos.clamp(max=self.limit))

    def _global_k(self, x: torch.Tensor) -> torch.Tensor:  # rotation by 0 (times the rope type's scaling, if any)
        return x if self.att == 1.0 else x * self.att

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sink_band_attention(q, k, v, self.n_global, self.n_local, self.table, self.tables.rotate,
                                   self._global_q, self._global_k, module_scale(module))


def _sizes(params: LMInfiniteParams, window: int) -> tuple[int, int]:
    n_local = params.n_local if params.n_local is not None else window
    return n_local, params.limit_distance if params.limit_distance is not None else n_local


@METHODS.register("lm_infinite", aliases=("lminfinite",), invariants=INVARIANTS)
class LMInfinite(Method[LMInfiniteParams]):
    """LM-Infinite: Λ-shaped mask (starting tokens + local window) and a distance cap."""

    @classmethod
    def validate(cls, params: LMInfiniteParams, cfg: ExperimentConfig, window: int | None) -> None:
        if window:
            n_local, limit = _sizes(params, window)
            if n_local > window:
                raise ConfigError("params.n_local", f"n_local {n_local} exceeds the model's window {window}: local "
                                  "distances up to n_local − 1 would be unseen", f"use n_local <= {window}")
            if limit > window:
                raise ConfigError("params.limit_distance", f"limit_distance {limit} exceeds the model's window "
                                  f"{window} (the cap must be a distance seen in pre-training)",
                                  f"use limit_distance <= {window}")

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        return {"n_global": OFFICIAL_GLOBAL, "n_local": window}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        self.validate(self.params, self.cfg, info.original_window)
        n_local, limit = _sizes(self.params, info.original_window)
        self.kernel = LMInfiniteKernel(RopeTables(model), self.params.n_global, n_local, limit)
        install_kernel(model, self.kernel)

    def exact_length(self, info: ModelInfo) -> int | None:
        """With L <= n_local every key is in the local branch: the unmodified model."""
        return min(self.kernel.n_local, info.original_window)
