"""gali-check invariants for SelfExtend (imported by `selfextend.py` when `harness.stages.check` exists)."""

from __future__ import annotations

from harness.methods.common.hook import install_kernel, uninstall_kernel
from harness.stages.check import CheckContext, CheckResult, invariant, passed


def original_prefill(ctx: CheckContext, n: int):
    """Last-position logits of the unmodified model on the first n tokens (kernel removed for the call)."""
    kernel = ctx.method.kernel
    uninstall_kernel(ctx.model)
    try:
        return ctx.prefill(n)
    finally:
        install_kernel(ctx.model, kernel)


def exact_prefix(ctx: CheckContext, name: str, n: int, what: str) -> CheckResult:
    """The method's prefill logits at L = n equal the original's (the method is the identity up to n tokens)."""
    ref = original_prefill(ctx, n)
    d = float((ctx.prefill(n) - ref).abs().max())
    tol = ctx.tolerance(float(ref.abs().max()))
    return passed(name, d <= tol, f"L={n} ({what}): max|Δlogit| vs original {d:.2e} (tol {tol:.0e})")


@invariant("selfextend_exact_within_window_size", methods=("selfextend",))
def _exact_within_w(ctx: CheckContext) -> CheckResult:
    n = min(ctx.method.params.window_size, ctx.long_len)
    return exact_prefix(ctx, "selfextend_exact_within_window_size", n, "= window_size W: all keys are neighbours")
