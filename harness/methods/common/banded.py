"""Two-branch banded attention: the shared structure of DPE, STRING and ReRoPE (docs/reference/beyond.md §0).

Keys at distance d = i − j are split into a **near** branch (0 <= d < near_width) and a **far** branch
(d >= far_start), each plain RoPE attention with its own query/key rotations; the two are merged exactly with their
log-sum-exps (one softmax over the union). Normally near_width == far_start; STRING's reference mode uses
near_width = far_start + 1 to reproduce the official prefill that counts the key at d = S in both branches.

Nothing K × K is built: the far branch is "far queries (rows i >= far_start) against the first K − far_start keys",
a bottom-right causal problem split into one unmasked rectangle and one equal-length causal triangle; the near band is
processed in query blocks that share one band mask. The same code serves
prefill, chunked prefill and one-token decode (queries are the last s of the K cached keys, positions 0..K−1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.methods.common.attention import attention, merge_lse
from harness.methods.common.rope import apply_rope

#: (x [b, h, n, d], first position p0) -> x rotated for positions p0..p0+n−1 (the last dim may grow, e.g. DPE top-k)
Rotation = Callable[[torch.Tensor, int], torch.Tensor]
#: (x [b, h, n, d], positions [n]) -> x rotated exactly as the model does (the near-only path)
PlainRotation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NEAR_BLOCK = 512


def module_scale(module: torch.nn.Module) -> float:
    """The softmax scale of the stock attention module calling a kernel (`scaling`: 1/√d unless the family sets one)."""
    scale = module.scaling
    assert isinstance(scale, (int, float)), f"{type(module).__name__}.scaling is not a number"
    return float(scale)


def module_layer(module: torch.nn.Module) -> int:
    """The layer index of the stock attention module calling a kernel (`layer_idx`)."""
    index = module.layer_idx
    assert isinstance(index, int), f"{type(module).__name__}.layer_idx is not an int"
    return index


def cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float = 1.0,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables [n, d] for positions [n] (one per pair: [n, d/2]); fp32 math like the model's rotary embedding."""
    inv = inv_freq.to(device=positions.device, dtype=torch.float32)
    pos = positions.to(torch.float32)
    freqs = pos.unsqueeze(-1) * inv if pos.dim() == 1 else pos * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * attention_scaling).to(dtype), (emb.sin() * attention_scaling).to(dtype)


def rotate_pairs(x: torch.Tensor, pair_positions: torch.Tensor, inv_freq: torch.Tensor,
                 attention_scaling: float = 1.0) -> torch.Tensor:
    """Rotate x [b, h, n, d] with one (possibly fractional) position per frequency pair: `pair_positions` [n, d/2]."""
    return apply_rope(x, *cos_sin(pair_positions, inv_freq, attention_scaling, x.dtype))


