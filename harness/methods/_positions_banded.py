"""Two-branch banded attention: the shared structure of DPE, STRING and ReRoPE (beyond.md §0).

Keys at distance d = i − j are split into a **near** branch (0 <= d < near_width) and a **far** branch
(d >= far_start), each plain RoPE attention with its own query/key rotations; the two are merged exactly with their
log-sum-exps (one softmax over the union). Normally near_width == far_start; STRING's reference mode uses
near_width = far_start + 1 to reproduce the official prefill that counts the key at d = S in both branches.

Nothing K × K is built: the far branch is "far queries (rows i >= far_start) against the first K − far_start keys",
a bottom-right causal problem split into one unmasked rectangle and one equal-length causal triangle; the near band is
processed in query blocks as (left masked triangle, unmasked rectangle, causal triangle). The same code serves
prefill, chunked prefill and one-token decode (queries are the last s of the K cached keys, positions 0..K−1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.methods._lse_backend import lse_attention
from harness.methods.lse import merge_lse
from harness.methods.rope import apply_rope, causal_sdpa

#: (x [b, h, n, d], absolute positions [n] (long)) -> rotated x (last dim may differ from d, e.g. DPE top-k)
Rotation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NEAR_BLOCK = 512


def rotate_pairs(x: torch.Tensor, pair_positions: torch.Tensor, inv_freq: torch.Tensor,
                 attention_scaling: float = 1.0) -> torch.Tensor:
    """Rotate x [b, h, n, d] with one (possibly fractional) position per frequency pair: `pair_positions` [n, d/2]."""
    freqs = pair_positions.to(torch.float32) * inv_freq.to(device=x.device, dtype=torch.float32)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = (emb.cos() * attention_scaling).to(x.dtype)
    sin = (emb.sin() * attention_scaling).to(x.dtype)
    return apply_rope(x, cos, sin)


@dataclass
class Branches:
    """How to rotate queries and keys in each branch, and where the branches meet.

    `far_k = None` reuses the near rotation for the far keys (STRING). `scale` multiplies the logits.
    """

    near_q: Rotation
    near_k: Rotation
    far_q: Rotation
    far_k: Rotation | None
    near_width: int
    far_start: int
    scale: float


def _near(qn: torch.Tensor, kn: torch.Tensor, vn: torch.Tensor, k_lo: int, q0: int, width: int, scale: float,
          block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Near band: row i attends keys max(0, i−width+1)..i. `kn/vn` hold keys from absolute index k_lo on."""
    s = qn.shape[-2]
    outs, lses = [], []
    dev = qn.device
    for r0 in range(0, s, block):
        r1 = min(s, r0 + block)
        i0, i1 = q0 + r0, q0 + r1
        qb = qn[:, :, r0:r1]
        lo = max(0, i0 - width + 1)

        def keys(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            return kn[:, :, a - k_lo:b - k_lo], vn[:, :, a - k_lo:b - k_lo]

        if r1 - r0 == 1:  # one query: its whole band, unmasked
            o, lse = lse_attention(qb, *keys(lo, i1), scale)
        elif r1 - r0 <= width:
            mid = max(0, i1 - width)
            rows = torch.arange(i0, i1, device=dev)[:, None]
            parts = [lse_attention(qb, *keys(i0, i1), scale, causal=True)]  # keys i0..i1-1: causal triangle
            if mid < i0:  # keys every row sees
                parts.append(lse_attention(qb, *keys(mid, i0), scale))
            if lo < mid:  # keys older rows see and newer rows have left behind
                cols = torch.arange(lo, mid, device=dev)[None, :]
                parts.append(lse_attention(qb, *keys(lo, mid), scale, mask=cols >= rows - width + 1))
            o, lse = merge_lse(parts) if len(parts) > 1 else parts[0]
        else:  # band narrower than the block: one masked call
            rows = torch.arange(i0, i1, device=dev)[:, None]
            cols = torch.arange(lo, i1, device=dev)[None, :]
            o, lse = lse_attention(qb, *keys(lo, i1), scale, mask=(cols <= rows) & (cols >= rows - width + 1))
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _far(qf: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The sf far rows are the last sf of the Kf shifted keys: bottom-right causal = rectangle + causal triangle."""
    sf, Kf = qf.shape[-2], kf.shape[-2]
    tri = lse_attention(qf, kf[:, :, Kf - sf:], vf[:, :, Kf - sf:], scale, causal=sf > 1)
    if Kf == sf:
        return tri
    rect = lse_attention(qf, kf[:, :, :Kf - sf], vf[:, :, :Kf - sf], scale)
    return merge_lse([rect, tri])


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, br: Branches,
                     block: int = NEAR_BLOCK) -> torch.Tensor:
    """Exact two-branch attention. q [b, H, s, d] are the last s of the K un-rotated keys k/v [b, Hkv, K, d].

    When no key is far (K <= far_start) this is one causal SDPA call on the near rotations, i.e. bit-identical to
    plain RoPE when the near rotation is the model's own.
    """
    s, K = q.shape[-2], k.shape[-2]
    q0 = K - s
    pos = torch.arange(K, device=q.device)
    qn = br.near_q(q, pos[q0:])
    if K <= br.far_start:
        return causal_sdpa(qn, br.near_k(k, pos), v, br.scale)
    k_lo = max(0, q0 - br.near_width + 1)
    kn = br.near_k(k[:, :, k_lo:], pos[k_lo:])
    out, lse = _near(qn, kn, v[:, :, k_lo:], k_lo, q0, br.near_width, br.scale, block)

    f_lo = max(q0, br.far_start)  # first query row with a far key
    Kf = K - br.far_start
    qf = br.far_q(q[:, :, f_lo - q0:], pos[f_lo:])
    if br.far_k is None and k_lo == 0:
        kf = kn[:, :, :Kf]
    else:
        kf = (br.far_k or br.near_k)(k[:, :, :Kf], pos[:Kf])
    far_out, far_lse = _far(qf, kf, v[:, :, :Kf], br.scale)
    tail = f_lo - q0
    merged, _ = merge_lse([(out[:, :, tail:], lse[:, :, tail:]), (far_out, far_lse)])
    out = torch.cat([out[:, :, :tail], merged], dim=2) if tail else merged
    return out.to(q.dtype)
