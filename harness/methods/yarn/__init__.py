"""`yarn`: YaRN (Peng et al., 2023) through transformers' own rope type (docs/reference/methods.md §7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.core.params import domain
from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FrequencyMethod, RampParams, yarn_rope


@dataclass
class YarnParams(RampParams):
    """transformers' defaults: beta_fast 32, beta_slow 1, attention factor 0.1·ln(s) + 1."""

    attention_factor: float | None = field(default=None, metadata=domain(gt=0, le=100))


@METHODS.register("yarn", aliases=("repro_yarn",))
class Yarn(FrequencyMethod[YarnParams]):
    """NTK-by-parts frequency blend plus attention temperature; static, so short inputs change too."""

    def rope_parameters(self, model: torch.nn.Module, info: ModelInfo) -> dict[str, Any]:
        return yarn_rope(self.params, self.factor(info), info.original_window, self.params.attention_factor)
