"""`ntk`: static NTK-aware scaling: a fixed larger base θ' = θ · s^(d/(d−2)) (docs/reference/methods.md §5)."""

from __future__ import annotations

import torch

from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FrequencyMethod, rotary_dim, set_rope_parameters


def ntk_base(theta: float, factor: float, head_dim: int) -> float:
    """θ' = θ · s^(d/(d−2)); e.g. θ=1e4, s=4, d=128 -> ≈ 40 890."""
    return theta * factor ** (head_dim / (head_dim - 2))


@METHODS.register
class StaticNTK(FrequencyMethod):
    """Fixed for the target length M·s: short inputs change too (unlike dynamic NTK)."""

    name = "ntk"
    aliases = ("repro_ntk", "static_ntk")
    description = "static NTK-aware base θ·s^(d/(d−2))"

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        # d = the rotating channels (head_dim unless the family uses partial rotary, e.g. Phi-4-mini's 0.75)
        base = ntk_base(info.rope_theta, self.factor(info), rotary_dim(model.config))
        set_rope_parameters(model, rope_type="default", rope_theta=base)
