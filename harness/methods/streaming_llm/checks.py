"""gali-check invariants of StreamingLLM (declared in `StreamingLLM.invariants`)."""

from __future__ import annotations

import torch

from harness.methods.base import Method
from harness.methods.common.cache import cache_nbytes
from harness.methods.invariants import CheckContext, CheckResult, exact_range_equals_original, invariant, passed


@invariant("kv_cache_bounded")
@torch.inference_mode()
def kv_cache_bounded(ctx: CheckContext) -> CheckResult:
    """At L = long_len / 2 and long_len: prefill L − 1 tokens and decode one. The cache then holds min(L, S + W)
    tokens (the same bytes at both lengths once both exceed S + W), and the decoded logits equal one forward of
    the L tokens over a cache that keeps every token (transformers' DynamicCache)."""
    cap = ctx.method.cache_capacity(ctx.info)
    rows, ok = [], True
    for n in sorted({max(2, ctx.long_len // 2), ctx.long_len}):
        ctx.reseed()
        cache, _ = ctx.engine.prefill(ctx.ids[:n - 1])
        got = ctx.engine.step([ctx.ids[n - 1]], cache)[-1]
        want = ctx.engine.step(ctx.ids[:n], Method.make_cache(ctx.method, ctx.model.config))[-1]
        d, held = float((got - want).abs().max()), int(cache.get_seq_length())
        ok = ok and held == min(n, cap) and d <= ctx.tolerance(float(want.abs().max()))
        rows.append((n, held, cache_nbytes(cache), d))
    ok = ok and len({size for n, _, size, _ in rows if n >= cap}) <= 1
    detail = "; ".join(f"L={n}: {held} tokens, {size / 2**20:.2f} MiB, max|Δlogit| {d:.2e} vs every token kept"
                       for n, held, size, d in rows)
    return passed("kv_cache_bounded", ok, f"{detail} (capacity sinks + window = {cap})")


#: while nothing is evicted the method is the unmodified model; the KV cache stays at sinks + window
INVARIANTS = (exact_range_equals_original("equals_original_without_eviction"), kv_cache_bounded)
