"""Shared glue for methods that only change RoPE frequencies (no attention changes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import ConfigError
from harness.methods.base import Method, ModelInfo


@dataclass
class FactorParams:
    """`factor` s: scale of the context extension. Default: max_pe / M (target length over the original window)."""

    factor: float | None = None


def resolve_factor(params: FactorParams, cfg: Any, window: int | None) -> float | None:
    """The scaling factor: explicit, else max_pe / M when both are known."""
    if params.factor is not None:
        return params.factor
    if cfg.max_pe and window:
        return cfg.max_pe / window
    return None


def set_rope_parameters(model: torch.nn.Module, **changes: Any) -> None:
    """Replace the model's rope parameters and rebuild its rotary embedding module (inv_freq is not a weight)."""
    config = model.config
    rope = dict(config.rope_parameters or {})
    rope.update(changes)
    config.rope_parameters = rope
    old = model.model.rotary_emb
    device = old.inv_freq.device
    model.model.rotary_emb = type(old)(config=config).to(device)


class FrequencyMethod(Method):
    """Base for linear / NTK / dynamic NTK / YaRN: a factor s > 0 (s >= 1 recommended)."""

    Params = FactorParams
    top_level_factor = True

    @classmethod
    def validate(cls, params: FactorParams, cfg: Any, window: int | None) -> None:
        if params.factor is not None and params.factor <= 0:
            raise ConfigError("params.factor", f"must be positive, got {params.factor}", "use e.g. factor = 4.0")
        if params.factor is None and not cfg.max_pe:
            raise ConfigError("params.factor", f"method '{cls.name}' needs a scaling factor",
                              "set factor (top level or in [params]) or max_pe so that factor = max_pe / window")

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        return {"factor": max(1.0, target / window)}

    def factor(self, info: ModelInfo) -> float:
        """The factor for this model (explicit or max_pe / M)."""
        s = resolve_factor(self.params, self.cfg, info.original_window)
        if s is None:  # validate() guarantees one of the two
            raise ConfigError("params.factor", "no factor", "set factor")
        return s
