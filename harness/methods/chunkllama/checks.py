"""gali-check invariants of ChunkLlama / DCA (declared in `ChunkLlama.invariants`)."""

from __future__ import annotations

from collections.abc import Callable

from harness.methods.invariants import CheckContext, CheckResult, equals_original_at, invariant


def _with_mscale(ctx: CheckContext, mode: str, check: Callable[[], CheckResult]) -> CheckResult:
    kernel = ctx.method.kernel
    saved, kernel.mscale_mode = kernel.mscale_mode, mode
    try:
        return check()
    finally:
        kernel.mscale_mode = saved


@invariant("dca_exact_within_chunk")
def exact_within_chunk(ctx: CheckContext) -> CheckResult:
    """Up to the chunk length C everything is one chunk: the unmodified model (mscale per sample: the stateful
    factor may carry a longer sample's)."""
    n = min(ctx.method.kernel.chunk_len, ctx.long_len)
    return _with_mscale(ctx, "per_sample", lambda: equals_original_at(ctx, n, "dca_exact_within_chunk",
                                                                       "= chunk length C: one chunk"))


@invariant("decode_beyond_window")
def decode_beyond_window(ctx: CheckContext) -> CheckResult:
    """The generic decode check, with mscale off: it follows the sequence length by design."""
    if ctx.method.kernel.mscale_mode == "off":
        return ctx.default("decode_beyond_window")
    res = _with_mscale(ctx, "off", lambda: ctx.default("decode_beyond_window"))
    res.detail += (" (mscale off for this check: it follows the sequence length by design, so a decode step and a "
                   "fresh prefill of one more token differ slightly)")
    return res


INVARIANTS = (exact_within_chunk, decode_beyond_window)
