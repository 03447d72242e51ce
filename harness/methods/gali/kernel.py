"""GALI attention arithmetic (docs/reference/methods.md §2.7–2.9), free of model glue.

Logit interpolation. Queries sit at integer positions P_i = ceil(p_i), so the weight r_j = frac(P_i − p_j) depends on
the key only and the interpolated logit (1 − r)·ℓ(P_i, ceil p_j) + r·ℓ(P_i, floor p_j) equals an ordinary logit
against the interpolated rotated key k'_j = (1 − r_j)·R(ceil p_j)k_j + r_j·R(floor p_j)k_j. RoPE is linear in its
(cos, sin) tables, so k' is one RoPE application with blended tables: the whole method runs on SDPA in O(K) memory.
Tables are gathered from precomputed integer positions 0..M (`IntegerTables`), so a forward costs no trigonometry.

Paths (chosen per forward by `make_plan`):
* SDPA rows: interpolated keys (fp32 weights), ceil keys (bf16-reference rows where r is exactly 0), or fractional
  RoPE (appro_attn = false);
* explicit rows, in query blocks bounded by `block_elements` scores (never K × K): noise on (it perturbs individual
  logits), and bf16-reference rows with ceil(p_i) < 256 where the bf16 weights r[i, j] are not all 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.methods.common.attention import attention, query_blocks
from harness.methods.gali.noise import FactoredGaussian, NoiseStream
from harness.methods.gali.positions import bf16_reference_weights, split_positions

FUSED_TILE = 2**21  # scores per tile of the fp32 noise path (8 MiB): bounded memory, cache-sized blocks
BF16_EXACT_LIMIT = 256  # ceil(p_i) >= 256: bf16 r == 0 for every key (see gali.positions.bf16_reference_weights)


@dataclass(frozen=True)
class NoiseSpec:
    """Noise on the interpolated logits (docs/reference/methods.md §2.8).

    `reference`: the released code's bf16 arithmetic."""

    kind: str = "none"  # "gaussian" | "uniform" | "none"
    addon_relcoef: int = 1
    std_base: float = 1.0
    scale_mean: int = 0
    scale_std: int = 1
    scale_max: int = 1
    reference: bool = False
    sampler: str = "exact"  # "exact": iid per element; "factored": rank-r per query block (gali.noise)

    @property
    def active(self) -> bool:
        return self.kind in ("gaussian", "uniform")


def grouped_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q [b, H, n, d] · k [b, Hkv, K, d]ᵀ -> [b, H, n, K] without expanding k to H heads (GQA)."""
    b, heads, n, d = q.shape
    kv = k.shape[1]
    out = torch.matmul(q.reshape(b, kv, heads // kv * n, d), k.transpose(-1, -2))
    return out.view(b, heads, n, k.shape[-2])


def grouped_values(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """p [b, H, n, K] · v [b, Hkv, K, d] -> [b, H, n, d] (GQA without expansion)."""
    b, heads, n, keys = p.shape
    kv = v.shape[1]
    out = torch.matmul(p.reshape(b, kv, heads // kv * n, keys), v)
    return out.view(b, heads, n, v.shape[-1])


def noise_for_block(scores: torch.Tensor, q_index: torch.Tensor, n_keys: int, spec: NoiseSpec,
                    stream: NoiseStream, r_nonzero: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The noise added to a block of interpolated logits `scores` [b, H, n, K] (before masking), bf16-reference
    arithmetic (the fp32 path is `gali.fused.add_noise_`); standard draws from the counter-based `stream`.

    q_index [n]: the queries' token indices among the K keys; r_nonzero broadcastable to [n, K]; allowed [n, K] the
    causal mask. Gaussian: z·std + mean, uniform: u·std·amp, with std = (a − b)/K·std_base (scale_std=1) or 1,
    mean = row mean (scale_mean=1) or 0, amp = row max (scale_max=1) or 1. Row statistics use the allowed (causal)
    keys, or all K keys in reference mode (as the released code, which reads future keys). With addon_relcoef=1 the
    noise is zero wherever r == 0.
    """
    dtype = torch.bfloat16 if spec.reference else torch.float32
    device = scores.device
    if spec.scale_std:
        if spec.reference and spec.kind == "gaussian":  # the released code: a bf16 arange (quantised for K > 256)
            ar = torch.arange(n_keys, device=device, dtype=torch.bfloat16)
            std = (ar[q_index][:, None] - ar[None, :]) / n_keys * spec.std_base
        else:
            dist = (q_index[:, None] - torch.arange(n_keys, device=device)[None, :]).to(dtype)
            std = dist / n_keys * spec.std_base
    else:
        std = torch.ones((), device=device, dtype=dtype)
    s = scores.to(dtype)
    if spec.kind == "gaussian":
        z = stream.gaussian(scores.shape[1], q_index, torch.arange(n_keys, device=device)).to(dtype)
        noise = z * std
        if spec.scale_mean:
            if spec.reference:
                mean = s.mean(dim=-1, keepdim=True)
            else:
                mean = (s * allowed).sum(-1, keepdim=True) / allowed.sum(-1, keepdim=True).clamp(min=1)
            noise = noise + mean
    else:
        u = stream.uniform(scores.shape[1], q_index, torch.arange(n_keys, device=device)).to(dtype)
        noise = u * std
        if spec.scale_max:
            masked = s if spec.reference else s.masked_fill(~allowed, float("-inf"))
            noise = noise * masked.amax(dim=-1, keepdim=True)
    if spec.addon_relcoef:
        noise = noise * r_nonzero.to(dtype)
    return noise


