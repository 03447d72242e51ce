"""log-n query scaling (Su Jianlin, ReRoPE patches): q_n *= max(1, ln(n) / ln(T)), n = position + 1.

T is the training length. The factor is 1 for every position inside the training window, so a method that uses it
still equals the original model there. It multiplies the **pre-RoPE** query (rotation commutes with a scalar), in
prefill and decode alike: a per-query softmax temperature. Reusable by any kernel that knows its query positions.
"""

from __future__ import annotations

import math

import torch


def logn_factors(positions: torch.Tensor, train_len: int) -> torch.Tensor:
    """max(1, ln(pos + 1) / ln(train_len)) for 0-based `positions` [n] (float32, same device)."""
    if train_len < 2:
        raise ValueError(f"log-n scaling needs a training length >= 2, got {train_len}")
    n = positions.to(torch.float64) + 1.0
    return torch.clamp(torch.log(n) / math.log(train_len), min=1.0).to(torch.float32)


def scale_queries(q: torch.Tensor, positions: torch.Tensor, train_len: int | None) -> torch.Tensor:
    """Multiply q [b, H, s, d] row-wise by the log-n factors of `positions` [s].

    Returns `q` itself (same object, bit-identical) when `train_len` is None or every factor is 1, so kernels keep
    exact equality with the original model inside the training window.
    """
    if train_len is None or positions.numel() == 0 or int(positions.max()) + 1 <= train_len:
        return q
    factors = logn_factors(positions, train_len).to(device=q.device, dtype=q.dtype)
    return q * factors.view(1, 1, -1, 1)


def scale_query_rows(q: torch.Tensor, first: int, train_len: int | None) -> torch.Tensor:
    """`scale_queries` for queries at the consecutive positions first..first+s−1 (no device sync when inactive)."""
    if train_len is None or first + q.shape[-2] <= train_len:
        return q
    return scale_queries(q, torch.arange(first, first + q.shape[-2], device=q.device), train_len)


def plain_rope_length(reach: int, window: int, train_len: int | None) -> int:
    """Longest prompt a two-branch method with log-n scaling runs as plain RoPE: every key within the near branch's
    `reach`, inside the model's window and (log-n factors all 1) the training length."""
    return min(reach, window, train_len or window)
