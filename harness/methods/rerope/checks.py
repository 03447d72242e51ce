"""gali-check invariants of ReRoPE and leaky ReRoPE (declared in `ReRope.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import exact_range_equals_original

#: with L <= w (and inside the log-n training length) the method is plain RoPE
INVARIANTS = (exact_range_equals_original("equals_original_below_rerope_window"),)
