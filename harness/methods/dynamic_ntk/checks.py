"""gali-check invariants of dynamic NTK (declared in `DynamicNTK.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import not_applicable

INVARIANTS = (
    not_applicable("decode_beyond_window", "inherent: cached keys keep the base they were rotated with, a fresh "
                   "prefill rotates all keys with the current base (transformers' dynamic NTK)"),
)
