"""gali-check invariants of GALI (declared in `Gali.invariants`)."""

from __future__ import annotations

from harness.methods.gali.positions import positions
from harness.methods.invariants import CheckContext, CheckResult, invariant, max_diff, passed


@invariant("decode_beyond_window")
def decode_beyond_window(ctx: CheckContext) -> CheckResult:
    """The generic decode check, with the noise switched off (noise is random per forward)."""
    kernel = getattr(ctx.method, "kernel", None)
    if kernel is None or not kernel.noise.active:
        return ctx.default("decode_beyond_window")
    with kernel.without_noise():
        res = ctx.default("decode_beyond_window")
    res.detail += " (noise off for this check)"
    return res


@invariant("gali_positions")
def gali_positions(ctx: CheckContext) -> CheckResult:
    """Position lists: length T, first 0, last M − 1, increasing, a unit-step tail of at least local_window."""
    m, w = ctx.window, ctx.method.params.local_window
    lengths = sorted({m + 1, ctx.long_len, 4 * m + 3})
    bad = []
    for t in lengths:
        p = positions(t, m, w)
        gaps = p.diff()
        tail = int((gaps.flip(0) == 1).cumprod(0).sum()) + 1
        if not (len(p) == t and p[0] == 0 and p[-1] == m - 1 and bool((gaps > 0).all()) and tail >= w):
            bad.append(str(t))
    return passed("gali_positions", not bad, f"T={', '.join(bad)} violate" if bad else
                  f"length T, first 0, last M-1, increasing, unit tail >= local_window for T in {lengths}")


@invariant("gali_prefix_equals_original")
def gali_prefix_equals_original(ctx: CheckContext) -> CheckResult:
    """The NLL of the first M positions of a long prompt equals the original's on M tokens."""
    n = ctx.in_len
    d = max_diff(ctx.nll(ctx.long_len)[: n - 1], ctx.reference["nll"])
    return passed("gali_prefix_equals_original", d <= ctx.tolerance(),
                  f"first {n} positions of L={ctx.long_len}: max|ΔNLL| {d:.2e} vs the original on {n} tokens")


INVARIANTS = (decode_beyond_window, gali_positions, gali_prefix_equals_original)
