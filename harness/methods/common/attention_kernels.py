"""The calls behind the backends of `harness.methods.common.attention` (its `BACKENDS` table): PyTorch's SDPA
kernels and their private log-sum-exp ops, flash-attn and FlexAttention. Each `*_lse` function takes
(q [b, H, s, e], k [b, Hkv, K, e], v [b, Hkv, K, dv], scale, causal, mask) with `causal` a square (s == K) lower
triangle and `mask` bool (True = attend) or additive, never both, and returns (out, lse) in the backend's dtypes.
They are used only after `attention`'s self-check has compared them with the eager path.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.methods.common.rope import repeat_kv

NEG_INF = float("-inf")


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as 0 / −inf in `dtype` (an additive mask is only cast)."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.tensor(NEG_INF, dtype=dtype, device=mask.device))


def _sdpa_lse_cpu(q, k, v, scale, causal, mask):
    e, dv = q.shape[-1], v.shape[-1]
    if dv > e:
        raise ValueError("value head size larger than query head size")
    if dv < e:  # the op needs one head size: pad V with zeros and drop the padding afterwards
        v = F.pad(v, (0, e - dv))
    attn_mask = None if mask is None else additive_mask(mask, q.dtype)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(  # handles GQA itself
        q, k, v, 0.0, causal, attn_mask=attn_mask, scale=scale)[:2]
    return out[..., :dv], lse


def _sdpa_lse_cuda(q, k, v, scale, causal, mask):
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    s, e, dv = q.shape[-2], q.shape[-1], v.shape[-1]
    if mask is None and dv == e:
        if q.dtype in (torch.float16, torch.bfloat16) and e % 8 == 0 and e <= 256:
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[:2]
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal,
                                                                          scale=scale)[:2]
        return out, lse[..., :s]
    if dv < e:
        v = F.pad(v, (0, e - dv))
    n_keys = k.shape[-2]
    pad = (-n_keys) % 16  # the kernel wants bias rows aligned to 16 elements: pad keys, mask the padding
    bias = None
    if mask is not None or pad:
        m = additive_mask(mask, q.dtype) if mask is not None else q.new_zeros(s, n_keys)
        if pad:
            k, v, m = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad)), F.pad(m, (0, pad), value=NEG_INF)
        if causal:  # fold the (square) causal mask into the bias
            cols = torch.arange(m.shape[-1], device=q.device)
            m, causal = m.masked_fill(cols[None, :] > torch.arange(s, device=q.device)[:, None], NEG_INF), False
        bias = m.expand(q.shape[0], q.shape[1], -1, -1)
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, 0.0, causal,
                                                                      scale=scale)[:2]
    return out[..., :dv], lse[..., :s]


def sdpa_lse(q, k, v, scale, causal, mask):
    """(out, lse) from PyTorch's private SDPA ops: CPU flash (GQA, masks, padded V), CUDA flash / efficient."""
    return (_sdpa_lse_cpu if q.device.type == "cpu" else _sdpa_lse_cuda)(q, k, v, scale, causal, mask)


def _sdpa_chunk_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Bottom-right causal, 1 < s < K: the visible prefix (no mask) and the s × s causal square, merged exactly."""
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    p = k.shape[-2] - q.shape[-2]
    o1, l1 = flash(q, k[..., :p, :], v[..., :p, :], 0.0, False, scale=scale)[:2]
    o2, l2 = flash(q, k[..., p:, :], v[..., p:, :], 0.0, True, scale=scale)[:2]
    lse = torch.logaddexp(l1, l2)
    out = o1.float() * torch.exp(l1 - lse).unsqueeze(-1) + o2.float() * torch.exp(l2 - lse).unsqueeze(-1)
    return out.to(q.dtype)


def sdpa_chunk_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Bottom-right causal, 1 < s < K: flash attention's native alignment (`causal_lower_right`), no mask tensor."""
    from torch.nn.attention.bias import causal_lower_right

    n_rep = q.shape[1] // k.shape[1]  # the lower-right kernels take equal head counts
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[-2], k.shape[-2]), scale=scale)


def sdpa_chunk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Output-only bottom-right causal attention of 1 < s < K queries without an [s, K] mask."""
    return (_sdpa_chunk_cpu if q.device.type == "cpu" else sdpa_chunk_cuda)(q, k, v, scale)


_CPU_OP = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
_CUDA_OP = hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention")


def sdpa_supports(q: torch.Tensor, op: str) -> bool:
    """CPU (the flash-for-CPU op) and CUDA."""
    if q.device.type == "cpu":
        return _CPU_OP
    return q.device.type == "cuda" and (op == "chunk" or _CUDA_OP)


def flash_lse(q, k, v, scale, causal, mask):
    """(out, lse) from flash-attn (unmasked; GQA native)."""
    from flash_attn import flash_attn_func  # pyright: ignore[reportMissingImports]

    out, lse, _ = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale,
                                  causal=causal, return_attn_probs=True)
    return out.transpose(1, 2), lse


def flash_supports(q: torch.Tensor, op: str) -> bool:
    """Unmasked pieces with equal head sizes <= 256, fp16/bf16 on CUDA, flash-attn installed."""
    return (op == "lse" and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256
            and importable("flash_attn"))


def flex_lse(q, k, v, scale, causal, mask):
    """FlexAttention: compiled on CUDA; elsewhere the unfused implementation (O(s·K) scores; its warning silenced)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    s, n_keys = q.shape[-2], k.shape[-2]
    mask_mod: Callable[..., torch.Tensor] | None = None
    score_mod: Callable[..., torch.Tensor] | None = None
    m = None if mask is None else mask.to(q.device).expand(q.shape[0], q.shape[1], s, n_keys)

    def causal_mod(b, h, qi, ki):
        return ki <= qi + (n_keys - s)

    def bool_mod(b, h, qi, ki):
        return m[b, h, qi, ki]  # type: ignore[index]

    def add_mod(score, b, h, qi, ki):
        return score + m[b, h, qi, ki]  # type: ignore[index]

    if causal:
        mask_mod = causal_mod
    elif m is not None and m.dtype == torch.bool:
        mask_mod = bool_mod
    elif m is not None:
        m = m.float()
        score_mod = add_mod
    fn = torch.compile(flex_attention) if q.is_cuda else flex_attention
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = None if mask_mod is None else create_block_mask(mask_mod, None, None, s, n_keys, device=q.device)
        out, lse = fn(q, k, v, block_mask=block, score_mod=score_mod, scale=scale,
                      enable_gqa=q.shape[1] != k.shape[1], return_lse=True)
    return out, lse


@functools.cache
def importable(module: str) -> bool:
    """Whether `module` can be imported (optional packages: flash-attn, FlexAttention)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True
