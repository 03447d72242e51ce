"""gali-check invariants of InfLLM (declared in `InfLLM.invariants`)."""

from __future__ import annotations

from harness.methods.invariants import (
    CheckContext,
    CheckResult,
    exact_range_equals_original,
    invariant,
    passed,
    skipped,
)


@invariant("decode_beyond_window")
def decode_beyond_window(ctx: CheckContext) -> CheckResult:
    """Decode = recomputation, except with `retrieval = "chunk"`, where InfLLM's prefill (one retrieval per chunk)
    and its decode (one per token) differ by design once retrieval is active."""
    sizes = ctx.method.kernel.sizes
    reach = sizes.n_local + sizes.n_init + sizes.topk * sizes.block_size
    if sizes.chunk_retrieval and ctx.long_len > reach:
        return skipped("decode_beyond_window", "retrieval = \"chunk\": InfLLM's prefill retrieves per chunk, its "
                       f"decode per token; they differ by design beyond {reach} tokens")
    return ctx.default("decode_beyond_window")


@invariant("infllm_keys_per_query_bounded")
def keys_per_query_bounded(ctx: CheckContext) -> CheckResult:
    """At the long length no query reads more than n_local + n_init + (topk + 1)·block_size keys
    (+ exc_block_size − 1 with chunk retrieval)."""
    kernel = ctx.method.kernel
    kernel.max_keys_seen = 0
    ctx.prefill(ctx.long_len)
    got, bound = kernel.max_keys_seen, kernel.sizes.max_keys_per_query()
    formula = "n_local + n_init + (topk+1)·B" + (" + exc_block_size − 1" if kernel.sizes.chunk_retrieval else "")
    return passed("infllm_keys_per_query_bounded", got <= bound and (ctx.long_len <= bound or got < ctx.long_len),
                  f"L={ctx.long_len}: at most {got} keys per query (bound {formula} = {bound})")


INVARIANTS = (decode_beyond_window, exact_range_equals_original("equals_original_within_n_local"),
              keys_per_query_bounded)
