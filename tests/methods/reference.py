"""Reference position tables of the methods, one scalar or [s, K] rule each, written straight from the papers / the
official code (docs/reference/methods.md, docs/reference/beyond.md). The kernels never use them: tests compare the
kernels' attention with attention computed from these tables."""

from __future__ import annotations

import torch

from harness.methods.chunkllama.positions import (
    inter_query_position,
    intra_query_positions,
    key_positions,
    successive_query_positions,
)
from harness.methods.selfextend.positions import (
    ShiftMode,
    group_key_positions,
    group_query_positions,
    group_shift,
)


def rerope_relative(d: int, window: int, k: float | None = None) -> float:
    """Relative position ReRoPE (k None) or Leaky ReRoPE (slope 1/k) assigns to distance d."""
    if d < window:
        return float(d)
    return float(window) if k is None else window + (d - window) / k


def string_relative(d: int, offset: int, local_value: int) -> int:
    """Relative position STRING assigns to distance d (paper semantics)."""
    return d if d < offset else d - offset + local_value


def dpe_relative(i: int, j: int, scale: int, window: int, offset_division: str = "true") -> float:
    """DPE: relative position of one pair with group scale `scale` between query i and key j <= i."""
    if i - j < window:
        return float(i - j)
    shift = window - (window // scale if offset_division == "floor" else window / scale)
    return float(i // scale - j // scale + shift)


def streaming_relative(i: int, j: int, sinks: int, window: int) -> int | None:
    """Relative position StreamingLLM gives key j from query i (None: evicted, not attended)."""
    if i - j < window:
        return i - j
    if j < sinks:
        return min(i, sinks + window - 1) - j
    return None


def lm_infinite_relative(i: int, j: int, n_global: int, n_local: int, limit: int) -> int | None:
    """Relative position LM-Infinite gives key j from query i (None: masked by the Λ shape)."""
    if i - j < n_local:
        return i - j
    if j < n_global:
        return min(limit, i)
    return None


def neighbor_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """SelfExtend: [s, K] True where key j is a neighbour of query i: 0 ≤ i − j < W."""
    rel = q_pos[:, None] - k_pos[None, :]
    return (rel >= 0) & (rel < window)


def selfextend_distances(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, group: int,
                         mode: ShiftMode = "floor") -> torch.Tensor:
    """SelfExtend: [s, K] float64 distance that each (query, key) logit uses; NaN for future keys.

    Neighbour: i − j. Group: floor(i/G) − floor(j/G) + shift (shift per `group_shift`, from the largest query).
    """
    max_pos = int(q_pos.max()) if q_pos.numel() else 0
    shift = group_shift(window, group, mode, max_pos)
    near = (q_pos[:, None] - k_pos[None, :]).double()
    far = (group_query_positions(q_pos, group, shift).double()[:, None]
           - group_key_positions(k_pos, group).double()[None, :])
    out = torch.where(neighbor_mask(q_pos, k_pos, window), near, far)
    return out.masked_fill(near < 0, float("nan"))


def dca_distances(q_pos: torch.Tensor, k_pos: torch.Tensor, chunk_size: int, chunk_len: int) -> torch.Tensor:
    """Dual Chunk Attention: [s, K] float64 distance each (query, key) logit uses (the table of
    docs/reference/methods.md §4); NaN for future keys."""
    S, C = chunk_size, chunk_len
    qc, kc = (q_pos // C)[:, None], (k_pos // C)[None, :]
    kp = key_positions(k_pos, C)[None, :].double()
    intra = intra_query_positions(q_pos, C)[:, None].double() - kp
    succ = successive_query_positions(q_pos, S, C)[:, None].double() - kp
    inter = inter_query_position(S, C) - kp
    out = torch.where(qc == kc, intra, torch.where(qc - kc == 1, succ, inter))
    return out.masked_fill(q_pos[:, None] < k_pos[None, :], float("nan"))
