"""`linear`: position interpolation (Chen et al., 2023): positions divided by s."""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FactorParams, FrequencyMethod


@METHODS.register("linear", aliases=("pi", "repro_linear"))
class Linear(FrequencyMethod[FactorParams]):
    """inv_freq / s, i.e. every position p is treated as p / s."""

    def rope_parameters(self, model: torch.nn.Module, info: ModelInfo) -> dict[str, Any]:
        return {"rope_type": "linear", "factor": self.factor(info)}
