"""Pure RoPE helpers in the Hugging Face rotate-half layout (no model glue)."""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [..., n, head_dim] for (possibly fractional) positions [..., n], computed in fp32."""
    freqs = positions.to(torch.float32).unsqueeze(-1) * inv_freq.to(device=positions.device, dtype=torch.float32)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * attention_scaling).to(dtype), (emb.sin() * attention_scaling).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [b, h, n, d] by tables [n, d] or [b, n, d] (broadcast over heads)."""
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor,
           attention_scaling: float = 1.0) -> torch.Tensor:
    """Rotate x [b, h, n, d] to `positions` [n] (integer or fractional)."""
    cos, sin = rope_cos_sin(positions, inv_freq, attention_scaling, x.dtype)
    return apply_rope(x, cos, sin)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[b, Hkv, n, d] -> [b, Hkv*n_rep, n, d] (GQA expansion for explicit attention paths)."""
    if n_rep == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, n, d).reshape(b, h * n_rep, n, d)
