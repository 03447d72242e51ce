"""`longrope`: LongRoPE (arXiv 2402.13753) per-frequency rescale factors via transformers' `longrope` rope type.

Factors come from `[params]` (`long_factor`, `short_factor`) or a factors file (`gali-longrope-search` writes one);
without either, the search's starting point (NTK-by-parts factors) is used. `n_hat` initial positions keep the
original rotary frequencies (the paper's "retain RoPE for the first n̂ tokens", done in the rotary tables: no
attention change). See docs/methods/frequency.md.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import TOKENS0, check_domain, domain
from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import (
    FactorParams,
    FrequencyMethod,
    global_rope,
    rotary_dim,
    rotary_embedding,
    set_rope_parameters,
    text_config,
)
from harness.methods.common.rope import rope_cos_sin
from harness.methods.longrope.factors import (
    check_factors,
    default_attention_factor,
    locate,
    ntk_by_parts_factors,
    read_factors_file,
)

log = logging.getLogger(__name__)


@dataclass
class LongRopeParams(FactorParams):
    """`factor` s (default max_pe / M) sets the default attention factor sqrt(1 + ln s / ln M)."""

    #: d/2 factors used beyond the window M (and within it if no short_factor)
    long_factor: list[float] | None = field(default=None, metadata=domain(gt=0, le=1e6))
    #: d/2 factors used for sequences <= M (Phi-3 style switch)
    short_factor: list[float] | None = field(default=None, metadata=domain(gt=0, le=1e6))
    factors_file: str | None = None  # JSON from gali-longrope-search (explicit keys win; folded in at validation)
    #: cos/sin multiplier; default sqrt(1 + ln s / ln M)
    attention_factor: float | None = field(default=None, metadata=domain(gt=0, le=100))
    #: initial positions that keep the original frequencies (default: file's, else 0)
    n_hat: int | None = field(default=None, metadata=TOKENS0)


class InitialTokensRope:
    """Mixin for a rotary embedding class: positions < n_hat get the original frequencies (same scaling)."""

    n_hat: int
    nhat_inv_freq: torch.Tensor
    rope_base: type[torch.nn.Module]

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None):
        kw = {"layer_type": layer_type} if layer_type is not None else {}
        cos, sin = super().forward(x, position_ids, **kw)  # type: ignore[misc]
        if layer_type not in (None, "full_attention") or not bool((position_ids < self.n_hat).any()):
            return cos, sin
        scaling = getattr(self, f"{layer_type}_attention_scaling" if layer_type else "attention_scaling")
        o_cos, o_sin = rope_cos_sin(position_ids, self.nhat_inv_freq, scaling, cos.dtype)
        keep = (position_ids < self.n_hat)[..., None]
        return torch.where(keep, o_cos, cos), torch.where(keep, o_sin, sin)


def keep_initial_tokens(model: torch.nn.Module, n_hat: int, theta: float, dim: int) -> None:
    """Make the model's rotary embedding give positions < n_hat the default RoPE frequencies θ^(−2i/d)."""
    rotary = rotary_embedding(model)
    base, kept = type(rotary), n_hat

    class KeepInitialTokens(InitialTokensRope, base):
        rope_base = base
        n_hat = kept

    KeepInitialTokens.__name__ = f"InitialTokens{base.__name__}"
    rotary.__class__ = KeepInitialTokens
    device = next(iter(rotary.buffers())).device
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
    rotary.register_buffer("nhat_inv_freq", inv, persistent=False)


def apply_longrope(model: torch.nn.Module, long_factor: list[float], short_factor: list[float] | None,
                   attention_factor: float, window: int, n_hat: int = 0) -> None:
    """Set the `longrope` rope type (factors switch at the window M like Phi-3) and the n̂ initial tokens."""
    rotary = rotary_embedding(model)
    swapped = type(rotary)
    if issubclass(swapped, InitialTokensRope):  # applied before (the search re-applies per candidate)
        rotary.__class__ = swapped.rope_base
    set_rope_parameters(model, rope_type="longrope", long_factor=list(long_factor),
                        short_factor=list(short_factor if short_factor is not None else long_factor),
                        attention_factor=attention_factor, original_max_position_embeddings=window)
    if n_hat > 0:
        config = text_config(model)
        keep_initial_tokens(model, n_hat, float(global_rope(config)["rope_theta"]), rotary_dim(config))


@METHODS.register("longrope", aliases=("long_rope",))
class LongRope(FrequencyMethod[LongRopeParams]):
    """Static per-frequency factors; with a `short_factor`, sequences within M use it instead (decided per forward)."""

    @classmethod
    def validate(cls, params: LongRopeParams, cfg: ExperimentConfig, window: int | None) -> None:
        if params.factors_file and (params.long_factor is None or locate(params.factors_file, cfg.source).exists()):
            # fold the file into the params: the resolved config (config.json) then records the factors that ran;
            # the file's values obey the same domains as [params]
            domains = {f.name: f.metadata.get("domain") for f in dataclasses.fields(params)}
            for key, value in read_factors_file(params.factors_file, source=cfg.source).items():
                if getattr(params, key) is None:
                    check_domain(f"params.{key}", value, domains[key])
                    setattr(params, key, value)
        if params.factor is None and not cfg.max_pe:
            raise ConfigError("params.factor", "method 'longrope' needs the scale s (for its attention factor)",
                              "set factor, or max_pe so that factor = max_pe / window, or use a factors file")
        for key in ("long_factor", "short_factor"):
            if getattr(params, key) == []:
                raise ConfigError(f"params.{key}", "must be a non-empty list of positive factors",
                                  "use factors >= 1 (1 = frequency unchanged)")

    def resolved(self, info: ModelInfo, dim: int) -> dict[str, Any]:
        """long/short factors, scale, attention factor and n_hat after merging [params] over the factors file."""
        p = self.params
        file = read_factors_file(p.factors_file, source=self.cfg.source) if p.factors_file and not p.long_factor else {}
        scale = p.factor or file.get("factor") or self.factor(info)
        long_factor = p.long_factor or file.get("long_factor")
        if long_factor is None:
            long_factor = ntk_by_parts_factors(dim, scale, info.rope_theta, info.original_window).tolist()
            log.info("longrope: no factors given; using the search's starting point (NTK-by-parts factors)")
        short_factor = p.short_factor or file.get("short_factor")
        check_factors(long_factor, dim, "params.long_factor")
        if short_factor is not None:
            check_factors(short_factor, dim, "params.short_factor")
        attention = p.attention_factor or file.get("attention_factor") or default_attention_factor(
            scale, info.original_window)
        n_hat = p.n_hat if p.n_hat is not None else int(file.get("n_hat", 0))
        return {"long_factor": long_factor, "short_factor": short_factor, "factor": scale,
                "attention_factor": attention, "n_hat": n_hat}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        self.info = info
        r = self.resolved(info, rotary_dim(text_config(model)))
        apply_longrope(model, r["long_factor"], r["short_factor"], r["attention_factor"], info.original_window,
                       r["n_hat"])
