"""Attention that also returns the log-sum-exp, on the fastest backend that passes a self-check.

Backends, tried in order:
- CPU: `torch.ops.aten._scaled_dot_product_flash_attention_for_cpu` (flash-style, O(K) memory, GQA, fp64/fp32/bf16;
  masks must be additive and of the query dtype);
- CUDA: `torch.ops.aten._scaled_dot_product_efficient_attention(..., compute_log_sumexp=True)` (private op, not verified
  on hardware here: it is used only after it reproduced the explicit path on a small problem);
- everywhere: `harness.methods.common.lse.attention_lse` in query blocks (explicit fp32 scores, memory block × K).
Each backend is checked once per (device type, dtype) against the explicit path; a failure disables it with a log line.
"""

from __future__ import annotations

import logging

import torch

from harness.methods.common.lse import attention_lse, current_kernel, flex_lse, fused_attention_lse
from harness.methods.common.rope import repeat_kv

log = logging.getLogger(__name__)

NEG_INF = float("-inf")
EXPLICIT_BUDGET = 1 << 24  # fp32 score elements per explicit block (64 MiB)
_CHECKED: dict[tuple[str, str, torch.dtype], bool] = {}


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.tensor(NEG_INF, dtype=dtype, device=mask.device))


def _cpu_flash(q, k, v, scale, mask, causal):
    e, dv = q.shape[-1], v.shape[-1]
    if dv != e:  # the op needs one head size: pad V with zeros and drop the padding afterwards
        v = torch.nn.functional.pad(v, (0, e - dv)) if dv < e else v
        if dv > e:
            raise ValueError("value head size larger than query head size")
    attn_mask = None if mask is None else _additive(mask, q.dtype)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, attn_mask=attn_mask, scale=scale)[:2]
    return out[..., :dv].float(), lse.float()


def _cuda_efficient(q, k, v, scale, mask, causal):
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    e, dv = q.shape[-1], v.shape[-1]
    if dv < e:
        v = torch.nn.functional.pad(v, (0, e - dv))
    K = k.shape[-2]
    pad = (-K) % 16  # the kernel wants bias rows aligned to 16 elements: pad keys, mask the padding
    bias = None
    if mask is not None or pad:
        m = mask if mask is not None else torch.ones(q.shape[-2], K, dtype=torch.bool, device=q.device)
        if pad:
            k = torch.nn.functional.pad(k, (0, 0, 0, pad))
            v = torch.nn.functional.pad(v, (0, 0, 0, pad))
            m = torch.nn.functional.pad(m, (0, pad), value=False)
        if causal:  # fold the top-left causal mask into the bias
            s = q.shape[-2]
            m = m & (torch.arange(m.shape[-1], device=q.device)[None, :] <= torch.arange(s, device=q.device)[:, None])
            causal = False
        bias = _additive(m, q.dtype).expand(q.shape[0], q.shape[1], -1, -1)
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias, True, 0.0, causal, scale=scale)[:2]
    return out[..., :dv].float(), lse[..., : q.shape[-2]].float()


def _explicit(q, k, v, scale, mask, causal):
    b, H, s, _ = q.shape
    K = k.shape[-2]
    block = max(1, EXPLICIT_BUDGET // max(1, b * H * K))
    outs, lses = [], []
    cols = torch.arange(K, device=q.device)
    for r0 in range(0, s, block):
        r1 = min(s, r0 + block)
        m = None if mask is None else mask[r0:r1]
        if causal:
            c = cols[None, :] <= torch.arange(r0, r1, device=q.device)[:, None]
            m = c if m is None else (m & c)
        o, lse = attention_lse(q[:, :, r0:r1], k, v, scale, m)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _flex(q, k, v, scale, mask, causal):
    return flex_lse(q, k, v, scale, causal, mask)


def _fast_backend(device: torch.device):
    if device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return "cpu_flash", _cpu_flash
    if device.type == "cuda" and hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
        return "cuda_efficient", _cuda_efficient
    return None, None


def _self_check(name, fn, device: torch.device, dtype: torch.dtype) -> bool:
    key = (name, device.type, dtype)
    if key not in _CHECKED:
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(1, 4, 5, 16, generator=gen).to(device, dtype)
        k = torch.randn(1, 2, 7, 16, generator=gen).to(device, dtype)
        v = torch.randn(1, 2, 7, 8, generator=gen).to(device, dtype)
        mask = (torch.arange(7)[None, :] % 3 != torch.arange(5)[:, None] % 3).to(device)
        mask[1] = False
        tol = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
        ok = True
        try:
            for m, causal in ((None, False), (mask, False), (None, True)):
                ref_o, ref_l = _explicit(q, k, v, 0.3, m, causal)
                out, lse = _finish(*fn(q, k, v, 0.3, m, causal), m)
                ok &= bool(torch.allclose(out, ref_o, atol=tol, rtol=tol)) and bool(torch.equal(
                    torch.isfinite(lse), torch.isfinite(ref_l))) and bool(torch.allclose(
                        lse.nan_to_num(neginf=0.0), ref_l.nan_to_num(neginf=0.0), atol=tol, rtol=tol))
        except Exception as exc:
            log.info("LSE backend %s unavailable for %s/%s: %s", name, device.type, dtype, str(exc).splitlines()[0])
            ok = False
        if not ok:
            log.info("LSE backend %s disabled for %s/%s (self-check failed); using explicit blocks",
                     name, device.type, dtype)
        _CHECKED[key] = ok
    return _CHECKED[key]


def _finish(out: torch.Tensor, lse: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows without any allowed key: out 0, lse -inf (whatever the backend returned)."""
    if mask is None:
        return out, lse
    has = mask.any(dim=-1)
    if bool(has.all()):
        return out, lse
    lse = torch.where(has, lse, torch.full_like(lse, NEG_INF))
    return torch.where(has[..., None], out, torch.zeros_like(out)), lse


def lse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None,
                  causal: bool = False, rows_nonempty: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of q [b, H, s, e] over k [b, Hkv, K, e], v [b, Hkv, K, dv] (GQA allowed, dv <= e).

    `mask` bool [s, K] (True = attend); `causal` = top-left causal (row r sees keys 0..r). Returns out [b, H, s, dv]
    and lse [b, H, s], both fp32; rows with no allowed key give out 0 and lse -inf (safe for `merge_lse`).
    `rows_nonempty` promises that every row of `mask` allows a key (skips that check).
    """
    b, H, s, _ = q.shape
    K = k.shape[-2]
    if s == 0 or K == 0:
        return (torch.zeros(b, H, s, v.shape[-1], device=q.device, dtype=torch.float32),
                torch.full((b, H, s), NEG_INF, device=q.device, dtype=torch.float32))
    if mask is None and v.shape[-1] == q.shape[-1] and (not causal or s == K):
        # unmasked: the shared fused path of harness.methods.common.lse (no bias tensor, O(s·d) memory on every device)
        out, lse = fused_attention_lse(q, k, v, scale, causal)
        return out.float(), lse
    kind = current_kernel()
    name, fn = _fast_backend(q.device) if kind != "flex" else ("flex", _flex)
    check = None if rows_nonempty else mask
    if kind == "eager":
        return _finish(*_explicit(q, k, v, scale, mask, causal), check)
    if fn is not None and _self_check(name, fn, q.device, q.dtype):
        return _finish(*fn(q, k, v, scale, mask, causal), check)
    return _finish(*_explicit(q, k, v, scale, mask, causal), check)
