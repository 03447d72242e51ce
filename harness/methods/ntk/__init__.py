"""`ntk`: static NTK-aware scaling: a fixed larger base θ' = θ · s^(d/(d−2)) (docs/reference/methods.md §5)."""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FactorParams, FrequencyMethod, rotary_dim, text_config


def ntk_base(theta: float, factor: float, head_dim: int) -> float:
    """θ' = θ · s^(d/(d−2)); e.g. θ=1e4, s=4, d=128 -> ≈ 40 890."""
    return theta * factor ** (head_dim / (head_dim - 2))


@METHODS.register("ntk", aliases=("repro_ntk", "static_ntk"))
class StaticNTK(FrequencyMethod[FactorParams]):
    """Fixed for the target length M·s: short inputs change too (unlike dynamic NTK)."""

    def rope_parameters(self, model: torch.nn.Module, info: ModelInfo) -> dict[str, Any]:
        # d = the rotating channels (head_dim unless the family uses partial rotary, e.g. Phi-4-mini's 0.75)
        return {"rope_type": "default",
                "rope_theta": ntk_base(info.rope_theta, self.factor(info), rotary_dim(text_config(model)))}
