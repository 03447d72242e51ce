"""gali-check invariants of SelfExtend (declared in `SelfExtend.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import CheckContext, CheckResult, equals_original_at, invariant


@invariant("selfextend_exact_within_window_size")
def exact_within_window_size(ctx: CheckContext) -> CheckResult:
    """Up to the neighbour window W every key is a neighbour: the unmodified model."""
    n = min(ctx.method.params.window_size, ctx.long_len)
    return equals_original_at(ctx, n, "selfextend_exact_within_window_size",
                              "= window_size W: all keys are neighbours")


INVARIANTS = (exact_within_window_size,)
