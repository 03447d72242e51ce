"""Attention pieces that return log-sum-exp, and their exact merge (for multi-branch methods).

Branches over disjoint key sets (e.g. SelfExtend's neighbour and group keys) are combined exactly:
softmax over the union = Σ_b exp(lse_b − lse) · out_b with lse = logaddexp over branches.
Everything works on query blocks, so memory is bounded by block × K, never K × K.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch

from harness.methods.common.rope import repeat_kv

NEG_INF = float("-inf")


def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit attention of one query block, computed in fp32.

    q [b, H, s, d], k/v [b, Hkv, K, d], mask bool [s, K] or [b, H, s, K] (True = attend) ->
    out [b, H, s, d] (fp32; zeros for rows with no allowed key) and lse [b, H, s] (-inf for such rows).
    """
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep).float(), repeat_kv(v, n_rep).float()
    scores = torch.matmul(q.float(), k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    probs = torch.exp(scores - safe.unsqueeze(-1))
    return torch.matmul(probs, v), lse


def merge_lse(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly combine (out, lse) pairs computed over disjoint key sets."""
    lse = torch.logsumexp(torch.stack([p[1] for p in parts]), dim=0)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = sum(torch.exp(p[1] - safe).unsqueeze(-1).nan_to_num(0.0) * p[0] for p in parts)
    return out, lse  # type: ignore[return-value]


def query_blocks(s: int, block: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering s queries in blocks of `block`."""
    return [(i, min(i + block, s)) for i in range(0, s, block)]


# --- fused (flash-style) attention with log-sum-exp: no score matrix is materialised --------------------------

_log = logging.getLogger(__name__)
EXPLICIT_BUDGET = 256 * 2**20  # bytes of fp32 scores per explicit block (fallback path)
_BACKEND_OK: dict[tuple[str, str, torch.dtype], bool] = {}


def _explicit_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`attention_lse` over query blocks sized so that one block's scores stay under EXPLICIT_BUDGET."""
    s, K = q.shape[-2], k.shape[-2]
    block = max(1, EXPLICIT_BUDGET // max(1, 12 * q.shape[0] * q.shape[1] * K))
    outs, lses = [], []
    for a, b in query_blocks(s, block):
        mask = None
        if causal:
            mask = torch.arange(K, device=q.device)[None, :] <= torch.arange(a, b, device=q.device)[:, None]
        out, lse = attention_lse(q[:, :, a:b], k, v, scale, mask)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _flash_attn_lse(q, k, v, scale, causal):
    from flash_attn import flash_attn_func

    out, lse, _ = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale,
                                  causal=causal, return_attn_probs=True)
    return out.transpose(1, 2), lse


def _aten_lse(q, k, v, scale, causal):
    if q.device.type == "cpu":  # the CPU kernel handles GQA itself
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)[:2]
        return out, lse.float()
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    if q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal,
                                                                          scale=scale)[:2]
    return out, lse[..., : q.shape[-2]].float()


def _backends(q: torch.Tensor) -> list[str]:
    kind = _KERNEL.get()
    if kind == "sdpa":
        return ["aten"]
    if kind == "flex":
        return ["flex"]
    names = []
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        try:
            import flash_attn  # noqa: F401
            names.append("flash_attn")
        except ImportError:
            pass
    return names + ["aten"]


def _probe(name: str, q: torch.Tensor) -> bool:
    """Check a fused backend once per (backend, device, dtype) against the explicit path on a small input."""
    key = (name, q.device.type, q.dtype)
    if key not in _BACKEND_OK:
        gen = torch.Generator(device="cpu").manual_seed(0)
        d = q.shape[-1]
        t = [torch.randn(1, h, 8, d, generator=gen).to(q.device, q.dtype) for h in (2, 1, 1)]  # GQA 2/1
        ok = True
        try:
            for causal in (False, True):
                out, lse = _FUSED[name](*t, d ** -0.5, causal)
                ref_out, ref_lse = _explicit_lse(*t, d ** -0.5, causal)
                tol = 1e-4 if q.dtype == torch.float32 else 3e-2
                ok = ok and tuple(lse.shape) == tuple(ref_lse.shape) and \
                    bool(torch.allclose(out.float(), ref_out, atol=tol, rtol=tol)) and \
                    bool(torch.allclose(lse, ref_lse, atol=tol, rtol=tol))
        except Exception as exc:
            _log.info("fused attention backend %s unavailable on %s/%s: %s", name, q.device.type, q.dtype, exc)
            ok = False
        _BACKEND_OK[key] = ok
    return _BACKEND_OK[key]


