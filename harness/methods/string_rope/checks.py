"""gali-check invariants of STRING (declared in `String.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import CheckContext, CheckResult, equals_original_at, invariant, skipped


@invariant("equals_original_below_offset_s")
def equals_original_below_offset_s(ctx: CheckContext) -> CheckResult:
    """With L <= S the method is plain RoPE (only without the official attention factor)."""
    name = "equals_original_below_offset_s"
    if ctx.method.kernel.factor != 1.0:
        return skipped(name, "official_attention_factor changes every logit by design")
    return equals_original_at(ctx, ctx.method.exact_length(ctx.info), name)


INVARIANTS = (equals_original_below_offset_s,)
