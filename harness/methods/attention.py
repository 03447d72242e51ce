"""Attention plumbing for methods that assign their own positions (GALI, SelfExtend, DCA, ...).

`install_kernel(model, kernel)` swaps each decoder layer's attention module class for a subclass whose forward
projects q/k/v itself, stores **un-rotated** keys in the KV cache (so positions can be re-assigned at every step),
and hands un-rotated q/k/v to `kernel`. Weights, `layer_idx` and the rest of the model are untouched; no private
transformers function is patched. Works for every family in `harness.models.SUPPORTED_FAMILIES`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from harness.methods.rope import causal_sdpa, rotate


class RopeKernel(Protocol):
    """Computes attention from un-rotated tensors. Queries are the last s of the K keys."""

    def __call__(self, module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [b, H, s, d], k/v [b, Hkv, K, d] (un-rotated) -> attention output [b, H, s, d]."""
        ...


class RopeTables:
    """The model's rotary frequencies, read once from `model.model.rotary_emb` after the method set them."""

    def __init__(self, model: nn.Module):
        rotary = model.model.rotary_emb
        self.inv_freq: torch.Tensor = rotary.inv_freq.detach().to(torch.float32)
        self.attention_scaling: float = float(getattr(rotary, "attention_scaling", 1.0))

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x [b, h, n, d] to `positions` [n]."""
        return rotate(x, positions, self.inv_freq.to(x.device), self.attention_scaling)


class KernelAttentionMixin(nn.Module):
    """Forward with the transformers v5 attention signature, delegating the attention to `self.rope_kernel`."""

    rope_kernel: RopeKernel

    def forward(self, hidden_states: torch.Tensor, position_embeddings: Any = None, attention_mask: Any = None,
                past_key_values: Any = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        bsz, q_len, _ = hidden_states.shape
        shape = (bsz, q_len, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        out = self.rope_kernel(self, q, k, v)
        out = out.transpose(1, 2).reshape(bsz, q_len, -1).contiguous()
        return self.o_proj(out), None


_SWAPPED: dict[type, type] = {}


def _kernel_class(cls: type) -> type:
    if cls not in _SWAPPED:
        _SWAPPED[cls] = type(f"Kernel{cls.__name__}", (KernelAttentionMixin, cls), {"_original_class": cls})
    return _SWAPPED[cls]


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer."""
    return [layer.self_attn for layer in model.model.layers]


def install_kernel(model: nn.Module, kernel: RopeKernel) -> None:
    """Route every layer's attention through `kernel` (idempotent; the kernel object is shared by all layers)."""
    for attn in attention_modules(model):
        base = getattr(type(attn), "_original_class", type(attn))
        attn.__class__ = _kernel_class(base)
        attn.rope_kernel = kernel


def uninstall_kernel(model: nn.Module) -> None:
    """Restore the original attention classes."""
    for attn in attention_modules(model):
        base = getattr(type(attn), "_original_class", None)
        if base is not None:
            attn.__class__ = base
            del attn.rope_kernel


class IntegerRopeKernel:
    """Plain RoPE at integer positions 0..K-1 with causal SDPA: reproduces the stock model through the plumbing."""

    def __init__(self, tables: RopeTables):
        self.tables = tables

    def __call__(self, module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        K, s = k.shape[-2], q.shape[-2]
        pos = torch.arange(K, device=q.device)
        q_rot = self.tables.rotate(q, pos[K - s:])
        k_rot = self.tables.rotate(k, pos)
        return causal_sdpa(q_rot, k_rot, v, module.scaling)
