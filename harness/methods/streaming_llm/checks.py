"""gali-check invariants of StreamingLLM (declared in `StreamingLLM.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import exact_range_equals_original

#: while nothing is evicted the method is the unmodified model
INVARIANTS = (exact_range_equals_original("equals_original_without_eviction"),)
