"""Sinks + sliding window attention: the shared kernel of StreamingLLM and LM-Infinite (docs/methods/streaming.md).

Query i attends to
* the **band**: keys j with 0 <= i − j < width, at their true relative distance (ordinary RoPE), and
* the **sinks**: keys j < n_sink with i − j >= width (the starting tokens that left the band), with the query rotated
  to a method-specific position `sink_q_pos(i)` and the sink keys rotated by `sink_k` (StreamingLLM: their position
  j in the cache; LM-Infinite: not rotated, i.e. position 0).
Every other key is dropped. The two sets are disjoint; their attentions are merged exactly with log-sum-exps.

Memory: the band is processed in query blocks (block × (block + width) scores), the sinks are a [s, n_sink]
problem: nothing K × K is built, and each query reads at most n_sink + width keys. The same code serves prefill,
chunked prefill and one-token decode (queries are the last s of the K cached un-rotated keys).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.methods.common.attention import attention, merge_lse
from harness.methods.common.banded import NEAR_BLOCK, PositionTable, _near

#: (x [b, h, n, d], query positions [n]) -> x rotated as the sink branch's queries
SinkQuery = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: x [b, h, n_sink, d] (keys 0..n_sink−1) -> x rotated as the sink branch's keys
SinkKey = Callable[[torch.Tensor], torch.Tensor]


def sink_mask(q_pos: torch.Tensor, n_sink: int, width: int) -> torch.Tensor:
    """bool [s, n_sink]: sink j is attended by query i through the sink branch iff i − j >= width."""
    return torch.arange(n_sink, device=q_pos.device)[None, :] <= (q_pos[:, None] - width)


def sink_band_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_sink: int, width: int,
                        table: PositionTable, plain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        sink_q: SinkQuery, sink_k: SinkKey, scale: float, block: int = NEAR_BLOCK) -> torch.Tensor:
    """q [b, H, s, d] (the last s of the K un-rotated keys k/v [b, Hkv, K, d]) -> output [b, H, s, d].

    While K <= width no key is outside the band: one causal SDPA call with the model's own rotation (`plain`),
    i.e. bit-identical to the unmodified model.
    """
    s, K = q.shape[-2], k.shape[-2]
    q0 = K - s
    if K <= width:
        pos = torch.arange(K, device=q.device)
        return attention(plain(q, pos[q0:]), plain(k, pos), v, scale, causal=True, kernel="sdpa")
    k_lo = max(0, q0 - width + 1)
    qn = table.rotate(q, q0)
    kn = table.rotate(k[:, :, k_lo:], k_lo)
    out, lse = _near(qn, kn, v[:, :, k_lo:], k_lo, q0, width, scale, block)
    n = min(n_sink, K)
    f_lo = max(q0, width)  # first query row with a sink outside the band
    if n == 0 or f_lo >= K:
        return out.to(q.dtype)
    pos = torch.arange(f_lo, K, device=q.device)
    qf = sink_q(q[:, :, f_lo - q0:], pos)
    so, sl = attention(qf, sink_k(k[:, :, :n]), v[:, :, :n], scale, mask=sink_mask(pos, n, width), return_lse=True)
    tail = f_lo - q0
    merged, _ = merge_lse([(out[:, :, tail:], lse[:, :, tail:]), (so, sl)])
    out = torch.cat([out[:, :, :tail], merged], dim=2) if tail else merged
    return out.to(q.dtype)
