"""gali-check invariants of DPE (declared in `Dpe.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import exact_range_equals_original

#: with L <= w the method is plain RoPE
INVARIANTS = (exact_range_equals_original("equals_original_below_local_window"),)
