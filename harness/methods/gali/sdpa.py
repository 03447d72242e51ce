"""Attention of a prefill chunk: s queries that are the last s of K keys (bottom-right causal), without an [s, K] mask.

`causal_sdpa` needs a boolean [s, K] mask for 1 < s < K, which SDPA kernels handle slower (CPU flash reads the mask
per block; CUDA falls back from flash to the memory-efficient kernel). Faster exact alternatives:
* CUDA: `torch.nn.attention.bias.causal_lower_right(s, K)` (flash attention's native causal alignment);
* CPU: the visible prefix (keys 0..K−s−1, no mask) and the chunk itself (an s × s causal square) as two flash calls
  that return their log-sum-exp (`aten._scaled_dot_product_flash_attention_for_cpu`), merged exactly.
Each backend is self-checked once per (device, dtype, heads, head size) against `causal_sdpa`; on any failure
`causal_sdpa` is used (and logged), so results never depend on a private op that misbehaves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.methods.common.lse import bottom_right_causal_lse, current_kernel
from harness.methods.common.rope import causal_sdpa, repeat_kv

log = logging.getLogger(__name__)

_CHECKED: dict[tuple, bool] = {}


def _cpu_split(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    p = k.shape[-2] - q.shape[-2]
    o1, l1 = flash(q, k[..., :p, :], v[..., :p, :], 0.0, False, scale=scale)[:2]
    o2, l2 = flash(q, k[..., p:, :], v[..., p:, :], 0.0, True, scale=scale)[:2]
    lse = torch.logaddexp(l1, l2)
    out = o1.float() * torch.exp(l1 - lse).unsqueeze(-1) + o2.float() * torch.exp(l2 - lse).unsqueeze(-1)
    return out.to(q.dtype)


def _lower_right(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    from torch.nn.attention.bias import causal_lower_right

    # the lower-right kernels take equal head counts; SDPA's own GQA fallback for masked attention expands too
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[-2], k.shape[-2]), scale=scale)


def _backend(device: torch.device) -> Callable | None:
    if device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return _cpu_split
    if device.type == "cuda":
        return _lower_right
    return None


def _self_check(fn: Callable, q: torch.Tensor, k: torch.Tensor) -> bool:
    gen = torch.Generator().manual_seed(0)
    heads, kv, d = q.shape[1], k.shape[1], q.shape[-1]
    small_q = torch.randn(1, heads, 5, d, generator=gen).to(q.device, q.dtype)
    small_k = torch.randn(1, kv, 13, d, generator=gen).to(q.device, q.dtype)
    small_v = torch.randn(1, kv, 13, d, generator=gen).to(q.device, q.dtype)
    tol = 1e-5 if q.dtype in (torch.float32, torch.float64) else 2e-2
    try:
        got = fn(small_q, small_k, small_v, d ** -0.5)
        want = causal_sdpa(small_q, small_k, small_v, d ** -0.5)
        ok = got.shape == want.shape and bool(torch.allclose(got.float(), want.float(), atol=tol, rtol=tol))
    except Exception as exc:
        log.info("GALI chunk attention: %s unavailable (%s); using causal_sdpa", fn.__name__,
                 str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return False
    if not ok:
        log.info("GALI chunk attention: %s failed its self-check; using causal_sdpa", fn.__name__)
    return ok


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of q [b, H, s, d] (the last s of the K keys k/v [b, Hkv, K, d]) -> [b, H, s, d]."""
    s, n_keys = q.shape[-2], k.shape[-2]
    if current_kernel() in ("eager", "flex", "flash"):  # the method's `kernel` option (see harness.methods.common.lse)
        return bottom_right_causal_lse(q, k, v, scale)[0].to(q.dtype)
    fn = _backend(q.device) if 1 < s < n_keys and v.shape[-1] == q.shape[-1] else None
    if fn is None:
        return causal_sdpa(q, k, v, scale)
    key = (fn.__name__, q.device.type, q.dtype, q.shape[1], k.shape[1], q.shape[-1])
    if key not in _CHECKED:
        _CHECKED[key] = _self_check(fn, q, k)
    return fn(q, k, v, scale) if _CHECKED[key] else causal_sdpa(q, k, v, scale)
