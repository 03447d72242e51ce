"""GALI attention with noise (fp32 weights): query-blocked, one bounded score tile at a time, counter-based noise.

The interpolated logits are ordinary logits against the interpolated keys (see `gali.kernel`), so a block of
queries needs one [b, H, n, K'] score tile (K' = the keys visible to the block's last query), the noise of that tile
(`gali.noise.NoiseStream`, a pure function of the token indices), a causal triangle on its last n columns, one
softmax and one product with the values. Memory is bounded by the tile (`block_elements` scores), never by K².
Each noise value depends only on (seed, layer, head, a, b), so the result does not depend on the block size or on
how the prompt was chunked (beyond the positions themselves, which depend on K).
"""

from __future__ import annotations

import torch

from harness.methods.common.attention import attention, query_blocks
from harness.methods.gali.kernel import NoiseSpec, grouped_scores, grouped_values
from harness.methods.gali.noise import FACTOR_BLOCK, SQRT2, FactoredGaussian, NoiseStream


def add_noise_(scores: torch.Tensor, a: torch.Tensor, n_keys: int, spec: NoiseSpec, stream: NoiseStream,
               r_nonzero: torch.Tensor, allowed: torch.Tensor | None = None,
               z: torch.Tensor | None = None) -> torch.Tensor:
    """Add the noise of query token indices a [n] and key indices 0..K'−1 to fp32 `scores` [b, H, n, K'] in place.

    Gaussian: z·std + mean, uniform: u·std·amp, std = (a − b)/K·std_base (scale_std = 1) or 1 (K = `n_keys`, all
    keys of the forward); mean = the row mean (scale_mean = 1) or 0; amp = the row max (scale_max = 1) or 1. Row
    statistics use the `allowed` keys (bool [n, K'], None = all). With addon_relcoef = 1 the noise is zero where
    r_nonzero [K'] is False. `z`: the standard draws [H, n, K'] (default: `stream`'s, iid per element).
    """
    heads, width = scores.shape[1], scores.shape[-1]
    b = torch.arange(width, device=scores.device)
    mean = amp = None
    if spec.kind == "gaussian" and spec.scale_mean:
        if allowed is None:
            mean = scores.mean(dim=-1, keepdim=True)
        else:
            mean = (scores * allowed).sum(-1, keepdim=True) / allowed.sum(-1, keepdim=True).clamp(min=1)
    if spec.kind == "uniform" and spec.scale_max:
        src = scores if allowed is None else scores.masked_fill(~allowed, float("-inf"))
        amp = src.amax(dim=-1, keepdim=True)
    mask = r_nonzero.to(torch.float32) if spec.addon_relcoef else torch.ones(width, device=scores.device)
    coef = mask * (float(spec.std_base) / n_keys) if spec.scale_std else mask
    if z is None and spec.kind == "gaussian" and mean is None and spec.scale_std:  # the paper's default: fewest passes
        z = stream.half_gaussian_scaled(heads, a, b)  # N(0, 1)/√2: the √2 goes into c_b
        z.mul_(torch.sub(a[:, None], b[None, :]).to(torch.float32))  # exact integer distances a − b
        return scores.addcmul_(z, coef * SQRT2)
    z = stream.standard(spec.kind, heads, a, b) if z is None else z  # [H, n, K']
    if spec.scale_std:  # std = (a − b)·c_b with c_b = mask_b·std_base/K (distance 0: exactly 0)
        z = z * torch.sub(a[:, None], b[None, :]).to(torch.float32) * coef
    elif spec.addon_relcoef:
        z = z * mask
    if mean is not None:
        z = z + mean * mask if spec.addon_relcoef else z + mean
    if amp is not None:
        z = z * amp
    return scores.add_(z)


