"""`dynamic_ntk`: transformers' dynamic NTK scaling (docs/reference/methods.md §6).

For ℓ = current length > M the base is θ·(s·ℓ/M − (s−1))^(d/(d−2)), recomputed as the sequence grows; for ℓ ≤ M
the model is the original. Like the reference (HF generate), cached keys keep the rotation they were written with.

transformers keeps the grown base on the rotary module until a sequence shorter than M comes (a sequence of exactly
M tokens, or one shorter than an earlier one, keeps the larger base), so in a run of many examples each example's
base would depend on the examples before it. The reference has that order dependence; here every example starts
from the original frequencies (`start_example` rebuilds the rotary module), so results do not depend on example
order or sharding.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.base import METHODS, ModelInfo
from harness.methods.common.frequency import FactorParams, FrequencyMethod, set_rope_parameters
from harness.methods.dynamic_ntk.checks import INVARIANTS


@METHODS.register("dynamic_ntk", aliases=("repro_dynamic_ntk", "dynamic"), invariants=INVARIANTS)
class DynamicNTK(FrequencyMethod[FactorParams]):
    """HF rope_type "dynamic" with factor s, relative to the (possibly overridden) window M."""

    equals_original_within_window = True

    def rope_parameters(self, model: torch.nn.Module, info: ModelInfo) -> dict[str, Any]:
        return {"rope_type": "dynamic", "factor": self.factor(info)}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        self._model = model

    def start_example(self, seed: int) -> None:
        """A new sequence starts from the original frequencies (see the module docstring)."""
        model = getattr(self, "_model", None)
        if model is not None:
            set_rope_parameters(model)
