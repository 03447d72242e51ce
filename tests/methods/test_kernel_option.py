"""The `kernel` option of the position-remapping methods: every choice equals the eager reference on a tiny model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.common import attention as attn
from tests.methods.helpers import apply_method, cached_forwards

METHODS_WITH_KERNEL = ("gali", "selfextend", "chunkllama", "string", "rerope", "dpe")
TARGET = 256


def _logits(model_dir, name, kernel, ids, sizes):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    window = int(model.config.max_position_embeddings)
    params = dict(METHODS.get(name).suggested_params(window, TARGET))
    method = apply_method(model, name, TARGET, **params, kernel=kernel)
    assert method.params.kernel == kernel
    return cached_forwards(model, ids, sizes)


@pytest.mark.parametrize("name", METHODS_WITH_KERNEL)
def test_every_kernel_equals_eager(tiny_model_dir, name):
    ids = torch.randint(3, 500, (1, 150), generator=torch.Generator().manual_seed(3))
    sizes = [100, 47, 1, 1, 1]  # beyond the window M = 64: chunked prefill, then cached decode steps
    ref = _logits(tiny_model_dir, name, "eager", ids, sizes)
    for kernel in ("auto", "sdpa"):
        got = _logits(tiny_model_dir, name, kernel, ids, sizes)
        assert (got - ref).abs().max() < 1e-4, kernel
    short, sizes = ids[:, :68], [66, 1, 1]  # flex runs unfused on CPU: a shorter sequence keeps the test fast
    got = _logits(tiny_model_dir, name, "flex", short, sizes)
    assert (got - _logits(tiny_model_dir, name, "eager", short, sizes)).abs().max() < 1e-4


def test_kernel_choice_reaches_the_attention_calls():
    q, k, v = (torch.randn(1, h, 9, 16, generator=torch.Generator().manual_seed(h)) for h in (4, 2, 2))
    ref = attn.attention(q, k, v, 0.25, causal=True, return_lse=True)
    for kind in ("eager", "sdpa", "flex"):
        with attn.use_kernel(kind):
            assert attn.current_kernel() == kind
            out, l_ = attn.attention(q, k, v, 0.25, causal=True, return_lse=True)
        assert torch.allclose(out.float(), ref[0].float(), atol=1e-5) and torch.allclose(l_, ref[1], atol=1e-5)
    assert attn.current_kernel() == "auto"


def test_flash_kernel_on_cpu_is_a_config_error(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with pytest.raises(ConfigError, match="params.kernel"):
        apply_method(model, "selfextend", TARGET, kernel="flash")
