"""`yarn`: YaRN (Peng et al., 2023) through transformers' own rope type (docs/reference/methods.md §7)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.core.errors import ConfigError
from harness.core.params import domain
from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FactorParams, FrequencyMethod, set_rope_parameters


@dataclass
class YarnParams(FactorParams):
    """transformers' defaults: beta_fast 32, beta_slow 1, attention factor 0.1·ln(s) + 1."""

    beta_fast: float = field(default=32.0, metadata=domain(gt=0, le=1e6))
    beta_slow: float = field(default=1.0, metadata=domain(gt=0, le=1e6))
    attention_factor: float | None = field(default=None, metadata=domain(gt=0, le=100))


def check_ramp(beta_fast: float, beta_slow: float) -> None:
    """YaRN's ramp needs beta_fast > beta_slow (shared by `yarn` and `ntk_by_parts`)."""
    if beta_fast <= beta_slow:
        raise ConfigError("params.beta_fast", f"beta_fast ({beta_fast}) must exceed beta_slow ({beta_slow})",
                          "keep the defaults 32 and 1")


@METHODS.register
class Yarn(FrequencyMethod):
    """NTK-by-parts frequency blend plus attention temperature; static, so short inputs change too."""

    name = "yarn"
    aliases = ("repro_yarn",)
    Params = YarnParams
    description = "YaRN: NTK-by-parts + attention scaling"

    @classmethod
    def validate(cls, params: YarnParams, cfg, window: int | None) -> None:  # type: ignore[override]
        super().validate(params, cfg, window)
        check_ramp(params.beta_fast, params.beta_slow)

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        extra = {"attention_factor": self.params.attention_factor} if self.params.attention_factor else {}
        set_rope_parameters(model, rope_type="yarn", factor=self.factor(info), beta_fast=self.params.beta_fast,
                            beta_slow=self.params.beta_slow, original_max_position_embeddings=info.original_window,
                            **extra)
