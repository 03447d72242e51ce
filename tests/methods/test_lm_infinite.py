"""LM-Infinite: the Λ-shaped mask and distance cap by hand, the kernel against a naive per-pair reference (prefill,
chunks, decode), the official stationary-branch formula, equality with the original model within n_local, no L×L
intermediate, configuration errors."""

from __future__ import annotations

import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.lm_infinite import LMInfiniteKernel
from tests.methods.helpers import MOD, Tables, apply_method, cached_forwards
from tests.methods.reference import lm_infinite_relative
from tests.methods.test_streaming_llm import largest_intermediate, naive, rand_qkv, rot, run_split


def test_lambda_mask_and_cap_by_hand():
    # n_global = 2, n_local = 4, cap 4: query 9 sees tokens 0, 1 at distance 4, tokens 6..9 at 3..0, nothing between
    assert [lm_infinite_relative(9, j, 2, 4, 4) for j in range(10)] == [4, 4, None, None, None, None, 3, 2, 1, 0]
    # within n_local: every key at its true distance
    assert [lm_infinite_relative(3, j, 2, 4, 4) for j in range(4)] == [3, 2, 1, 0]
    # a cap above n_local binds only from i = cap on (the official decode rule min(cap, K − 1))
    assert [lm_infinite_relative(i, 0, 1, 4, 6) for i in range(4, 9)] == [4, 5, 6, 6, 6]


def test_stationary_branch_is_the_official_formula():
    """Official: stationary query = q rotated to min(limit, K − 1), stationary key = k unrotated (position 0)."""
    q, k, v = rand_qkv(12)
    kernel = LMInfiniteKernel(Tables(), 1, 4, 4)
    out = run_split(kernel, q, k, v, [12])
    ke, ve = k[0].repeat_interleave(2, 0), v[0].repeat_interleave(2, 0)
    i = 11  # sees token 0 (stationary) and tokens 8..11 (rotated)
    logits = [(rot(q[0, :, i], 4) * ke[:, 0]).sum(-1)] + [(rot(q[0, :, i], i - j) * ke[:, j]).sum(-1)
                                                         for j in range(8, 12)]
    p = (torch.stack(logits, -1) * MOD.scaling).softmax(-1)
    want = (p[..., None] * ve[:, [0, 8, 9, 10, 11]]).sum(1)
    assert torch.allclose(out[0, :, i], want, atol=1e-6)


@pytest.mark.parametrize(("n_global", "n_local", "limit"), [(3, 10, 10), (2, 8, 5), (2, 8, 12), (0, 6, 6)])
def test_kernel_matches_naive_in_prefill_chunks_and_decode(n_global, n_local, limit):
    L = 40
    q, k, v = rand_qkv(L, seed=3)
    ref = naive(q, k, v, lambda i, j: lm_infinite_relative(i, j, n_global, n_local, limit), MOD.scaling)
    kernel = LMInfiniteKernel(Tables(), n_global, n_local, limit)
    for sizes in ([L], [9, 31], [L - 2, 1, 1]):
        assert (run_split(kernel, q, k, v, sizes) - ref).abs().max() < 1e-5, sizes


def test_no_quadratic_intermediate():
    L, n_local = 2048, 64
    largest = largest_intermediate(LMInfiniteKernel(Tables(), 10, n_local, n_local), L)
    assert largest < L * L // 4
    assert largest <= 2 * 512 * (512 + n_local) * 2


def _model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.inference_mode()
def test_equals_original_within_n_local_then_differs(tiny_model_dir):
    ids = torch.randint(3, 500, (1, 100))
    ref = _model(tiny_model_dir)(ids).logits
    model = _model(tiny_model_dir)
    method = apply_method(model, "lm_infinite", n_global=4, n_local=32)
    assert method.exact_length(method.info) == 32
    assert torch.equal(model(ids[:, :32]).logits, ref[:, :32])  # one causal SDPA call: bit for bit
    out = model(ids).logits
    assert torch.allclose(out[:, :32], ref[:, :32], atol=1e-4)
    assert not torch.allclose(out[:, 40:], ref[:, 40:], atol=1e-2)


@torch.inference_mode()
def test_cached_decode_and_chunks_equal_one_shot(tiny_model_dir):
    model = _model(tiny_model_dir)
    apply_method(model, "lm_infinite", n_global=4, n_local=24)
    ids = torch.randint(3, 500, (1, 90))
    full = cached_forwards(model, ids, [90])
    assert (cached_forwards(model, ids, [30, 44, 16]) - full).abs().max() < 1e-4
    assert (cached_forwards(model, ids, [86] + [1] * 4) - full).abs().max() < 1e-4


def _validate(params, window=64):
    cls = METHODS.get("lm_infinite")
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=None), window)


def test_defaults_and_config_errors():
    p = P.build(METHODS.get("lm_infinite").Params, {})
    assert (p.n_global, p.n_local, p.limit_distance) == (10, None, None)  # official drop-in: (M, 10), cap M
    with pytest.raises(ConfigError, match="params.n_local"):
        _validate({"n_local": 65})
    with pytest.raises(ConfigError, match="params.limit_distance"):
        _validate({"n_local": 32, "limit_distance": 100})
    with pytest.raises(ConfigError, match="params.n_global"):
        _validate({"n_global": -1})
    _validate({})
    _validate(METHODS.get("lm_infinite").suggested_params(64, 1024))
