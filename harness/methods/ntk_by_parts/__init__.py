"""`ntk_by_parts`: YaRN's per-dimension frequency blend without its attention temperature (docs/methods/frequency.md).

transformers' `yarn` rope type with attention_factor = 1: dimensions with more than beta_fast rotations over the
window M keep their frequency, those with fewer than beta_slow are divided by s, a linear ramp in between.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FrequencyMethod, RampParams, yarn_rope

#: the parameters: factor s and YaRN's ramp bounds beta_fast / beta_slow (no attention factor)
NtkByPartsParams = RampParams


@METHODS.register("ntk_by_parts", aliases=("ntk-by-parts", "part_ntk"))
class NtkByParts(FrequencyMethod[NtkByPartsParams]):
    """Static: short inputs change too. Equals `yarn` with attention_factor = 1."""

    def rope_parameters(self, model: torch.nn.Module, info: ModelInfo) -> dict[str, Any]:
        return yarn_rope(self.params, self.factor(info), info.original_window, attention_factor=1.0)
