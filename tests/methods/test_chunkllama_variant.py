"""ChunkLlama's two official entry points: mscale 0.1·ln(L/M) + 1 (flash_decoding, default) or 0.05·ln(L/M) + 1
(attn_replace, its README's), selected by `params.mscale_variant`."""

from __future__ import annotations

import math

import pytest

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.chunkllama import ChunkLlamaParams
from harness.methods.chunkllama.kernel import DcaKernel
from tests.methods.helpers import MOD, Tables
from tests.methods.test_dca import naive, qkv


def test_variant_parameter_and_its_default():
    assert P.build(ChunkLlamaParams, {}).mscale_variant == "flash_decoding"
    assert P.build(ChunkLlamaParams, {"mscale_variant": "attn_replace"}).mscale_variant == "attn_replace"
    with pytest.raises(ConfigError, match="mscale_variant"):
        P.build(ChunkLlamaParams, {"mscale_variant": "0.05"}, prefix="params.")


@pytest.mark.parametrize("coef", [0.1, 0.05])
@pytest.mark.parametrize("mode", ["per_sample", "stateful"])
def test_kernel_scales_logits_by_the_variants_factor(coef, mode):
    """K = 100 keys, M = 16: logits × (coef·ln(100/16) + 1)² against the naive one-softmax DCA."""
    q, k, v = qkv(100, 100, seed=7)
    m = coef * math.log(100 / 16) + 1  # 1.1833 (0.1) or 1.0916 (0.05)
    kernel = DcaKernel(Tables(), 16, 12, 11, mode, mscale_coef=coef)
    assert (kernel(MOD, q, k, v) - naive(q, k, v, 12, 11, m)).abs().max() <= 1e-5
    other = naive(q, k, v, 12, 11, (0.15 - coef) * math.log(100 / 16) + 1)  # the other variant's factor
    assert (kernel(MOD, q, k, v) - other).abs().max() > 1e-3


def test_apply_passes_the_variants_coefficient(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tests.methods.helpers import apply_method

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert apply_method(model, "chunkllama").kernel.mscale_coef == 0.1
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert apply_method(model, "chunkllama", mscale_variant="attn_replace").kernel.mscale_coef == 0.05
