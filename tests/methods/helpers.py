"""Model-level helpers shared by the method tests: apply a registered method, run cached forwards."""

from __future__ import annotations

import types

import torch
from transformers import DynamicCache

from harness.core import params as P
from harness.methods.base import METHODS
from harness.methods.common.rope import rotate
from harness.model.engine import cache_argument
from harness.model.loading import model_info

THETA, D = 100.0, 16  # small RoPE head for kernel-level tests
MOD = types.SimpleNamespace(scaling=D ** -0.5, layer_idx=0)  # stands in for an attention module


class Tables:
    """RopeTables stand-in: inv_freq of THETA/D, no attention scaling, and a reference rotation."""

    inv_freq = (1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)).float()
    attention_scaling = 1.0

    def rotate(self, x, pos):
        return rotate(x, pos, self.inv_freq, 1.0)


def apply_method(model, name: str, max_pe: int | None = None, **params):
    """Build method `name` with `params` (validated like a config's [params]) and install it on `model`."""
    cls = METHODS.get(name)
    method = cls(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=max_pe))
    method.apply(model, model_info(model.config))
    return method


@torch.inference_mode()
def cached_forwards(model, ids: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Logits of all positions when `ids` is fed in forwards of `sizes` tokens with one KV cache."""
    cache, logits, start = DynamicCache(config=model.config), [], 0
    for n in sizes:
        logits.append(model(input_ids=ids[:, start:start + n], **{cache_argument(model): cache}, use_cache=True).logits)
        start += n
    assert start == ids.shape[1]
    return torch.cat(logits, dim=1)