def half_tables(pos: torch.Tensor, inv_freq: torch.Tensor, scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (cos, sin) [n, d/2] at float32 positions, as transformers computes them (both RoPE halves are equal)."""
    ang = pos.to(torch.float32).unsqueeze(-1) * inv_freq.to(device=pos.device, dtype=torch.float32)
    return ang.cos() * scaling, ang.sin() * scaling


class IntegerTables:
    """Half tables for the integer positions 0 .. n−1, computed once; lookups are gathers (no trigonometry)."""

    def __init__(self, n: int, inv_freq: torch.Tensor, scaling: float, device: torch.device | str):
        self.cos, self.sin = half_tables(torch.arange(n, device=device), inv_freq, scaling)

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos.index_select(0, idx), self.sin.index_select(0, idx)


def group_tables(group: int, n: int, table: IntegerTables) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolated key tables of the first n tokens of the interpolated region with group size g.

    Token idx sits at u + f with u = idx // g, f = (idx % g) / g; its table is (1 − f)·R(u) + f·R(u + 1). These rows
    do not depend on the total length while g is unchanged, so callers cache them across decode steps.
    """
    idx = torch.arange(n, device=table.cos.device)
    floor = idx // group
    w = ((idx % group).to(torch.float64) / group).to(torch.float32).unsqueeze(-1)
    cf, sf = table(floor)
    cc, sc = table(floor + 1)
    return cf + w * (cc - cf), sf + w * (sc - sf)


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """x [b, h, n, d] rotated with half tables [n, d/2] (cast to x's dtype), into `out` if given.

    The same operations, in the same order, as transformers' `x·cos + rotate_half(x)·sin` (bit-identical results),
    without materialising the duplicated tables or the rotated-half copy.
    """
    c, s_ = cos.to(device=x.device, dtype=x.dtype), sin.to(device=x.device, dtype=x.dtype)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty_like(x) if out is None else out
    o1, o2 = out[..., :half], out[..., half:]
    torch.mul(x1, c, out=o1)
    o1.sub_(x2 * s_)
    torch.mul(x2, c, out=o2)
    o2.add_(x1 * s_)
    return out


@dataclass
class Plan:
    """Everything of one forward (K keys, s queries) that is shared by all layers. Tables are fp32 halves."""

    q_cos: torch.Tensor  # [s, d/2]
    q_sin: torch.Tensor
    k_segments: list[tuple[torch.Tensor, torch.Tensor]]  # consecutive key tables, K rows in all (SDPA rows' keys)
    n_explicit: int  # leading query rows computed by the explicit path
    q_pos: torch.Tensor  # float64 [s]
    k_pos: torch.Tensor | None  # float64 [K] (None where no path needs them: built lazily by the caller)
    reference: bool = False
    floor_cos: torch.Tensor | None = None  # R(floor p) (bf16-reference explicit rows)
    floor_sin: torch.Tensor | None = None
    r_nonzero: torch.Tensor | None = None  # bool [K] (fp32 mode)
    #: rotation frame: while a later forward has the same frame, its first `stable` keys keep their rotation
    frame: tuple | None = None
    stable: int = 0

    def key_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The key tables as two [K, d/2] tensors."""
        if len(self.k_segments) == 1:
            return self.k_segments[0]
        return torch.cat([c for c, _ in self.k_segments]), torch.cat([s for _, s in self.k_segments])


def rotate_segments(x: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]], first: int = 0,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate rows first.. of x [b, h, K, d] with consecutive table segments (K rows in all) into `out` [.., K, d].

    Rows before `first` of `out` are left as they are (the caller keeps rotations that are still valid).
    """
    out = torch.empty_like(x) if out is None else out
    start = 0
    for cos, sin in segments:
        end = start + cos.shape[0]
        lo = max(start, first)
        if lo < end:
            rope_rotate(x[..., lo:end, :], cos[lo - start:], sin[lo - start:], out=out[..., lo:end, :])
        start = end
    return out


def _lookup(idx: torch.Tensor, inv_freq: torch.Tensor, scaling: float,
            table: IntegerTables | None) -> tuple[torch.Tensor, torch.Tensor]:
    if table is not None and idx.numel() and int(idx.max()) < table.cos.shape[0] and int(idx.min()) >= 0:
        return table(idx)
    return half_tables(idx, inv_freq, scaling)


def make_plan(q_pos: torch.Tensor, k_pos: torch.Tensor, inv_freq: torch.Tensor, scaling: float, *,
              interpolate: bool = True, reference: bool = False, noise: NoiseSpec | None = None,
              table: IntegerTables | None = None) -> Plan:
    """Tables and path split for queries at `q_pos` [s] against keys at `k_pos` [K] (float positions).

    interpolate=False: plain RoPE at the (possibly fractional) positions (appro_attn = false; no noise).
    reference=True: r in bf16 as the released code (keys at ceil where r == 0, explicit rows where it may not be).
    `table`: precomputed integer tables (e.g. 0..M) used for every integer position in range.
    """
    noise = noise or NoiseSpec()
    q_pos, k_pos = q_pos.to(torch.float64), k_pos.to(torch.float64)
    k_floor, k_frac = split_positions(k_pos)
    if not interpolate:
        q_floor, q_frac = split_positions(q_pos)
        if bool((k_frac == 0).all()) and bool((q_frac == 0).all()):
            q_cos, q_sin = _lookup(q_floor, inv_freq, scaling, table)
            k_cos, k_sin = _lookup(k_floor, inv_freq, scaling, table)
        else:
            q_cos, q_sin = half_tables(q_pos, inv_freq, scaling)
            k_cos, k_sin = half_tables(k_pos, inv_freq, scaling)
        return Plan(q_cos, q_sin, [(k_cos, k_sin)], 0, q_pos, k_pos)
    q_ceil = torch.ceil(q_pos)
    q_cos, q_sin = _lookup(q_ceil.to(torch.long), inv_freq, scaling, table)
    floor_cos, floor_sin = _lookup(k_floor, inv_freq, scaling, table)
    ceil_cos, ceil_sin = _lookup(k_floor + (k_frac > 0).long(), inv_freq, scaling, table)
    if not reference:
        # R' = (1 − f)·R(floor p) + f·R(ceil p), f = frac(p) = 1 − r for fractional keys
        w = k_frac.to(torch.float32).unsqueeze(-1)
        k_cos, k_sin = floor_cos + w * (ceil_cos - floor_cos), floor_sin + w * (ceil_sin - floor_sin)
        n_explicit = q_pos.shape[0] if noise.active else 0
        return Plan(q_cos, q_sin, [(k_cos, k_sin)], n_explicit, q_pos, k_pos, r_nonzero=k_frac > 0)
    if noise.active and not noise.addon_relcoef:
        n_explicit = q_pos.shape[0]
    else:
        small = torch.nonzero(q_ceil < BF16_EXACT_LIMIT)
        n_explicit = int(small[-1]) + 1 if small.numel() else 0
    return Plan(q_cos, q_sin, [(ceil_cos, ceil_sin)], n_explicit, q_pos, k_pos, True, floor_cos, floor_sin)


def _rot(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return rope_rotate(x if dtype is None else x.to(dtype), cos, sin)


def run_plan(plan: Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, *,
             noise: NoiseSpec | None = None, stream: NoiseStream | None = None,
             factors: FactoredGaussian | None = None, block_elements: int = 2**25,
             k_rot: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of q [b, H, s, d] (the last s of K) over un-rotated k/v [b, Hkv, K, d] -> [b, H, s, d].

    `k_rot`: the keys already rotated with the plan's key tables (reused across steps by the caller). Noise in fp32
    mode runs `gali.fused`: `noisy_attention` (sampler "exact": one bounded score tile at a time, draws from
    `stream`) or `factored_attention` (sampler "factored": the flash kernel with 2r extra dimensions, `factors`).
    """
    noise = noise or NoiseSpec()
    s = q.shape[-2]
    if noise.active and not plan.reference and plan.n_explicit:
        from harness.methods.gali import fused

        assert plan.r_nonzero is not None  # fp32 mode
        k_rot = rotate_segments(k.float(), plan.k_segments)
        q_rot = _rot(q, plan.q_cos, plan.q_sin, torch.float32)
        if noise.sampler == "factored" and s > 1:
            return fused.factored_attention(q_rot, k_rot, v, scale, spec=noise, r_nonzero=plan.r_nonzero,
                                                  factors=factors or FactoredGaussian(0, 0))
        if noise.sampler == "factored":  # one query: materialise its O(K) row of the same factored noise
            z = (factors or FactoredGaussian(0, 0)).standard(q.shape[1], torch.tensor([k.shape[-2] - 1]), k.shape[-2])
            return fused.noisy_attention(q_rot, k_rot, v, scale, spec=noise, stream=stream or NoiseStream(0, 0),
                                               r_nonzero=plan.r_nonzero, z=z)
        return fused.noisy_attention(q_rot, k_rot, v, scale, spec=noise, stream=stream or NoiseStream(0, 0),
                                           r_nonzero=plan.r_nonzero, block_elements=min(block_elements, FUSED_TILE))
    q_rot = _rot(q, plan.q_cos, plan.q_sin)
    n_exp = plan.n_explicit
    parts = []
    if n_exp:
        parts.append(_explicit_rows(plan, q, q_rot[..., :n_exp, :], k, v, scale, noise, stream, block_elements))
    if n_exp < s:
        k_rot = rotate_segments(k, plan.k_segments) if k_rot is None else k_rot
        parts.append(attention(q_rot[..., n_exp:, :], k_rot, v, scale, causal=True))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)


def _explicit_rows(plan: Plan, q: torch.Tensor, q_rot: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                   noise: NoiseSpec, stream: NoiseStream | None, block_elements: int) -> torch.Tensor:
    """Materialised logits for the first rows of q, one query block at a time (memory: block × K per head)."""
    b, heads, n, _ = q_rot.shape
    s, n_keys = q.shape[-2], k.shape[-2]
    device = q.device
    k_cos, k_sin = plan.key_tables()
    if plan.reference:
        assert plan.floor_cos is not None and plan.floor_sin is not None and plan.k_pos is not None
        k_main = _rot(k, k_cos, k_sin)  # keys at ceil: A
        k_floor = _rot(k, plan.floor_cos, plan.floor_sin)  # keys at floor: B
        qr, vv = q_rot, v
    else:  # fp32 logits from interpolated keys
        k_main, k_floor = _rot(k, k_cos, k_sin, torch.float32), None
        qr = q_rot if q.dtype == torch.float32 else _rot(q[..., :n, :], plan.q_cos[:n], plan.q_sin[:n], torch.float32)
        vv = v.float()
    key_idx = torch.arange(n_keys, device=device)
    step = max(1, min(n, block_elements // max(1, b * heads * n_keys)))
    outs = []
    for lo, hi in query_blocks(n, step):
        q_index = torch.arange(n_keys - s + lo, n_keys - s + hi, device=device)
        allowed = key_idx[None, :] <= q_index[:, None]
        scores = grouped_scores(qr[..., lo:hi, :], k_main) * scale
        if k_floor is not None and plan.k_pos is not None:  # bf16 reference
            r = bf16_reference_weights(plan.q_pos[lo:hi], plan.k_pos).to(device)
            other = grouped_scores(qr[..., lo:hi, :], k_floor) * scale
            scores = scores - (scores - other) * r.to(scores.dtype)  # (1 − r)·A + r·B, in the logits' dtype
            r_nonzero = r != 0
        else:
            assert plan.r_nonzero is not None
            r_nonzero = plan.r_nonzero.to(device)[None, :]
        if noise.active:
            assert stream is not None
            scores = scores + noise_for_block(scores, q_index, n_keys, noise, stream, r_nonzero, allowed)
        probs = torch.softmax(scores.float().masked_fill(~allowed, float("-inf")), dim=-1)
        outs.append(grouped_values(probs.to(vv.dtype), vv).to(v.dtype))
    return torch.cat(outs, dim=-2)
