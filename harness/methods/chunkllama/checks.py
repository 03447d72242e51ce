"""gali-check invariants for ChunkLlama / DCA (imported by `chunkllama.py` when `harness.stages.check` exists)."""

from __future__ import annotations

from harness.methods.selfextend.checks import exact_prefix
from harness.stages.check import CheckContext, CheckResult, consistent_length, invariant, passed


def generic_decode_beyond(ctx: CheckContext) -> CheckResult:
    """A cached decode step beyond the window equals a fresh prefill of the same tokens."""
    n = consistent_length(ctx.method, ctx.window + 1, ctx.long_len) or ctx.long_len
    a, b = ctx.decode_after(n), ctx.prefill(n)
    d = float((a - b).abs().max())
    tol = ctx.tolerance(float(b.abs().max()))
    return passed("decode_beyond_window", d <= tol, f"L={n}: max|Δlogit| {d:.2e} (tol {tol:.0e})")


@invariant("dca_exact_within_chunk", methods=("chunkllama",))
def _exact_within_chunk(ctx: CheckContext) -> CheckResult:
    kernel = ctx.method.kernel
    n = min(kernel.chunk_len, ctx.long_len)
    mode, kernel.mscale_mode = kernel.mscale_mode, "per_sample"  # the stateful factor may carry a longer sample's
    try:
        return exact_prefix(ctx, "dca_exact_within_chunk", n, "= chunk length C: one chunk")
    finally:
        kernel.mscale_mode = mode


@invariant("decode_beyond_window", methods=("chunkllama",))
def _decode_beyond(ctx: CheckContext) -> CheckResult:
    kernel = ctx.method.kernel
    if kernel.mscale_mode == "off":
        return generic_decode_beyond(ctx)
    mode, kernel.mscale_mode = kernel.mscale_mode, "off"
    try:
        res = generic_decode_beyond(ctx)
    finally:
        kernel.mscale_mode = mode
    return CheckResult(res.name, res.status, res.detail + " (mscale off for this check: it follows the sequence "
                       "length by design, so a decode step and a fresh prefill of one more token differ slightly)")
