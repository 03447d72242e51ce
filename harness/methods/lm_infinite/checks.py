"""gali-check invariants of LM-Infinite (declared in `LMInfinite.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import exact_range_equals_original

#: within the local branch the method is the unmodified model
INVARIANTS = (exact_range_equals_original("equals_original_within_n_local"),)
