"""`llama3`: Llama-3.1 frequency smoothing through transformers' `llama3` rope type (docs/methods/frequency.md).

Wavelengths λ = 2π/ω shorter than M/high_freq_factor keep their frequency, those longer than M/low_freq_factor are
divided by s, and the band between blends the two with smooth = (M/λ − low)/(high − low). No attention temperature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.core.errors import ConfigError
from harness.core.params import domain
from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FactorParams, FrequencyMethod, set_rope_parameters


@dataclass
class Llama3Params(FactorParams):
    """Meta's Llama-3.1 values: low_freq_factor 1, high_freq_factor 4 (factor 8 for 8k -> 128k)."""

    low_freq_factor: float = field(default=1.0, metadata=domain(gt=0, le=1e6))
    high_freq_factor: float = field(default=4.0, metadata=domain(gt=0, le=1e6))


@METHODS.register
class Llama3Rope(FrequencyMethod):
    """Static: short inputs change too (the low frequencies are interpolated at every length)."""

    name = "llama3"
    aliases = ("llama3_rope", "llama31")
    Params = Llama3Params
    description = "Llama-3.1 rope: high frequencies kept, low ones / s, smooth blend between"

    @classmethod
    def validate(cls, params: Llama3Params, cfg, window: int | None) -> None:  # type: ignore[override]
        super().validate(params, cfg, window)
        if not 0 < params.low_freq_factor < params.high_freq_factor:
            raise ConfigError("params.high_freq_factor", f"need 0 < low_freq_factor ({params.low_freq_factor}) < "
                              f"high_freq_factor ({params.high_freq_factor})", "keep the defaults 1 and 4")

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        set_rope_parameters(model, rope_type="llama3", factor=self.factor(info),
                            low_freq_factor=self.params.low_freq_factor, high_freq_factor=self.params.high_freq_factor,
                            original_max_position_embeddings=info.original_window)
