"""The one attention function of the position-remapping methods: one backend table, one self-check, one budget.

`attention(q, k, v, scale, causal=False, mask=None, return_lse=False, kernel=None)`: q [b, H, s, e] over
k [b, Hkv, K, e], v [b, Hkv, K, dv] (GQA: H a multiple of Hkv; dv <= e). `causal` is bottom-right aligned: the s
queries are the last s of the K keys (query r sees keys 0 .. K − s + r); `mask` [s, K] is boolean (True = attend)
or additive (float); with `return_lse` the result is (out fp32, log-sum-exp [b, H, s] fp32) for exact merges
(`merge_lse`), rows without any allowed key giving out 0 and lse −inf; otherwise out in q's dtype.

Backends (`BACKENDS`, keyed like transformers' AttentionInterface table; the calls are in `attention_kernels`):
"sdpa" (PyTorch's SDPA kernels, and their private ops that return the log-sum-exp), "flex" (FlexAttention), "flash"
(the flash-attn package: CUDA, fp16/bf16, unmasked pieces) and "eager" (explicit fp32 scores in query blocks: the
reference). The `kernel` argument, or the method's `kernel` option in effect (`use_kernel`), picks them
(`KERNELS`). Before its first use on a (device, dtype, head sizes) a fused backend reproduces eager on a tiny case
(`_verified`, one cache); a backend that fails is logged and skipped, so results never depend on a private op that
misbehaves. Nothing K × K is built: fused kernels are O(s·d), and the eager path works on query blocks within
`QUERY_BLOCK_BUDGET` bytes. docs/methods/attention.md describes all of it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, get_args, overload

import torch
import torch.nn.functional as F

from harness.core.errors import ConfigError
from harness.methods.common.attention_kernels import (
    NEG_INF,
    additive_mask,
    flash_lse,
    flash_supports,
    flex_lse,
    importable,
    sdpa_chunk,
    sdpa_lse,
    sdpa_supports,
)
from harness.methods.common.rope import repeat_kv

log = logging.getLogger(__name__)

#: bytes of working memory per query block of the eager path (fp32 scores, probabilities and mask: 12 bytes per pair)
QUERY_BLOCK_BUDGET = 256 * 2**20
BYTES_PER_SCORE = 12

Pair = tuple[torch.Tensor, torch.Tensor]
#: (q, k, v, scale, causal, mask) -> (out, lse); `causal` is only set together with mask None and s == K
LseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, bool, torch.Tensor | None], Pair]


def query_blocks(s: int, block: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering s queries in blocks of `block`."""
    return [(i, min(i + block, s)) for i in range(0, s, block)]


def block_rows(batch_heads: int, n_keys: int, budget: int | None = None) -> int:
    """Query rows per block so that one block's scores (`BYTES_PER_SCORE` per pair) stay within `budget` bytes
    (default `QUERY_BLOCK_BUDGET`)."""
    budget = QUERY_BLOCK_BUDGET if budget is None else budget
    return max(1, budget // max(1, BYTES_PER_SCORE * batch_heads * n_keys))


def merge_lse(parts: list[Pair]) -> Pair:
    """Exactly combine (out, lse) pairs computed over disjoint key sets: one softmax over their union."""
    lse = torch.logsumexp(torch.stack([p[1] for p in parts]), dim=0)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = sum(torch.exp(p[1] - safe).unsqueeze(-1).nan_to_num(0.0) * p[0] for p in parts)
    return out, lse  # type: ignore[return-value]


def _bottom_right(s: int, n_keys: int, device: torch.device) -> torch.Tensor:
    """bool [s, K]: query r (the (K − s + r)-th key) sees keys 0 .. K − s + r."""
    return torch.arange(n_keys, device=device)[None, :] <= torch.arange(n_keys - s, n_keys, device=device)[:, None]


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask > NEG_INF


def _finish(out: torch.Tensor, lse: torch.Tensor, mask: torch.Tensor | None) -> Pair:
    """Rows without any allowed key: out 0, lse −inf (whatever the backend returned)."""
    if mask is None:
        return out, lse
    empty = ~_allowed(mask).any(dim=-1)
    if out.device.type == "cpu" and not bool(empty.any()):  # the usual case, checked where a sync costs nothing
        return out, lse
    return out.masked_fill_(empty[..., None], 0.0), lse.masked_fill_(empty, NEG_INF)


# --- the backends ----------------------------------------------------------------------------------------------------

def _eager_block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                 mask: torch.Tensor | None) -> Pair:
    """Explicit fp32 attention of one query block (k/v already expanded to q's heads)."""
    scores = torch.matmul(q.float(), k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF) if mask.dtype == torch.bool else scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return torch.matmul(torch.exp(scores - safe.unsqueeze(-1)), v), lse


