"""GQA score and value products of GALI's explicit tiles, without expanding keys/values to every query head."""

from __future__ import annotations

import torch


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
