"""SelfExtend attention kernel: neighbour and group attention merged by log-sum-exp, O(n) memory.

Queries are the last s of the K keys (prefill, chunked prefill and decode alike). For query i:
  * neighbour keys j ∈ (i − W, i] at standard positions (query i, key j);
  * group keys j ≤ i − W at floor(j/G), the query at floor(i/G) + shift.
Both parts go through attention calls that return the LSE (`attention.attention`), never a score
matrix: the group part of all rows is one bottom-right causal block; the neighbour band of a block of ≤ W rows
is a bottom-right causal block over the last W keys plus an upper triangle, which is a causal block once both
queries and keys are reversed. For small W the band is computed explicitly in fp32, each row against exactly
its W keys (strided windows), which is cheaper than several small fused calls.
"""

from __future__ import annotations

from typing import cast

import torch

from harness.methods.common.attention import NEG_INF, attention, merge_lse
from harness.methods.common.hook import RopeTables
from harness.methods.common.key_buffer import KeyBuffers
from harness.methods.common.rope import repeat_kv
from harness.methods.selfextend.positions import (
    ShiftMode,
    group_key_positions,
    group_query_positions,
    group_shift,
    log_scale,
)

Part = tuple[torch.Tensor, torch.Tensor]
#: W at or above which the neighbour band uses fused calls (below: explicit fp32 windows, see `_band_windows`)
BAND_FUSED_MIN = 256
WINDOW_BUDGET = 16 * 2**20  # bytes of fp32 products per row block of the explicit band on CPU (× 32 on GPU)


