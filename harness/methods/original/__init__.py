"""`original`: the unmodified model (the baseline every method is compared against)."""

from __future__ import annotations

from harness.methods.base import METHODS, Method, NoParams
from harness.methods.common.frequency import FREQUENCY_FAMILIES


@METHODS.register("original", aliases=("repro_original",))
class Original(Method[NoParams]):
    """The model as loaded: its own RoPE, standard causal attention."""

    equals_original_within_window = True
    families = FREQUENCY_FAMILIES