def fused_attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                        causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with log-sum-exp through a fused kernel (O(s·d) memory, no mask tensor).

    q [b, H, s, d], k/v [b, Hkv, K, d] (GQA allowed); `causal` is the square lower-triangular mask and needs
    s == K. Returns out [b, H, s, d] (q's dtype, or fp32 on the explicit fallback) and lse [b, H, s] fp32.
    Backends, first that passes a one-off self-check: flash-attn (CUDA, half precision, optional package),
    PyTorch's own flash/efficient SDPA kernels (`torch.ops.aten`, which return the LSE), explicit fp32 blocks.
    """
    s, K = q.shape[-2], k.shape[-2]
    if causal and s != K:
        raise ValueError(f"causal fused attention needs a square block, got {s} queries and {K} keys")
    if s == 0 or K == 0:
        return (torch.zeros_like(q), torch.full(q.shape[:-1], NEG_INF, device=q.device, dtype=torch.float32))
    if _KERNEL.get() == "eager":
        return _explicit_lse(q, k, v, scale, causal)
    for name in _backends(q):
        if _probe(name, q):
            return _FUSED[name](q, k, v, scale, causal)
    return _explicit_lse(q, k, v, scale, causal)


def bottom_right_causal_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention where the s queries are the LAST s of the K keys (query r sees keys ≤ K − s + r).

    Split as keys [0, K − s) seen by every query (one unmasked call) plus a square causal block, merged exactly.
    """
    s, K = q.shape[-2], k.shape[-2]
    if s > K:
        raise ValueError(f"{s} queries cannot be the last queries of {K} keys")
    if s == 1:
        return fused_attention_lse(q, k, v, scale)
    square = fused_attention_lse(q, k[:, :, K - s:], v[:, :, K - s:], scale, causal=True)
    if s == K:
        return square
    return merge_lse([fused_attention_lse(q, k[:, :, : K - s], v[:, :, : K - s], scale), square])


# --- the `kernel` option of the position-remapping methods ----------------------------------------------------------

#: "auto": the fastest exact backend for the device (flash-attn on CUDA half precision when installed, else PyTorch's
#: SDPA kernels, else explicit blocks); "sdpa": PyTorch's SDPA kernels; "flex": torch FlexAttention (compiled on
#: CUDA, the unfused reference implementation elsewhere: O(s·K) memory, for checks); "flash": the flash-attn package
#: (CUDA, fp16/bf16); "eager": explicit fp32 score blocks (the reference arithmetic, slowest).
KERNELS = ("auto", "sdpa", "flex", "flash", "eager")
_KERNEL: ContextVar[str] = ContextVar("harness_attention_kernel", default="auto")


def current_kernel() -> str:
    """The kernel choice in effect for the attention calls of the running method."""
    return _KERNEL.get()


@contextlib.contextmanager
def use_kernel(kind: str) -> Iterator[None]:
    """Route the fused attention calls inside the block through `kind` (one of KERNELS)."""
    token = _KERNEL.set(kind)
    try:
        yield
    finally:
        _KERNEL.reset(token)


class KernelChoice:
    """A method's attention kernel (`install_kernel`) run under a kernel choice; other attributes pass through."""

    def __init__(self, kernel: Any, kind: str):
        self.kernel, self.kind = kernel, kind

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.kind == "auto":
            return self.kernel(module, q, k, v)
        with use_kernel(self.kind):
            return self.kernel(module, q, k, v)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kernel, name)


def kernel_problem(kind: str, device: torch.device | str) -> str | None:
    """Why `kind` cannot run on `device` (None when it can): flash needs CUDA and the flash-attn package."""
    if kind not in KERNELS:
        return f"unknown kernel {kind!r} (choose from {', '.join(KERNELS)})"
    if kind == "flash":
        if torch.device(device).type != "cuda":
            return "kernel = \"flash\" needs a CUDA device (flash-attn)"
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return "kernel = \"flash\" needs the flash-attn package (pip install 'gali-harness[flash]')"
    if kind == "flex":
        try:
            from torch.nn.attention import flex_attention  # noqa: F401
        except ImportError:
            return "kernel = \"flex\" needs torch.nn.attention.flex_attention (PyTorch >= 2.5)"
    return None


def flex_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = False,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexAttention with log-sum-exp: q [b, H, s, e], k [b, Hkv, K, e], v [b, Hkv, K, dv]; `causal` (top-left) or
    a bool `mask` [s, K]. Compiled on CUDA; elsewhere the unfused implementation (its warning is silenced)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    s, n_keys = q.shape[-2], k.shape[-2]
    mask_mod = None
    if causal:
        def mask_mod(b, h, qi, ki):
            return ki <= qi
    elif mask is not None:
        m = mask.to(q.device)

        def mask_mod(b, h, qi, ki):
            return m[qi, ki]
    fn = torch.compile(flex_attention) if q.is_cuda else flex_attention
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = None if mask_mod is None else create_block_mask(mask_mod, None, None, s, n_keys, device=q.device)
        out, lse = fn(q, k, v, block_mask=block, scale=scale, enable_gqa=q.shape[1] != k.shape[1], return_lse=True)
    return out, lse.float()


_FUSED = {"flash_attn": _flash_attn_lse, "aten": _aten_lse, "flex": flex_lse}


def choose_kernel(model: torch.nn.Module, kernel: Any, kind: str) -> Any:
    """`kernel` wrapped for the `kernel` option `kind` (a config error when the model's device cannot run it)."""
    from harness.core.errors import ConfigError

    device = next(model.parameters()).device
    problem = kernel_problem(kind, device)
    if problem:
        raise ConfigError("params.kernel", problem, 'use kernel = "auto" (the fastest exact kernel for the device)')
    return kernel if kind == "auto" else KernelChoice(kernel, kind)