def _eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
           mask: torch.Tensor | None) -> Pair:
    """The reference: explicit fp32 scores in query blocks of `block_rows` rows (never K × K)."""
    b, H, s, _ = q.shape
    n_keys = k.shape[-2]
    n_rep = H // k.shape[1]
    k, v = repeat_kv(k, n_rep).float(), repeat_kv(v, n_rep).float()
    cols = torch.arange(n_keys, device=q.device)
    outs, lses = [], []
    for r0, r1 in query_blocks(s, block_rows(b * H, n_keys)):
        m = None if mask is None else mask[..., r0:r1, :]
        if causal:
            c = cols[None, :] <= torch.arange(n_keys - s + r0, n_keys - s + r1, device=q.device)[:, None]
            m = c if m is None else (m & c if m.dtype == torch.bool else m.masked_fill(~c, NEG_INF))
        o, lse = _eager_block(q[:, :, r0:r1], k, v, scale, m)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


@dataclass(frozen=True)
class Backend:
    """One attention backend: `lse` computes (out, lse); `supports(q, op)` says whether it runs op ("lse": unmasked,
    equal head sizes; "masked": a mask or a smaller value head; "chunk": output-only bottom-right causal) on q's
    device; `chunk` is its output-only bottom-right causal attention for 1 < s < K (None: through `lse`)."""

    lse: LseFn
    supports: Callable[[torch.Tensor, str], bool]
    chunk: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None


#: the backend table (keyed like transformers' AttentionInterface): eager is the reference and the last resort
BACKENDS: dict[str, Backend] = {
    "sdpa": Backend(sdpa_lse, sdpa_supports, sdpa_chunk),
    "flex": Backend(flex_lse, lambda q, op: op != "chunk" and importable("torch.nn.attention.flex_attention")),
    "flash": Backend(flash_lse, flash_supports),
    "eager": Backend(_eager, lambda q, op: op != "chunk"),
}
#: `kernel` value -> backends tried in order for log-sum-exp pieces (eager after them); "auto" and "sdpa" compute
#: output-only attention with SDPA directly (the model's own kernels)
KernelName = Literal["auto", "sdpa", "flex", "flash", "eager"]  #: the type of a method's `params.kernel`
KERNELS: tuple[str, ...] = get_args(KernelName)
_ORDER = {"auto": ("flash", "sdpa"), "flash": ("flash", "sdpa"), "sdpa": ("sdpa",), "flex": ("flex",), "eager": ()}
_VERIFIED: dict[tuple[str, str, str, torch.dtype, int, int], bool] = {}


