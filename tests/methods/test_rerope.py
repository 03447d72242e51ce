"""ReRoPE / Leaky ReRoPE / log-n: docs/reference/beyond.md §4 cases 1–3, 12–16, against hand values and a naive L×L
reference."""

from __future__ import annotations

import math
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.common.attention import attention
from harness.methods.common.banded import Branches, banded_attention
from harness.methods.common.logn import logn_factors, scale_queries
from harness.methods.common.rope import rotate
from harness.methods.rerope import ReRopeKernel
from harness.model.engine import Engine, cache_argument
from harness.model.loading import model_info
from tests.methods.reference import rerope_relative

THETA, D = 100.0, 8


class Tables:
    """Stand-in for RopeTables (theta 100, head_dim 8: every pair turns noticeably within 40 positions)."""

    def __init__(self, d: int = D, theta: float = THETA):
        self.inv_freq = (1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)).float()
        self.attention_scaling = 1.0

    def rotate(self, x, pos):
        return rotate(x, pos, self.inv_freq, 1.0)


def naive(q, k, v, rel, scale, extra=None):
    """Softmax over keys j <= i of <R(rel[i, j]) q_i, k_j>·scale. rel [L, L] or [H, L, L, pairs] (float64)."""
    H, L, d = q.shape[1], q.shape[2], q.shape[3]
    half = d // 2
    k = k.repeat_interleave(H // k.shape[1], 1)[0]
    v = v.repeat_interleave(H // v.shape[1], 1)[0]
    q = q[0]
    rel = rel.double()
    if rel.dim() == 2:
        rel = rel[None, :, :, None].expand(1, L, L, half)
    inv = 1.0 / THETA ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = rel * inv
    q1, q2 = q[..., :half][:, :, None], q[..., half:][:, :, None]
    k1, k2 = k[..., :half][:, None], k[..., half:][:, None]
    logits = ((q1 * ang.cos() - q2 * ang.sin()) * k1 + (q2 * ang.cos() + q1 * ang.sin()) * k2).sum(-1) * scale
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    logits = logits.masked_fill(~causal, float("-inf"))
    return (logits.softmax(-1) @ v)[None]


def rand_qkv(L: int, H: int = 4, Hkv: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, h, L, D, generator=g, dtype=torch.float64) for h in (H, Hkv, Hkv))


MOD = types.SimpleNamespace(scaling=D ** -0.5, layer_idx=0)


def rel_matrix(L: int, fn) -> torch.Tensor:
    return torch.tensor([[fn(i - j) if j <= i else 0.0 for j in range(L)] for i in range(L)], dtype=torch.float64)


# ---- hand-computed rows (cases 1, 2) -------------------------------------------------------------------------


def test_rerope_relative_row_hand():
    assert [rerope_relative(7 - j, 4) for j in range(8)] == [4, 4, 4, 4, 3, 2, 1, 0]


def test_leaky_relative_row_hand():
    assert [rerope_relative(7 - j, 4, 2.0) for j in range(8)] == [5.5, 5, 4.5, 4, 3, 2, 1, 0]


def test_leaky_official_far_rotations():
    """Official far rotations: q at (i + w(k−1))/k = 11/2 for i = 7, w = 4, k = 2; key j at j/2."""
    ker = ReRopeKernel(Tables(), 4, 2.0)
    x = torch.randn(1, 1, 1, D, dtype=torch.float64)
    assert torch.allclose(ker._far_q(x, 7), Tables().rotate(x, torch.tensor([5.5])))
    x = torch.randn(1, 1, 4, D, dtype=torch.float64)
    assert torch.allclose(ker._far_k(x, 0), Tables().rotate(x, torch.tensor([0.0, 0.5, 1.0, 1.5])))


# ---- log-n (case 3) ------------------------------------------------------------------------------------------


def test_logn_factors_hand():
    n = torch.tensor([4096, 8192, 16384, 65536, 131072]) - 1
    assert torch.allclose(logn_factors(n, 4096), torch.tensor([1, 13 / 12, 14 / 12, 16 / 12, 17 / 12]))
    assert torch.allclose(logn_factors(torch.tensor([16383, 131071]), 8192), torch.tensor([14 / 13, 17 / 13]))
    want = [1, 1, 1, 1, 1, 1, 1.0860, 1.1606, 1.2263, 1.2851, 1.3383, 1.3869]
    assert torch.allclose(logn_factors(torch.arange(12), 6), torch.tensor(want), atol=1e-4)


def test_logn_is_identity_inside_training_window():
    q = torch.randn(1, 2, 5, D)
    assert scale_queries(q, torch.arange(59, 64), 64) is q
    assert scale_queries(q, torch.arange(60, 65), None) is q
    scaled = scale_queries(q, torch.arange(60, 65), 64)
    assert torch.equal(scaled[:, :, :4], q[:, :, :4])
    assert torch.allclose(scaled[:, :, 4], q[:, :, 4] * math.log(65) / math.log(64))


# ---- kernel equals the naive reference (cases 1, 2, 13) -------------------------------------------------------


@pytest.mark.parametrize("k", [None, 2.0, 3.0])
@pytest.mark.parametrize("window", [1, 4, 7])
def test_kernel_matches_naive(k, window):
    L = 29
    q, kk, v = rand_qkv(L)
    rel = rel_matrix(L, lambda d: d if d < window else (window if k is None else window + (d - window) / k))
    out = ReRopeKernel(Tables(), window, k)(MOD, q, kk, v)
    assert torch.allclose(out, naive(q, kk, v, rel, MOD.scaling), atol=2e-5)


def test_kernel_with_logn_matches_naive():
    L, T, window = 30, 12, 4
    q, kk, v = rand_qkv(L, seed=1)
    factors = torch.tensor([max(1.0, math.log(i + 1) / math.log(T)) for i in range(L)], dtype=torch.float64)
    ref = naive(q * factors[None, None, :, None], kk, v, rel_matrix(L, lambda d: min(d, window)), MOD.scaling)
    out = ReRopeKernel(Tables(), window, None, logn_len=T)(MOD, q, kk, v)
    assert torch.allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("window", [2, 4, 9])
def test_banded_blocks_do_not_change_the_result(block, window):
    """Near-band query blocks (masked, split and single-query paths) all give the naive result."""
    L = 23
    q, kk, v = rand_qkv(L, seed=2)
    t = Tables()

    def at(x, start):
        return t.rotate(x, torch.arange(start, start + x.shape[-2]))

    br = Branches(near_q=at, near_k=at, far_q=lambda x, start: t.rotate(x, torch.full((x.shape[-2],), window)),
                  far_k=lambda x, start: x, near_width=window, far_start=window, scale=MOD.scaling, plain=t.rotate)
    ref = naive(q, kk, v, rel_matrix(L, lambda d: min(d, window)), MOD.scaling)
    assert torch.allclose(banded_attention(q, kk, v, br, block=block), ref, atol=2e-5)


def test_lse_backend_matches_explicit():
    g = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(1, 4, 6, 16, generator=g), torch.randn(1, 2, 9, 16, generator=g), torch.randn(1, 2, 9, 8)
    mask = torch.rand(6, 9, generator=g) > 0.4
    mask[2] = False
    out, lse = attention(q, k, v, 0.3, mask=mask, return_lse=True)
    ref_o, ref_l = attention(q, k, v, 0.3, mask=mask, return_lse=True, kernel="eager")
    assert torch.allclose(out, ref_o, atol=1e-5) and torch.equal(lse.isinf(), ref_l.isinf())
    assert torch.allclose(lse[ref_l.isfinite()], ref_l[ref_l.isfinite()], atol=1e-5)
    assert torch.all(out[:, :, 2] == 0)
    causal = torch.arange(9)[None, :] <= torch.arange(3, 9)[:, None]  # bottom-right: the 6 queries are the last 6
    assert torch.allclose(attention(q, k, v, 0.3, causal=True, return_lse=True)[0],
                          attention(q, k, v, 0.3, mask=causal, return_lse=True, kernel="eager")[0], atol=1e-5)


# ---- decode, identities, limits (cases 12, 14, 15, 16) ------------------------------------------------------


@pytest.mark.parametrize("k", [None, 4.0])
@pytest.mark.parametrize("s", [1, 2, 7])
def test_decode_and_chunks_equal_prefill_rows(k, s):
    """Queries = last s of the K cached keys (one-query decode attends every cached key: no SDPA top-left trap)."""
    L = 26
    q, kk, v = rand_qkv(L, seed=4)
    ker = ReRopeKernel(Tables(), 5, k, logn_len=10)
    full = ker(MOD, q, kk, v)
    assert torch.allclose(ker(MOD, q[:, :, L - s:], kk, v), full[:, :, L - s:], atol=1e-6)


def test_rerope_is_leaky_with_huge_k():
    q, kk, v = rand_qkv(27, seed=5)
    a = ReRopeKernel(Tables(), 4, None)(MOD, q, kk, v)
    b = ReRopeKernel(Tables(), 4, 1e6)(MOD, q, kk, v)
    assert torch.allclose(a, b, atol=1e-4)


def _load(model_dir, name=None, params=None, max_pe=None):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if name is not None:
        cls = METHODS.get(name)
        p = P.build(cls.Params, params or {})
        cfg = types.SimpleNamespace(max_pe=max_pe)
        info = model_info(model.config)
        cls.validate(p, cfg, info.original_window)
        cls(p, cfg).apply(model, info)
    return model


@torch.inference_mode()
def test_within_window_bit_identical_to_original(tiny_model_dir):
    ids = torch.randint(3, 500, (1, 16))
    ref = _load(tiny_model_dir)(ids).logits
    for name in ("rerope", "leaky_rerope"):
        out = _load(tiny_model_dir, name, {"window": 16})(ids).logits
        assert torch.equal(out, ref), name


@torch.inference_mode()
def test_leaky_k1_is_plain_rope_beyond_window(tiny_model_dir):
    ids = torch.randint(3, 500, (1, 150))
    ref = _load(tiny_model_dir)(ids).logits
    out = _load(tiny_model_dir, "leaky_rerope", {"window": 16, "k": 1.0, "logn": False})(ids).logits
    assert torch.allclose(out, ref, atol=1e-4)
    assert not torch.allclose(_load(tiny_model_dir, "rerope", {"window": 16})(ids).logits, ref, atol=1e-2)


@torch.inference_mode()
@pytest.mark.parametrize("name", ["rerope", "leaky_rerope"])
def test_cached_decode_and_chunked_prefill_equal_recomputation(tiny_model_dir, name):
    model = _load(tiny_model_dir, name, {"window": 16, "train_len": 32})  # log-n active beyond 32
    ids = torch.randint(3, 500, (1, 110))
    full = model(ids).logits
    cache = DynamicCache(config=model.config)
    steps = [model(ids[:, :98], **{cache_argument(model): cache}, use_cache=True).logits]
    steps += [model(ids[:, t:t + 1], **{cache_argument(model): cache}, use_cache=True).logits for t in range(98, 110)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)
    method = METHODS.get(name)(P.build(METHODS.get(name).Params, {}), None)
    engine = Engine(model, None, method, "cpu")
    assert abs(engine.token_nll(ids[0].tolist(), stride=37) - engine.token_nll(ids[0].tolist())).max() < 1e-4


# ---- configuration -----------------------------------------------------------------------------------------


def _validate(name, params, window=64, max_pe=None):
    cls = METHODS.get(name)
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=max_pe), window)


def test_config_errors():
    with pytest.raises(ConfigError, match="params.window"):
        _validate("rerope", {"window": 64})
    with pytest.raises(ConfigError, match="params.window"):
        _validate("rerope", {"window": 0})
    with pytest.raises(ConfigError, match="params.k"):
        _validate("leaky_rerope", {"k": 0.5})
    # w + (256 − 1 − 16)/k <= 63 needs k >= 239/47 = 5.09
    with pytest.raises(ConfigError, match="k >= 6"):
        _validate("leaky_rerope", {"window": 16, "k": 4.0}, max_pe=256)
    _validate("leaky_rerope", {"window": 16, "k": 6.0}, max_pe=256)


@pytest.mark.parametrize("name", ["rerope", "leaky_rerope"])
def test_suggested_params_validate(name):
    sug = METHODS.get(name).suggested_params(64, 1024)
    assert sug["window"] == 16
    _validate(name, sug, max_pe=1024)
