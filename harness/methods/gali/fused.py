"""GALI attention with noise (fp32 weights): query-blocked, one bounded score tile at a time, counter-based noise.

The interpolated logits are ordinary logits against the interpolated keys (see `gali.kernel`), so a block of
queries needs one [b, H, n, K'] score tile (K' = the keys visible to the block's last query), the noise of that tile
(`gali.noise.NoiseStream`, a pure function of the token indices), a causal triangle on its last n columns, one
softmax and one product with the values. Memory is bounded by the tile (`block_elements` scores), never by K².
Each noise value depends only on (seed, layer, head, a, b), so the result does not depend on the block size or on
how the prompt was chunked (beyond the positions themselves, which depend on K).

The paper's default (Gaussian, zero where r = 0, no row statistic) takes `split_attention` on CPU: the keys without
noise go through the flash kernel and only the noisy keys get explicit tiles; other settings take the full tile.
"""

from __future__ import annotations

import torch

from harness.methods.common.attention import attention, query_blocks
from harness.methods.gali.kernel import NoiseSpec, grouped_scores, grouped_values
from harness.methods.gali.noise import FACTOR_BLOCK, FactoredGaussian, NoiseStream, hash_to_normal


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
        std = torch.sub(a[:, None], b[None, :]).to(torch.float32).mul_(coef)  # exact integer distances a − b, [n, K']
        z = hash_to_normal(NoiseStream.mix(stream.rows(heads, a), stream.col_range(width, scores.device)))
        return scores.addcmul_(z, std)
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
    if z is None and splittable(spec, q.device):
        return split_attention(qf, kf, vf, spec=spec, stream=stream, r_nonzero=rmask,
                               block_elements=min(block_elements, SPLIT_TILE)).to(v.dtype)
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


SPLIT_TILE = 2**20  # explicit scores per tile of `split_attention` (4 MiB in fp32: near the core's cache size)
SPLIT_ROWS = 32  # at least this many queries per tile: fewer make the score matrix products inefficient
_FLASH_OK: dict[str, bool] = {}