class PositionTable:
    """cos/sin rows of a fixed map from token index to (per-pair) positions, cached and grown by doubling.

    Position-only (never sequence-dependent), so one table serves every layer, example and decode step: a decode step
    slices its rows instead of recomputing transcendental functions for every cached key.
    """

    def __init__(self, inv_freq: torch.Tensor, attention_scaling: float = 1.0,
                 position_map: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.inv_freq, self.attention_scaling = inv_freq, attention_scaling
        self.position_map = position_map
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def rows(self, start: int, n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [n, d] for token indices start..start+n−1."""
        key = (device, dtype)
        table = self._tables.get(key)
        if table is None or table[0].shape[0] < start + n:
            size = max(start + n, 2 * table[0].shape[0] if table is not None else 0)
            idx = torch.arange(size, device=device)
            pos = self.position_map(idx) if self.position_map is not None else idx
            table = cos_sin(pos, self.inv_freq, self.attention_scaling, dtype)
            self._tables[key] = table
        return table[0][start:start + n], table[1][start:start + n]

    def rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate x [b, h, n, d] whose rows are token indices start..start+n−1."""
        return apply_rope(x, *self.rows(start, x.shape[-2], x.device, x.dtype))


@dataclass
class Branches:
    """How to rotate queries and keys in each branch, and where the branches meet.

    `far_k = None` reuses the near rotation for the far keys (STRING). `scale` multiplies the logits. `plain` is the
    model's own rotation, used (bit-exactly) when no key is far.
    """

    near_q: Rotation
    near_k: Rotation
    far_q: Rotation
    far_k: Rotation | None
    near_width: int
    far_start: int
    scale: float
    plain: PlainRotation


def _near(qn: torch.Tensor, kn: torch.Tensor, vn: torch.Tensor, k_lo: int, q0: int, width: int, scale: float,
          block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Near band: row i attends keys max(0, i−width+1)..i. `kn/vn` hold keys from absolute index k_lo on.

    Every query block [i0, i1) attends keys [i0−width+1, i1) through one slice of a single band mask
    (column c of row r allowed iff r <= c <= r + width − 1), so no per-block mask or merge is built.
    """
    s = qn.shape[-2]
    if s == 1:  # one query: its whole band, unmasked
        return attention(qn, kn, vn, scale, return_lse=True)
    rows = min(block, s)
    r = torch.arange(rows, device=qn.device)[:, None]
    c = torch.arange(rows + width - 1, device=qn.device)[None, :]
    band = (c >= r) & (c <= r + width - 1)
    outs, lses = [], []
    for r0 in range(0, s, block):
        r1 = min(s, r0 + block)
        i0, i1 = q0 + r0, q0 + r1
        lo = max(0, i0 - width + 1)
        off = lo - (i0 - width + 1)  # columns clipped at key 0
        mask = band[: r1 - r0, off: off + i1 - lo]
        o, lse = attention(qn[:, :, r0:r1], kn[:, :, lo - k_lo:i1 - k_lo], vn[:, :, lo - k_lo:i1 - k_lo], scale,
                           mask=mask, return_lse=True)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _far(qf: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The sf far rows are the last sf of the Kf shifted keys: bottom-right causal = rectangle + causal triangle."""
    sf, Kf = qf.shape[-2], kf.shape[-2]
    tri = attention(qf, kf[:, :, Kf - sf:], vf[:, :, Kf - sf:], scale, causal=sf > 1, return_lse=True)
    if Kf == sf:
        return tri
    rect = attention(qf, kf[:, :, :Kf - sf], vf[:, :, :Kf - sf], scale, return_lse=True)
    return merge_lse([rect, tri])


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, br: Branches,
                     block: int = NEAR_BLOCK) -> torch.Tensor:
    """Exact two-branch attention. q [b, H, s, d] are the last s of the K un-rotated keys k/v [b, Hkv, K, d].

    When no key is far (K <= far_start) this is one causal SDPA call on the near rotations, i.e. bit-identical to
    plain RoPE when the near rotation is the model's own.
    """
    s, K = q.shape[-2], k.shape[-2]
    q0 = K - s
    if K <= br.far_start:
        pos = torch.arange(K, device=q.device)
        return attention(br.plain(q, pos[q0:]), br.plain(k, pos), v, br.scale, causal=True, kernel="sdpa")
    qn = br.near_q(q, q0)
    k_lo = max(0, q0 - br.near_width + 1)
    kn = br.near_k(k[:, :, k_lo:], k_lo)
    out, lse = _near(qn, kn, v[:, :, k_lo:], k_lo, q0, br.near_width, br.scale, block)

    f_lo = max(q0, br.far_start)  # first query row with a far key
    Kf = K - br.far_start
    qf = br.far_q(q[:, :, f_lo - q0:], f_lo)
    if br.far_k is None and k_lo == 0:
        kf = kn[:, :, :Kf]
    else:
        kf = (br.far_k or br.near_k)(k[:, :, :Kf], 0)
    far_out, far_lse = _far(qf, kf, v[:, :, :Kf], br.scale)
    tail = f_lo - q0
    merged, _ = merge_lse([(out[:, :, tail:], lse[:, :, tail:]), (far_out, far_lse)])
    out = torch.cat([out[:, :, :tail], merged], dim=2) if tail else merged
    return out.to(q.dtype)
