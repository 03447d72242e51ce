"""Attention plumbing for methods that assign their own positions (GALI, SelfExtend, DCA, DPE, STRING, ReRoPE).

Methods plug in through transformers' public extension points only:

* the attention-function registry (`transformers.AttentionInterface`): one function, registered under
  `ATTENTION_NAME`, is selected with `model.set_attn_implementation`; it hands the layer's q/k/v to the kernel
  installed for that layer;
* the model's rotary embedding (`decoder(model).rotary_emb`, a submodule) is replaced by `IdentityRotaryEmbedding`
  (cos = 1, sin = 0) while a kernel is installed, so the stock attention module leaves q and k un-rotated and its
  KV cache holds **un-rotated** keys: positions can be re-assigned at every step.

The stock attention module keeps doing everything else — projections, the q/k norms of families that have them,
the cache update (whatever the installed transformers release calls its cache argument) and the output projection.
No forward is copied and no private function is patched. `uninstall_kernel` restores the rotary module and the
attention implementation that were there before, so the model is exactly the original again.

`decoder(model)` is the text decoder (the module with `layers` and `rotary_emb`): `model.model` for the text-only
families, `model.model.language_model` for multimodal ones such as Gemma 3 4B–27B (transformers' `get_decoder`).

The registered function receives the cached keys of the whole sequence: queries are the last s of the K keys, and
causality is the kernel's job (a custom implementation name has no mask function in transformers, so the model
passes `attention_mask=None`). Batch size 1 (no padding) is what every kernel assumes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import nn
from transformers import AttentionInterface

from harness.methods.common.rope import rotate

#: the name under which the harness's attention function is registered in transformers' AttentionInterface
ATTENTION_NAME = "gali_harness"


class RopeKernel(Protocol):
    """Computes attention from un-rotated tensors. Queries are the last s of the K keys."""

    def __call__(self, module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [b, H, s, d], k/v [b, Hkv, K, d] (un-rotated) -> attention output [b, H, s, d]."""
        ...


class RopeTables:
    """The model's rotary frequencies (after the method set them), read from its rotary embedding module."""

    def __init__(self, model: nn.Module):
        rotary: Any = original_rotary(model)
        self.inv_freq: torch.Tensor = rotary.inv_freq.detach().to(torch.float32)
        self.attention_scaling: float = float(getattr(rotary, "attention_scaling", 1.0))

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x [b, h, n, d] to `positions` [n]."""
        return rotate(x, positions, self.inv_freq.to(x.device), self.attention_scaling)


class IdentityRotaryEmbedding(nn.Module):
    """A rotary embedding whose rotation is the identity (cos = 1, sin = 0) at every position.

    Same call signature and output layout as transformers' rotary embeddings: `forward(x, position_ids)` returns
    `(cos, sin)`, each [b, n, rotary_dim] in x's dtype (expanded views, no per-position memory).
    """

    def __init__(self, rotary_dim: int):
        super().__init__()
        self.rotary_dim = rotary_dim

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = position_ids.shape[0], position_ids.shape[-1]
        ones = torch.ones(1, 1, self.rotary_dim, dtype=x.dtype, device=x.device).expand(b, n, -1)
        zeros = torch.zeros(1, 1, self.rotary_dim, dtype=x.dtype, device=x.device).expand(b, n, -1)
        return ones, zeros


@dataclass
class _Installed:
    """What `install_kernel` replaced on one model, to put back on uninstall."""

    rotary: nn.Module
    attn_implementation: str | None


_INSTALLED: weakref.WeakKeyDictionary[nn.Module, _Installed] = weakref.WeakKeyDictionary()
_KERNELS: weakref.WeakKeyDictionary[nn.Module, RopeKernel] = weakref.WeakKeyDictionary()


class KernelNotInstalledError(RuntimeError):
    """The harness attention implementation was selected on a layer that has no kernel installed."""


def kernel_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The function registered in `AttentionInterface`: attention of the layer's installed kernel.

    query [b, H, s, d], key/value [b, Hkv, K, d] (un-rotated, the whole cached sequence) -> ([b, s, H, d], None).
    """
    kernel = _KERNELS.get(module)
    if kernel is None:
        raise KernelNotInstalledError(
            f"attention implementation '{ATTENTION_NAME}' is set but layer {getattr(module, 'layer_idx', '?')} has "
            "no kernel installed (use harness.methods.common.hook.install_kernel)")
    out = kernel(module, query, key, value)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, kernel_attention)


def decoder(model: nn.Module) -> nn.Module:
    """The text decoder of a causal LM: the module holding the decoder `layers`, `rotary_emb` and the text config
    (`model.model`, or `model.model.language_model` for multimodal models such as Gemma 3 4B–27B)."""
    return cast(Any, model).get_decoder()


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer."""
    return [layer.self_attn for layer in cast(Any, decoder(model)).layers]


def original_rotary(model: nn.Module) -> nn.Module:
    """The model's own rotary embedding module (also while a kernel has replaced it by the identity)."""
    state = _INSTALLED.get(model)
    return state.rotary if state is not None else cast(Any, decoder(model)).rotary_emb


def installed_kernel(model: nn.Module) -> RopeKernel | None:
    """The kernel installed on the model's first layer, or None."""
    modules = attention_modules(model)
    return _KERNELS.get(modules[0]) if modules else None


def install_kernel(model: nn.Module, kernel: RopeKernel) -> None:
    """Route every layer's attention through `kernel` (idempotent; the kernel object is shared by all layers)."""
    if model not in _INSTALLED:
        rotary: Any = original_rotary(model)
        rotary_dim = 2 * int(rotary.inv_freq.shape[-1])
        _INSTALLED[model] = _Installed(rotary, getattr(model.config, "_attn_implementation", None))
        decoder(model).rotary_emb = IdentityRotaryEmbedding(rotary_dim)
        cast(Any, model).set_attn_implementation(ATTENTION_NAME)
    for attn in attention_modules(model):
        _KERNELS[attn] = kernel


def uninstall_kernel(model: nn.Module) -> None:
    """Restore the original rotary embedding and attention implementation (a no-op when nothing is installed)."""
    state = _INSTALLED.pop(model, None)
    if state is None:
        return
    decoder(model).rotary_emb = state.rotary
    if state.attn_implementation is not None:
        cast(Any, model).set_attn_implementation(state.attn_implementation)
    for attn in attention_modules(model):
        _KERNELS.pop(attn, None)