class SelfExtendKernel:
    """Kernel for `install_kernel`: SelfExtend with window W, group size G.

    `shift_mode` "true_div" reproduces the reference's flash prefill (W − W/G) for multi-token forwards; single-
    token decode steps always use floor, as in the reference. `scale_base > 0` enables log-n query scaling.
    """

    def __init__(self, tables: RopeTables, window: int, group: int, shift_mode: ShiftMode = "floor",
                 scale_base: float = -1.0, band_fused_min: int = BAND_FUSED_MIN):
        self.tables = tables
        self.window = window
        self.group = group
        self.shift_mode: ShiftMode = shift_mode
        self.scale_base = scale_base
        self.band_fused_min = band_fused_min
        self.buffers = KeyBuffers()

    def _rotate_near(self, keys: torch.Tensor, first: int) -> torch.Tensor:
        return self.tables.rotate(keys, torch.arange(first, first + keys.shape[-2], device=keys.device))

    def _rotate_group(self, keys: torch.Tensor, first: int) -> torch.Tensor:
        pos = torch.arange(first, first + keys.shape[-2], device=keys.device)
        return self.tables.rotate(keys, group_key_positions(pos, self.group))

    def shift(self, n_queries: int, max_position: int) -> float:
        """The group query shift used by a forward of `n_queries` queries whose last position is `max_position`."""
        mode: ShiftMode = self.shift_mode if n_queries > 1 else "floor"
        return group_shift(self.window, self.group, mode, max_position)

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        bsz, heads, s, dim = q.shape
        K, W, G = k.shape[-2], self.window, self.group
        start = K - s
        scale, layer = cast(float, module.scaling), cast(int, module.layer_idx)
        pos_k = torch.arange(K, device=q.device)
        pos_q = pos_k[start:]
        factor = log_scale(pos_q, self.scale_base)
        if factor is not None:
            q = q * factor.to(q.dtype)[:, None]
        qn = self.tables.rotate(q, pos_q)
        cont = self.buffers.step(layer, s, K)
        # keys keep their Hkv heads (the fused calls handle GQA); their rotations never change once written
        kn = self.buffers.rotated(layer, "near", k, cont, self._rotate_near)
        if K <= W:  # every key is a neighbour: plain RoPE causal attention
            return attention(qn, kn, v, scale, causal=True, return_lse=True)[0].to(q.dtype)
        shift = self.shift(s, K - 1)
        qg = self.tables.rotate(q, group_query_positions(pos_q, G, shift))
        kg = self.buffers.rotated(layer, "group", k[:, :, : K - W], cont, self._rotate_group)
        out = q.new_empty(bsz, heads, s, dim)
        if start < W:  # rows below W see every earlier key as a neighbour
            o, _ = attention(qn[:, :, : W - start], kn[:, :, :W], v[:, :, :W], scale, causal=True, return_lse=True)
            out[:, :, : W - start] = o.to(q.dtype)
        g0 = max(start, W)  # first row with group keys: rows [g0, K) are the last rows of the K − W group keys
        g_out, g_lse = attention(qg[:, :, g0 - start:], kg, v[:, :, : K - W], scale, causal=True, return_lse=True)
        fused_band = W >= self.band_fused_min
        block = W if fused_band else self._window_rows(q, W)
        for a in range(g0, K, block):
            b = min(a + block, K)
            rows, g_rows = slice(a - start, b - start), slice(a - g0, b - g0)
            band = self._band_fused(qn[:, :, rows], kn, v, a, b, scale) if fused_band else \
                [self._band_windows(qn[:, :, rows], kn, v, a, b, scale)]
            out[:, :, rows] = merge_lse([*band, (g_out[:, :, g_rows], g_lse[:, :, g_rows])])[0].to(q.dtype)
        return out

    def _band_fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: int, b: int,
                    scale: float) -> list[Part]:
        """Neighbour part of rows [a, b), b − a ≤ W, a ≥ W: keys (i − W, i] for row i."""
        W, n = self.window, b - a
        parts = [attention(q, k[:, :, b - W:b], v[:, :, b - W:b], scale, causal=True, return_lse=True)]
        if n > 1:
            # rows [a, b−1) and keys [a−W+1, b−W): row i sees j ≥ i − W + 1, an upper triangle (diagonal
            # included); reversing queries and keys turns it into a square causal block.
            qf = q[:, :, : n - 1].flip(2)
            kf, vf = k[:, :, a - W + 1:b - W].flip(2), v[:, :, a - W + 1:b - W].flip(2)
            o, lse = attention(qf, kf, vf, scale, causal=True, return_lse=True)
            o = torch.cat([o.flip(2), o.new_zeros(*o.shape[:2], 1, o.shape[-1])], dim=2)
            lse = torch.cat([lse.flip(2), lse.new_full((*lse.shape[:2], 1), NEG_INF)], dim=2)
            parts.append((o, lse))
        return parts

    @staticmethod
    def _window_rows(q: torch.Tensor, W: int) -> int:
        """Rows per explicit band block: fp32 products of B·W·d per head within a budget (CPU: cache-sized)."""
        cpu = q.device.type == "cpu"
        budget = WINDOW_BUDGET if cpu else 32 * WINDOW_BUDGET
        return max(16, min(256 if cpu else 4096, budget // (4 * q.shape[0] * q.shape[1] * q.shape[-1] * W)))

    def _band_windows(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: int, b: int,
                      scale: float) -> Part:
        """Neighbour part of rows [a, b), a ≥ W, in fp32: each row against exactly its W keys (i − W, i].

        The keys are strided windows (`unfold`, a view) of k[a − W + 1 : b]; scores are elementwise products
        summed over d: B·W·d work, no mask, no wasted scores.
        """
        lo, W, n_rep = a - self.window + 1, self.window, q.shape[1] // k.shape[1]
        kw = repeat_kv(k[:, :, lo:b].float(), n_rep).unfold(2, W, 1)  # [b, H, B, d, W]: row r ↔ keys lo + r …
        vw = repeat_kv(v[:, :, lo:b].float(), n_rep).unfold(2, W, 1)
        scores = (q.float()[..., None] * kw).sum(-2) * scale
        lse = torch.logsumexp(scores, dim=-1)
        return (torch.exp(scores - lse[..., None])[..., None, :] * vw).sum(-1), lse