def _check_case(name: str, op: str, device: torch.device, dtype: torch.dtype, e: int, dv: int) -> bool:
    """Run backend `name` on a tiny GQA case of `op` and compare with eager."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, e, generator=gen).to(device, dtype)
    k = torch.randn(1, 1, 13, e, generator=gen).to(device, dtype)
    v = torch.randn(1, 1, 13, dv, generator=gen).to(device, dtype)
    tol = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
    if op == "chunk":
        want = _eager(q, k, v, 0.3, True, None)[0]
        got = BACKENDS[name].chunk(q, k, v, 0.3)  # type: ignore[misc]
        return got.shape == want.shape and bool(torch.allclose(got.float(), want, atol=tol, rtol=tol))
    mask = (torch.arange(13)[None, :] % 3 != torch.arange(5)[:, None] % 3).to(device)
    mask[1] = False
    cases = [(q, k[:, :, :5], v[:, :, :5], False, None), (q, k[:, :, :5], v[:, :, :5], True, None)]
    if op == "masked":
        cases = [(q, k, v, False, mask), (q, k, v, False, additive_mask(mask, dtype)), cases[1]]
    for qq, kk, vv, causal, m in cases:
        want_o, want_l = _eager(qq, kk, vv, 0.3, causal, m)
        out, lse = _finish(*BACKENDS[name].lse(qq, kk, vv, 0.3, causal, m), m)
        lse = lse.float()
        if out.shape != want_o.shape or lse.shape != want_l.shape or not bool(
                torch.allclose(out.float(), want_o, atol=tol, rtol=tol)) or not bool(
                torch.equal(torch.isfinite(lse), torch.isfinite(want_l))) or not bool(
                torch.allclose(lse.nan_to_num(neginf=0.0), want_l.nan_to_num(neginf=0.0), atol=tol, rtol=tol)):
            return False
    return True


def _verified(name: str, op: str, q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether backend `name` reproduced eager for `op` on q's (device, dtype, head sizes); checked once, cached."""
    key = (name, op, q.device.type, q.dtype, q.shape[-1], v.shape[-1])
    if key not in _VERIFIED:
        try:
            ok = _check_case(name, op, q.device, q.dtype, q.shape[-1], v.shape[-1])
        except Exception as exc:
            log.info("attention backend %s (%s) unavailable on %s/%s: %s", name, op, q.device.type, q.dtype,
                     str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            ok = False
        else:
            if not ok:
                log.info("attention backend %s (%s) failed its self-check on %s/%s; not used", name, op,
                         q.device.type, q.dtype)
        _VERIFIED[key] = ok
    return _VERIFIED[key]


# --- the attention function ------------------------------------------------------------------------------------------

def _lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool, mask: torch.Tensor | None,
         kind: str) -> Pair:
    """(out fp32, lse fp32) on the first verified backend of `kind` (eager otherwise). `causal`: square only."""
    op = "lse" if mask is None and v.shape[-1] == q.shape[-1] else "masked"
    for name in _ORDER[kind]:
        backend = BACKENDS[name]
        if backend.supports(q, op) and _verified(name, op, q, v):
            out, lse = backend.lse(q, k, v, scale, causal, mask)
            return _finish(out.float(), lse.float(), mask)
    return _eager(q, k, v, scale, causal, mask)


def _bottom_right_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, kind: str) -> Pair:
    """Bottom-right causal without a mask tensor: keys [0, K − s) seen by every query (one unmasked call) plus an
    s × s causal square, merged exactly."""
    s, n_keys = q.shape[-2], k.shape[-2]
    if s == 1:
        return _lse(q, k, v, scale, False, None, kind)
    p = n_keys - s
    square = _lse(q, k[:, :, p:], v[:, :, p:], scale, True, None, kind)
    if p == 0:
        return square
    return merge_lse([_lse(q, k[:, :, :p], v[:, :, :p], scale, False, None, kind), square])


def _sdpa_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
                 mask: torch.Tensor | None, fast: bool) -> torch.Tensor:
    """Output-only attention through SDPA, called as the model's own SDPA attention calls it; with `fast`, a
    bottom-right causal chunk (1 < s < K) uses the backend's mask-free formulation (`Backend.chunk`) instead."""
    s, n_keys = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if mask is None:
        if causal and s == n_keys:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        if not causal or s == 1:
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
        sdpa = BACKENDS["sdpa"]
        if fast and v.shape[-1] == q.shape[-1] and sdpa.chunk is not None and sdpa.supports(q, "chunk") and \
                _verified("sdpa", "chunk", q, v):
            return sdpa.chunk(q, k, v, scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_bottom_right(s, n_keys, q.device), scale=scale,
                                              enable_gqa=gqa)
    m = mask
    if causal:
        tri = _bottom_right(s, n_keys, q.device)
        m = m & tri if m.dtype == torch.bool else m.masked_fill(~tri, NEG_INF)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m if m.dtype == torch.bool else m.to(q.dtype),
                                         scale=scale, enable_gqa=gqa)
    has = _allowed(m).any(dim=-1)
    return torch.where(has[..., None], out, torch.zeros_like(out))


