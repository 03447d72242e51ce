"""`dpe`: Dimension-Wise Positional Embeddings Manipulation (Lu et al., COLM 2025; docs/reference/beyond.md §1).

Ordinary RoPE for keys closer than `local_window` w; beyond it each group of frequency pairs gets SelfExtend-style
grouped positions with its own integer scale. Optionally only the top-k "key" pairs per (layer, head), ranked by
their 2-norm attention contribution, are scaled. With one scale for every group and no top-k this is SelfExtend.

Where the scales come from, first match wins: explicit `scale_factors` / `local_window` / `group_bounds`, then a
`scales_file` written by `gali-dpe-probe`, then a `preset` (published settings, see `dpe.table.PRESETS`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, suggest
from harness.core.params import MAX_TOKENS, TOKENS, domain
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.attention import choose_kernel
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.common.logn import plain_rope_length
from harness.methods.dpe import probe
from harness.methods.dpe.checks import INVARIANTS
from harness.methods.dpe.positions import DpeKernel
from harness.methods.dpe.table import (
    PRESETS,
    DpeTable,
    check_bounds,
    equal_groups,
    load_contributions,
    load_table,
    pair_scales,
    save_table,
    topk_masks,
)

__all__ = ["Dpe", "DpeParams", "DpeTable", "equal_groups", "probe", "resolve_setting", "save_table"]

log = logging.getLogger(__name__)


@dataclass
class DpeParams:
    """See docs/methods/beyond.md. `groups` equal groups over head_dim/2 pairs unless `group_bounds` is given."""

    preset: str | None = None
    scales_file: str | None = None
    local_window: int | None = field(default=None, metadata=TOKENS)
    scale_factors: list[int] | None = field(default=None, metadata=domain(ge=1, le=MAX_TOKENS))
    groups: int = field(default=8, metadata=domain(ge=1, le=4096))
    group_bounds: list[int] | None = field(default=None, metadata=domain(ge=0, le=4096))
    topk_dim: int | None = field(default=None, metadata=domain(ge=1, le=4096))
    dims_file: str | None = None
    offset_division: Literal["true", "floor"] = "true"
    logn: bool = False
    train_len: int | None = field(default=None, metadata=domain(ge=2, le=MAX_TOKENS))
    #: attention kernel: "auto" (fastest exact for the device), "sdpa", "flex", "flash" (CUDA, flash-attn) or "eager"
    kernel: Literal["auto", "sdpa", "flex", "flash", "eager"] = "auto"


@dataclass
class ResolvedDpe:
    """The effective setting after merging params, scales file and preset (head size not yet applied)."""

    local_window: int | None
    scale_factors: list[int] | None
    group_bounds: list[int] | None
    topk_dim: int | None
    contributions_source: str | None


def resolve_setting(params: DpeParams) -> ResolvedDpe:
    """Merge explicit params > scales_file > preset (ConfigError for unknown presets or bad files)."""
    table = load_table(params.scales_file) if params.scales_file else DpeTable()
    preset = None
    if params.preset is not None:
        if params.preset not in PRESETS:
            raise ConfigError("params.preset", f"unknown DPE preset '{params.preset}'{suggest(params.preset, PRESETS)}",
                              f"use one of: {', '.join(PRESETS)}")
        preset = PRESETS[params.preset]

    def pick(explicit: Any, from_table: Any, from_preset: Any) -> Any:
        return next((x for x in (explicit, from_table, from_preset) if x is not None), None)

    scales = pick(params.scale_factors, table.scale_factors, list(preset.scale_factors) if preset else None)
    window = pick(params.local_window, table.local_window, preset.local_window if preset else None)
    bounds = params.group_bounds if params.group_bounds is not None else (
        table.group_bounds if params.scale_factors is None else None)
    topk = pick(params.topk_dim, table.topk_dim, None)
    source = params.dims_file or (params.scales_file if table.contributions is not None else None)
    return ResolvedDpe(window, [int(s) for s in scales] if scales is not None else None, bounds, topk, source)


@METHODS.register("dpe", invariants=INVARIANTS)
class Dpe(Method[DpeParams]):
    """DPE: per-group SelfExtend scaling of far relative positions (optionally on top-k key pairs only)."""

    @classmethod
    def validate(cls, params: DpeParams, cfg: ExperimentConfig, window: int | None) -> None:
        if params.group_bounds is not None:
            check_bounds(params.group_bounds, "params.group_bounds")
        r = resolve_setting(params)
        if r.scale_factors is None:
            raise ConfigError("params.scale_factors", "DPE needs one scale per group of frequency pairs",
                              "set preset = \"llama3-8b-readme\" (or another preset), scale_factors = [...], or "
                              "scales_file = a table written by gali-dpe-probe")
        bad = [s for s in r.scale_factors if s < 1]
        if bad:
            raise ConfigError("params.scale_factors", f"scales must be integers >= 1, got {r.scale_factors}",
                              "1 leaves a group unchanged; larger values compress its far positions")
        n_groups = len(r.group_bounds) - 1 if r.group_bounds is not None else params.groups
        if len(r.scale_factors) != n_groups:
            raise ConfigError("params.scale_factors", f"{len(r.scale_factors)} scales for {n_groups} groups",
                              f"give exactly {n_groups} scales (or change groups / group_bounds)")
        if r.local_window is not None and r.local_window < 1:
            raise ConfigError("params.local_window", f"must be >= 1, got {r.local_window}", "use 1024 (official, 8K)")
        if r.local_window is not None and window and r.local_window >= window:
            raise ConfigError("params.local_window", f"local window {r.local_window} must be below the model's window "
                              f"{window}", f"use about {max(1, window // 8)} (1024 for an 8K model, as published)")
        if r.topk_dim is not None:
            if r.topk_dim < 1:
                raise ConfigError("params.topk_dim", f"must be >= 1, got {r.topk_dim}", "use 48 (published)")
            if r.contributions_source is None:
                raise ConfigError("params.topk_dim", "top-k key dimensions need the per-head 2-norm contributions",
                                  "set dims_file (or a scales_file) written by `gali-dpe-probe --topk K`, "
                                  "or remove topk_dim to scale every pair of a group")
            if params.dims_file is not None:
                load_contributions(params.dims_file)

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        """One scale for all 8 groups from the SelfExtend rule (M − w)·s + w >= target, w = M/8 (as 1024 for 8K).

        Run `gali-dpe-probe` for per-group scales; this generic suggestion makes DPE equal to SelfExtend.
        """
        w = max(1, window // 8)
        s = max(1, -(-(target - w) // max(1, window - w)))
        return {"local_window": w, "scale_factors": [s] * 8}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        p = self.params
        r = resolve_setting(p)
        n_pairs = info.head_dim // 2
        window = r.local_window if r.local_window is not None else max(1, info.original_window // 8)
        if window >= info.original_window:
            raise ConfigError("params.local_window", f"local window {window} must be below the model's window "
                              f"{info.original_window}", f"use about {max(1, info.original_window // 8)}")
        bounds = r.group_bounds
        if bounds is None:
            if not 1 <= p.groups <= n_pairs:
                raise ConfigError("params.groups", f"{p.groups} groups for {n_pairs} frequency pairs",
                                  f"use at most {n_pairs} groups")
            bounds = equal_groups(n_pairs, p.groups)
        check_bounds(bounds, "params.group_bounds", n_pairs)
        assert r.scale_factors is not None and len(r.scale_factors) == len(bounds) - 1  # checked in validate
        masks = None
        if r.topk_dim is not None:
            if r.topk_dim > n_pairs:
                raise ConfigError("params.topk_dim", f"{r.topk_dim} exceeds the {n_pairs} pairs per head",
                                  f"use at most {n_pairs}")
            assert r.contributions_source is not None
            contrib = load_contributions(r.contributions_source,
                                         "params.dims_file" if p.dims_file else "params.scales_file")
            want = (info.num_layers, info.num_heads, n_pairs)
            if tuple(contrib.shape) != want:
                raise ConfigError("params.dims_file", f"contributions have shape {list(contrib.shape)}, this model "
                                  f"needs {list(want)} (layers, heads, pairs)", "run gali-dpe-probe on this model")
            masks = topk_masks(contrib, r.topk_dim)
        logn = (p.train_len or info.original_window) if p.logn else None
        log.info("dpe: w=%d groups=%s scales=%s topk=%s", window, bounds, r.scale_factors, r.topk_dim)
        self.kernel = DpeKernel(RopeTables(model), window, pair_scales(bounds, r.scale_factors), p.offset_division,
                                masks, logn)
        install_kernel(model, choose_kernel(model, self.kernel, self.params.kernel))

    def exact_length(self, info: ModelInfo) -> int | None:
        """With L <= w (and inside the log-n training length) the method is plain RoPE."""
        return plain_rope_length(self.kernel.window, info.original_window, self.kernel.logn_len)
