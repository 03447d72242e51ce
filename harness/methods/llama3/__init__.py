"""`llama3`: Llama-3.1 frequency smoothing through transformers' `llama3` rope type (docs/methods/frequency.md).

Wavelengths λ = 2π/ω shorter than M/high_freq_factor keep their frequency, those longer than M/low_freq_factor are
divided by s, and the band between blends the two with smooth = (M/λ − low)/(high − low). No attention temperature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.core.params import domain
from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FactorParams, FrequencyMethod, above


@dataclass
class Llama3Params(FactorParams):
    """Meta's Llama-3.1 values: low_freq_factor 1, high_freq_factor 4 (factor 8 for 8k -> 128k)."""

    low_freq_factor: float = field(default=1.0, metadata=domain(gt=0, le=1e6))
    high_freq_factor: float = field(default=4.0, metadata=domain(gt=0, le=1e6) | above("low_freq_factor"))


@METHODS.register("llama3", aliases=("llama3_rope", "llama31"))
class Llama3Rope(FrequencyMethod[Llama3Params]):
    """Static: short inputs change too (the low frequencies are interpolated at every length)."""

    def rope_parameters(self, model: torch.nn.Module, info: ModelInfo) -> dict[str, Any]:
        return {"rope_type": "llama3", "factor": self.factor(info), "low_freq_factor": self.params.low_freq_factor,
                "high_freq_factor": self.params.high_freq_factor,
                "original_max_position_embeddings": info.original_window}