def _flash_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of pre-scaled q [b, H, n, d] over k/v [b, Hkv, K, d'] -> (out fp32, lse [b, H, n]) by the one
    attention function (its fastest exact backend); `causal`: query i sees keys 0..i (n == K)."""
    return attention(q, k, v, 1.0, causal=causal, return_lse=True, kernel="auto")


def _flash_available(device: torch.device) -> bool:
    """Attention with log-sum-exp on CPU, checked once against explicit attention (GQA, fp32)."""
    if device.type != "cpu":
        return False
    if "cpu" not in _FLASH_OK:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, h, n, 16, generator=gen) for h, n in ((4, 3), (2, 7), (2, 7)))
        try:
            out, lse = _flash_lse(q, k, v)
            scores = q @ k.repeat_interleave(2, 1).transpose(-1, -2)
            want = torch.softmax(scores, -1) @ v.repeat_interleave(2, 1)
            _FLASH_OK["cpu"] = bool(torch.allclose(out, want, atol=1e-5)
                                    and torch.allclose(lse, scores.logsumexp(-1), atol=1e-5))
        except (RuntimeError, AttributeError):
            _FLASH_OK["cpu"] = False
    return _FLASH_OK["cpu"]


def splittable(spec: NoiseSpec, device: torch.device) -> bool:
    """Whether `split_attention` applies: Gaussian noise with no row statistic, zero where r = 0, on CPU flash."""
    return (spec.kind == "gaussian" and not spec.scale_mean and bool(spec.addon_relcoef)
            and _flash_available(device))


def split_attention(qf: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor, *, spec: NoiseSpec, stream: NoiseStream,
                    r_nonzero: torch.Tensor, block_elements: int = SPLIT_TILE,
                    min_rows: int = SPLIT_ROWS) -> torch.Tensor:
    """`noisy_attention` for noise that is zero where r = 0: fp32 pre-scaled q [b, H, s, d], k/v [b, Hkv, K, d].

    With t the end of the chunk's last noisy key (keys t..K−1 are clean), the keys split into disjoint sets:
    * clean keys (r = 0) without noise: those before the chunk (index < K − s, visible to every query) in one
      non-causal call of the CPU flash kernel, and the chunk's clean tail t..K−1 in one causal call for the queries
      t..K−1; merged exactly by their log-sum-exp into (out_c, lse_c);
    * the noisy keys before the chunk and the chunk's keys K − s..t−1: explicit score tiles per block of queries
      (noise drawn only for these keys, zero where r = 0, the causal triangle where a block meets its own keys).
      They are laid out once as [zero key, noisy keys, chunk keys], so each block's keys are a contiguous prefix;
      the zero key's column is overwritten with lse_c, so the tile's softmax gives the final probabilities and, in
      that column, out_c's weight.
    Noise values are the same pure function of (a, b) as everywhere else; only the float rounding of the merge
    depends on the block size.
    """
    bsz, heads, s, d = qf.shape
    n_keys, dev = kf.shape[-2], qf.device
    first = n_keys - s  # token index of query 0
    own_noisy = torch.nonzero(r_nonzero[first:]).flatten()
    t = first + (int(own_noisy[-1]) + 1 if own_noisy.numel() else 0)  # keys t..K−1: the chunk's clean tail
    noisy, clean = torch.nonzero(r_nonzero[:first]).flatten(), torch.nonzero(~r_nonzero[:first]).flatten()
    zero = kf.new_zeros(bsz, kf.shape[1], 1, d)
    k_ex = torch.cat([zero, kf.index_select(2, noisy), kf[..., first:t, :]], dim=2)
    v_ex = torch.cat([vf.new_zeros(bsz, vf.shape[1], 1, vf.shape[-1]), vf.index_select(2, noisy), vf[..., first:t, :]],
                     dim=2)
    idx = torch.cat([noisy, torch.arange(first, t, device=dev)])  # token index of each explicit key
    coef = float(spec.std_base) / n_keys if spec.scale_std else 1.0
    mask = torch.cat([torch.ones(len(noisy), device=dev), r_nonzero[first:t].to(torch.float32)]).mul_(coef)
    cols, idx_f = stream.col_range(t, dev).index_select(0, idx), idx.to(torch.float32)
    n_pre = len(noisy)
    out_c, lse_c = _clean_part(qf, kf, vf, clean, t - first)
    out = torch.empty(bsz, heads, s, vf.shape[-1], device=dev)
    step = min(s, max(min_rows, block_elements // max(1, bsz * heads * (len(idx) + 1))))
    tri = torch.ones(step, step, dtype=torch.bool, device=dev).triu_(1)
    for lo, hi in query_blocks(s, step):
        n, a0 = hi - lo, first + lo
        width = n_pre + min(first + hi, t) - first  # explicit keys of this block: columns 1..width
        a = torch.arange(a0, a0 + n, device=dev)
        scores = grouped_scores(qf[..., lo:hi, :], k_ex[..., :width + 1, :])  # [b, H, n, width + 1]
        z = hash_to_normal(NoiseStream.mix(stream.rows(heads, a), cols[:width]))  # [H, n, width]
        if spec.scale_std:  # std = (a − b)·c_b, exact integer distances (the triangle's negative ones are masked)
            std = torch.sub(a.to(torch.float32)[:, None], idx_f[None, :width]).mul_(mask[:width])
        else:
            std = mask[:width].expand(n, width)
        scores[..., 1:].addcmul_(z, std)
        m = min(first + hi, t) - a0  # the block's own explicit keys a0..: future ones masked
        if m > 0:
            scores[..., width + 1 - m:].masked_fill_(tri[:n, :m], float("-inf"))
        scores[..., 0] = float("-inf") if lse_c is None else lse_c[..., lo:hi]
        probs = torch.softmax(scores, dim=-1)
        blk = grouped_values(probs, v_ex[..., :width + 1, :])
        if out_c is not None:
            blk.addcmul_(probs[..., :1], out_c[..., lo:hi, :])
        out[..., lo:hi, :] = blk
    return out


def _clean_part(qf: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor, clean: torch.Tensor,
                tail: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(out_c, lse_c) of the clean keys: `clean` indices before the chunk (all queries) and the chunk's keys from
    row `tail` on (causal, queries `tail`..s−1); lse −inf for rows with no clean key. None when there are none."""
    bsz, heads, s, _ = qf.shape
    first = kf.shape[-2] - s
    parts = []
    if clean.numel():
        parts.append(_flash_lse(qf, kf.index_select(2, clean), vf.index_select(2, clean)))
    if tail < s:
        o_t, l_t = _flash_lse(qf[..., tail:, :], kf[..., first + tail:, :], vf[..., first + tail:, :], causal=True)
        if not parts:
            out = o_t.new_zeros(bsz, heads, s, o_t.shape[-1])
            lse = l_t.new_full((bsz, heads, s), float("-inf"))
            out[..., tail:, :], lse[..., tail:] = o_t, l_t
            return out, lse
        out, lse = parts[0]
        o_p, l_p = out[..., tail:, :], lse[..., tail:]
        merged = torch.logaddexp(l_p, l_t)
        o_p.mul_(torch.exp(l_p - merged).unsqueeze(-1)).add_(o_t * torch.exp(l_t - merged).unsqueeze(-1))
        l_p.copy_(merged)
        return out, lse
    return parts[0] if parts else (None, None)


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