@overload
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = ...,
              mask: torch.Tensor | None = ..., return_lse: Literal[False] = ...,
              kernel: str | None = ...) -> torch.Tensor: ...


@overload
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = ...,
              mask: torch.Tensor | None = ..., *, return_lse: Literal[True], kernel: str | None = ...) -> Pair: ...


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = False,
              mask: torch.Tensor | None = None, return_lse: bool = False,
              kernel: str | None = None) -> torch.Tensor | Pair:
    """Attention of q [b, H, s, e] over k [b, Hkv, K, e], v [b, Hkv, K, dv] (GQA allowed, dv <= e).

    causal: bottom-right (the queries are the last s of the K keys). mask: bool [s, K] (True = attend) or additive
    float, broadcastable to [b, H, s, K]. return_lse: (out fp32 [b, H, s, dv], lse fp32 [b, H, s]) for `merge_lse`;
    rows without an allowed key give out 0, lse −inf. Else out [b, H, s, dv] in q's dtype. kernel: one of KERNELS
    (None = the method's choice in effect, `use_kernel`; default "auto").
    """
    kind = kernel or _KERNEL.get()
    if kind not in _ORDER:
        raise ValueError(f"unknown attention kernel {kind!r} (choose from {', '.join(KERNELS)})")
    b, H, s, _ = q.shape
    n_keys = k.shape[-2]
    if causal and s > n_keys:
        raise ValueError(f"{s} queries cannot be the last queries of {n_keys} keys")
    if s == 0 or n_keys == 0:
        out = torch.zeros(b, H, s, v.shape[-1], device=q.device, dtype=torch.float32 if return_lse else q.dtype)
        return (out, torch.full((b, H, s), NEG_INF, device=q.device)) if return_lse else out
    if not return_lse and kind in ("auto", "sdpa"):
        return _sdpa_output(q, k, v, scale, causal, mask, fast=kind == "auto")
    if mask is not None:
        if causal:
            tri = _bottom_right(s, n_keys, q.device)
            mask = mask & tri if mask.dtype == torch.bool else mask.masked_fill(~tri, NEG_INF)
        out, lse = _lse(q, k, v, scale, False, mask, kind)
    elif causal and s < n_keys:
        out, lse = _bottom_right_lse(q, k, v, scale, kind)
    else:
        out, lse = _lse(q, k, v, scale, causal, None, kind)
    return (out, lse) if return_lse else out.to(q.dtype)


# --- the `kernel` option of the position-remapping methods ----------------------------------------------------------

_KERNEL: ContextVar[str] = ContextVar("harness_attention_kernel", default="auto")


def current_kernel() -> str:
    """The kernel choice in effect for the attention calls of the running method."""
    return _KERNEL.get()


@contextlib.contextmanager
def use_kernel(kind: str) -> Iterator[None]:
    """Route the `attention` calls inside the block (those without an explicit `kernel`) through `kind`."""
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
        if not importable("flash_attn"):
            return "kernel = \"flash\" needs the flash-attn package (pip install 'gali-harness[flash]')"
    if kind == "flex" and not importable("torch.nn.attention.flex_attention"):
        return "kernel = \"flex\" needs torch.nn.attention.flex_attention (PyTorch >= 2.5)"
    return None


def choose_kernel(model: torch.nn.Module, kernel: Any, kind: str) -> Any:
    """`kernel` wrapped for the `kernel` option `kind` (a config error when the model's device cannot run it)."""
    problem = kernel_problem(kind, next(model.parameters()).device)
    if problem:
        raise ConfigError("params.kernel", problem, 'use kernel = "auto" (the fastest exact kernel for the device)')
    return kernel if kind == "auto" else KernelChoice(kernel, kind)
