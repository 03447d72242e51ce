"""Attention pieces that return log-sum-exp, and their exact merge (for multi-branch methods).

Branches over disjoint key sets (e.g. SelfExtend's neighbour and group keys) are combined exactly:
softmax over the union = Σ_b exp(lse_b − lse) · out_b with lse = logaddexp over branches.
Everything works on query blocks, so memory is bounded by block × K, never K × K.
"""

from __future__ import annotations

import torch

from harness.methods.rope import repeat_kv

NEG_INF = float("-inf")


def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit attention of one query block, computed in fp32.

    q [b, H, s, d], k/v [b, Hkv, K, d], mask bool [s, K] or [b, H, s, K] (True = attend) ->
    out [b, H, s, d] (fp32; zeros for rows with no allowed key) and lse [b, H, s] (-inf for such rows).
    """
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep).float(), repeat_kv(v, n_rep).float()
    scores = torch.matmul(q.float(), k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    probs = torch.exp(scores - safe.unsqueeze(-1))
    return torch.matmul(probs, v), lse


def merge_lse(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly combine (out, lse) pairs computed over disjoint key sets."""
    lse = torch.logsumexp(torch.stack([p[1] for p in parts]), dim=0)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = sum(torch.exp(p[1] - safe).unsqueeze(-1).nan_to_num(0.0) * p[0] for p in parts)
    return out, lse  # type: ignore[return-value]


def query_blocks(s: int, block: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering s queries in blocks of `block`."""
    return [(i, min(i + block, s)) for i in range(0, s, block)]
