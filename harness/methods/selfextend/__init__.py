"""`selfextend`: SelfExtend (Jin et al., 2024; docs/reference/methods.md §3) — neighbour attention within W, grouped
positions beyond.

Training-free: keys closer than W tokens keep their exact relative distance; older keys are seen at floor(j/G)
from a query at floor(i/G) + W − floor(W/G). Exact for inputs up to W tokens. See docs/methods/selfextend_dca.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import MAX_TOKENS, TOKENS, domain
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.attention import choose_kernel
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.selfextend.checks import INVARIANTS
from harness.methods.selfextend.kernel import SelfExtendKernel
from harness.methods.selfextend.positions import check_pair, suggested_pair


@dataclass
class SelfExtendParams:
    """G and W (both or neither; neither: the paper's Table 10 value for (M, max_pe) or a valid pair).

    `shift`: "floor" (W − floor(W/G), the reference's decode/eager value) or "true_div" (W − W/G in multi-token
    forwards, as the reference's flash prefill; decode keeps floor). `scale_base` > 0 scales queries by
    max(1, log(i+1)/log(scale_base)); −1 (the reference's value) turns it off.
    """

    group_size: int | None = field(default=None, metadata=domain(ge=1, le=MAX_TOKENS))
    window_size: int | None = field(default=None, metadata=TOKENS)
    shift: Literal["floor", "true_div"] = "floor"
    scale_base: float = field(default=-1.0, metadata=domain(gt=1, le=MAX_TOKENS, also=(-1.0,),
                                                            why="log base of the query scaling; -1 turns it off"))
    #: attention kernel: "auto" (fastest exact for the device), "sdpa", "flex", "flash" (CUDA, flash-attn) or "eager"
    kernel: Literal["auto", "sdpa", "flex", "flash", "eager"] = "auto"


@METHODS.register("selfextend", aliases=("repro_se",), invariants=INVARIANTS)
class SelfExtend(Method[SelfExtendParams]):
    """SelfExtend: two-level (neighbour / grouped) positions, merged exactly by log-sum-exp, O(n) memory."""

    @classmethod
    def validate(cls, params: SelfExtendParams, cfg: ExperimentConfig, window: int | None) -> None:
        if (params.group_size is None) != (params.window_size is None):
            raise ConfigError("params.group_size" if params.group_size is None else "params.window_size",
                              "set both group_size and window_size, or neither",
                              "give both (e.g. window_size = 1024, group_size = 5), or omit both to use the "
                              "suggested pair for max_pe")
        if params.group_size is None and not cfg.max_pe:
            raise ConfigError("params.group_size", "SelfExtend needs window_size and group_size, or max_pe to "
                              "choose them", "set max_pe (the target length) or both window_size and group_size")
        if window is not None:
            W, G = cls.resolve_pair(params, window, cfg.max_pe)
            check_pair(W, G, window, cfg.max_pe)

    @staticmethod
    def resolve_pair(params: SelfExtendParams, original_window: int, target: int | None) -> tuple[int, int]:
        """(W, G): the configured pair, else the suggested one for (M, max_pe)."""
        if params.group_size is not None and params.window_size is not None:
            return params.window_size, params.group_size
        return suggested_pair(original_window, target or original_window)

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        W, G = suggested_pair(window, target)
        return {"window_size": W, "group_size": G}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        W, G = self.resolve_pair(self.params, info.original_window, self.cfg.max_pe)
        check_pair(W, G, info.original_window, self.cfg.max_pe)
        self.params.window_size, self.params.group_size = W, G
        self.kernel = SelfExtendKernel(RopeTables(model), W, G, self.params.shift, self.params.scale_base)
        install_kernel(model, choose_kernel(model, self.kernel, self.params.kernel))

    def exact_length(self, info: ModelInfo) -> int | None:
        """Up to W tokens every key is a neighbour: plain RoPE."""
        return min(int(self.params.window_size), info.original_window) if self.params.window_size else None

    def start_example(self, seed: int) -> None:
        """A new sequence: drop the decode-time rotated-key buffers."""
        kernel = getattr(self, "kernel", None)
        if kernel is not None:
            kernel.buffers.reset()
