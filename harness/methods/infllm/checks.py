"""gali-check invariants for InfLLM (imported by `infllm.py` when `harness.stages.check` exists)."""

from __future__ import annotations

from harness.stages.check import CheckContext, CheckResult, invariant
from harness.stages.check import _decode_beyond as generic_decode_beyond


@invariant("decode_beyond_window", methods=("infllm",))
def _decode_beyond(ctx: CheckContext) -> CheckResult:
    """Decode = recomputation, except with `retrieval = "chunk"`, where InfLLM's prefill (one retrieval per chunk)
    and its decode (one per token) differ by design once retrieval is active."""
    kernel = ctx.method.kernel
    reach = kernel.sizes.n_local + kernel.sizes.n_init + kernel.sizes.topk * kernel.sizes.block_size
    if kernel.sizes.chunk_retrieval and ctx.long_len > reach:
        return CheckResult("decode_beyond_window", "skip", "retrieval = \"chunk\": InfLLM's prefill retrieves per "
                           f"chunk, its decode per token; they differ by design beyond {reach} tokens")
    return generic_decode_beyond(ctx)