def noisy_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, *, spec: NoiseSpec,
                    stream: NoiseStream, r_nonzero: torch.Tensor, block_elements: int = 2**21,
                    z: torch.Tensor | None = None) -> torch.Tensor:
    """Attention with noise of rotated q [b, H, s, d] (the last s of K) over rotated keys k / values v [b, Hkv, K, d].

    fp32 arithmetic; returns [b, H, s, d] in v's dtype. r_nonzero: bool [K], keys whose interpolation weight is ≠ 0.
    `z`: the standard draws of all s rows [H, s, K] when given (one query with factored noise).
    """
    bsz, heads, s, _ = q.shape
    n_keys = k.shape[-2]
    qf, kf, vf = (q.float() * scale), k.float(), v.float()
    rmask = r_nonzero.to(q.device)
    step = max(1, min(s, block_elements // max(1, bsz * heads * n_keys)))
    out = torch.empty(bsz, heads, s, v.shape[-1], device=q.device, dtype=v.dtype)
    tri = torch.ones(step, step, dtype=torch.bool, device=q.device).triu_(1)  # future keys of a block's rows
    for lo, hi in query_blocks(s, step):
        n = hi - lo
        end = n_keys - s + hi  # keys visible to the block's last query
        a = torch.arange(n_keys - s + lo, end, device=q.device)
        scores = grouped_scores(qf[..., lo:hi, :], kf[..., :end, :])
        allowed = None
        if spec.scale_mean or spec.scale_max:
            allowed = torch.ones(n, end, dtype=torch.bool, device=q.device)
            allowed[:, end - n:] = ~tri[:n, :n]
        add_noise_(scores, a, n_keys, spec, stream, rmask[:end], allowed, None if z is None else z[:, lo:hi, :end])
        scores[..., end - n:].masked_fill_(tri[:n, :n], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[..., lo:hi, :] = grouped_values(probs, vf[..., :end, :]).to(v.dtype)
    return out


def factored_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, *, spec: NoiseSpec,
                       factors: FactoredGaussian, r_nonzero: torch.Tensor) -> torch.Tensor:
    """`noisy_attention` with factored Gaussian noise (scale_mean = 0), on the flash kernel: no score tile at all.

    The noise z[a, b]·std[a, b] with z = <u(a), w(b)> and std = (a − b)·c_b (c_b = mask_b·std_base/K) is a sum of
    2r products, so it rides in 2r extra head dimensions: q' = [q, a·u/scale, −u/scale], k' = [k, c·w, b·c·w],
    v' = [v, 0]. Each block of queries sharing w (`FACTOR_BLOCK`) is one causal `attention` call.
    """
    bsz, heads, s, d = q.shape
    n_keys, rank = k.shape[-2], factors.rank
    dev = q.device
    mask = r_nonzero.to(device=dev, dtype=torch.float32) if spec.addon_relcoef else torch.ones(n_keys, device=dev)
    b = torch.arange(n_keys, device=dev)
    coef = mask * (float(spec.std_base) / n_keys) if spec.scale_std else mask
    kx = k.new_zeros(bsz, k.shape[1], n_keys, d + 2 * rank, dtype=torch.float32)
    kx[..., :d] = k
    if v.shape[-1] == d:  # the flash kernel wants one head size: pad the values with zeros
        vx = kx.new_zeros(bsz, v.shape[1], n_keys, d + 2 * rank)
        vx[..., :d] = v
    else:
        vx = v.float()
    a_all = torch.arange(n_keys - s, n_keys, device=dev)
    out = torch.empty(bsz, heads, s, v.shape[-1], device=dev, dtype=v.dtype)
    lo = 0
    while lo < s:
        block = int(a_all[lo]) // FACTOR_BLOCK
        hi = min(s, (block + 1) * FACTOR_BLOCK - (n_keys - s))
        end = n_keys - s + hi
        w = factors.keys(block, end, dev)  # [r, end]
        kx[..., :end, d:d + rank] = (w * coef[:end]).T
        if spec.scale_std:
            kx[..., :end, d + rank:] = (w * (b[:end].to(torch.float32) * coef[:end])).T
        u = factors.rows(heads, a_all[lo:hi]) / scale  # [H, n, r]
        a_col = a_all[lo:hi].to(torch.float32)[:, None]
        extra = [a_col * u, -u] if spec.scale_std else [u, torch.zeros_like(u)]
        qx = torch.cat([q[..., lo:hi, :].float(), *(e.expand(bsz, -1, -1, -1) for e in extra)], dim=-1)
        out[..., lo:hi, :] = attention(qx, kx[..., :end, :], vx[..., :end, :], scale, causal=True)[..., : v.shape[-1]]
        lo = hi
    return out
