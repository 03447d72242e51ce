"""`linear`: position interpolation (Chen et al., 2023): positions divided by s."""

from __future__ import annotations

import torch

from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FrequencyMethod, set_rope_parameters


@METHODS.register
class Linear(FrequencyMethod):
    """inv_freq / s, i.e. every position p is treated as p / s."""

    name = "linear"
    aliases = ("pi", "repro_linear")
    description = "position interpolation: inv_freq / s"

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        set_rope_parameters(model, rope_type="linear", factor=self.factor(info))
