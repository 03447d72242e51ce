"""`ntk_by_parts`: YaRN's per-dimension frequency blend without its attention temperature (docs/methods/frequency.md).

transformers' `yarn` rope type with attention_factor = 1: dimensions with more than beta_fast rotations over the
window M keep their frequency, those with fewer than beta_slow are divided by s, a linear ramp in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.core.params import domain
from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FactorParams, FrequencyMethod, set_rope_parameters
from harness.methods.yarn import check_ramp


@dataclass
class NtkByPartsParams(FactorParams):
    """YaRN's ramp bounds (beta_fast 32, beta_slow 1, as in the YaRN paper and transformers)."""

    beta_fast: float = field(default=32.0, metadata=domain(gt=0, le=1e6))
    beta_slow: float = field(default=1.0, metadata=domain(gt=0, le=1e6))


@METHODS.register
class NtkByParts(FrequencyMethod):
    """Static: short inputs change too. Equals `yarn` with attention_factor = 1."""

    name = "ntk_by_parts"
    aliases = ("ntk-by-parts", "part_ntk")
    Params = NtkByPartsParams
    description = "NTK-by-parts: YaRN's frequency ramp, no attention temperature"

    @classmethod
    def validate(cls, params: NtkByPartsParams, cfg, window: int | None) -> None:  # type: ignore[override]
        super().validate(params, cfg, window)
        check_ramp(params.beta_fast, params.beta_slow)

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        set_rope_parameters(model, rope_type="yarn", factor=self.factor(info), attention_factor=1.0,
                            beta_fast=self.params.beta_fast, beta_slow=self.params.beta_slow,
                            original_max_position_embeddings=info.original_window)
