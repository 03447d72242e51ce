"""DPE positions and attention kernel (docs/reference/beyond.md §1.5–1.6, the official code's SelfExtend floor form).

For a key at distance d >= w, pair p of group g (scale s) uses query position ⌊i/s⌋ + w − w/s and key position ⌊j/s⌋,
so r_p = ⌊i/s⌋ − ⌊j/s⌋ + w − w/s (`offset_division = "true"`, the official prefill) or with ⌊w/s⌋ (`"floor"`, the
official decode). Both phases here use the one chosen convention, so decode always equals recomputation; the two
conventions coincide when s divides w (every published setting). Pairs not among a head's top-k keep r = d.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.common.banded import (
    Branches,
    PositionTable,
    banded_attention,
    module_layer,
    module_scale,
    rotate_pairs,
)
from harness.methods.common.logn import scale_query_rows


def far_query_positions(pos: torch.Tensor, scales: torch.Tensor, window: int, offset_division: str) -> torch.Tensor:
    """Far-branch query positions [n, pairs]: ⌊i/s⌋ + w − w/s (true division) or w − ⌊w/s⌋ (floor)."""
    s = scales.to(pos.device)
    base = torch.div(pos[:, None], s[None, :], rounding_mode="floor").double()
    if offset_division == "floor":
        shift = (window - torch.div(window, s, rounding_mode="floor")).double()
    else:
        shift = window - window / s.double()
    return base + shift[None, :]


def far_key_positions(pos: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Far-branch key positions [n, pairs]: ⌊j/s⌋."""
    return torch.div(pos[:, None], scales.to(pos.device)[None, :], rounding_mode="floor").double()


class DpeKernel:
    """Near: ordinary RoPE for d < w. Far: per-pair grouped positions; with top-k masks, the concatenation trick
    (far q = [M⊙R_scaled(q), (1−M)⊙R(q)], far k = [R_scaled(k), R(k)], scale kept at 1/√d) keeps GQA keys shared."""

    def __init__(self, tables: Any, window: int, scales: torch.Tensor, offset_division: str = "true",
                 masks: torch.Tensor | None = None, logn_len: int | None = None):
        self.tables, self.window, self.scales = tables, window, scales
        self.offset_division, self.masks, self.logn_len = offset_division, masks, logn_len
        att = float(getattr(tables, "attention_scaling", 1.0))
        self.normal = PositionTable(tables.inv_freq, att)
        self.scaled_keys = PositionTable(tables.inv_freq, att, lambda j: far_key_positions(j, scales))

    def _scaled_q(self, x: torch.Tensor, start: int) -> torch.Tensor:
        pos = torch.arange(start, start + x.shape[-2], device=x.device)
        pp = far_query_positions(pos, self.scales, self.window, self.offset_division)
        return rotate_pairs(x, pp, self.tables.inv_freq, self.tables.attention_scaling)

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = scale_query_rows(q, k.shape[-2] - q.shape[-2], self.logn_len)
        far_q, far_k = self._scaled_q, self.scaled_keys.rotate
        if self.masks is not None:
            m = self.masks[module_layer(module)].to(device=q.device, dtype=q.dtype)  # [H, pairs]
            md = torch.cat((m, m), dim=-1)[None, :, None, :]  # [1, H, 1, d]

            def far_q(x: torch.Tensor, start: int) -> torch.Tensor:
                return torch.cat((md * self._scaled_q(x, start), (1 - md) * self.normal.rotate(x, start)), dim=-1)

            def far_k(x: torch.Tensor, start: int) -> torch.Tensor:
                return torch.cat((self.scaled_keys.rotate(x, start), self.normal.rotate(x, start)), dim=-1)

        br = Branches(near_q=self.normal.rotate, near_k=self.normal.rotate, far_q=far_q, far_k=far_k,
                      near_width=self.window, far_start=self.window, scale=module_scale(module),
                      plain=self.tables.rotate)
        return banded_attention(q, k, v, br)
