"""STRING: docs/reference/beyond.md §4 cases 4–6, 12–14 (hand rows, defaults, decode slicing, identities, reference
double count)."""

from __future__ import annotations

import math
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.common.rope import rotate
from harness.methods.string_rope import (
    OFFICIAL_ATTENTION_FACTOR,
    StringKernel,
    StringParams,
    string_offset,
)
from harness.model.engine import cache_argument
from harness.model.loading import model_info
from tests.methods.reference import string_relative

THETA, D = 100.0, 8
MOD = types.SimpleNamespace(scaling=D ** -0.5, layer_idx=0)


class Tables:
    def __init__(self):
        self.inv_freq = (1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)).float()
        self.attention_scaling = 1.0

    def rotate(self, x, pos):
        return rotate(x, pos, self.inv_freq, 1.0)


def naive_rows(q, k, v, rows, scale):
    """Row i: softmax over the (j, r) entries of rows[i] (a key may appear twice) of <R(r) q_i, k_j>·scale."""
    H = q.shape[1]
    k = k.repeat_interleave(H // k.shape[1], 1)[0]
    v = v.repeat_interleave(H // v.shape[1], 1)[0]
    inv = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    out = []
    for i, entries in rows:
        js = torch.tensor([j for j, _ in entries])
        ang = torch.tensor([r for _, r in entries], dtype=torch.float64)[:, None] * inv
        q1, q2 = q[0, :, i, None, : D // 2], q[0, :, i, None, D // 2:]
        kj = k[:, js]
        logits = ((q1 * ang.cos() - q2 * ang.sin()) * kj[..., : D // 2]
                  + (q2 * ang.cos() + q1 * ang.sin()) * kj[..., D // 2:]).sum(-1) * scale
        out.append(logits.softmax(-1)[:, None] @ v[:, js])
    return torch.cat(out, dim=1)[None]


def paper_rows(L, S, W, first=0):
    return [(i, [(j, string_relative(i - j, S, W)) for j in range(i + 1)]) for i in range(first, L)]


def rand_qkv(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, h, L, D, generator=g, dtype=torch.float64) for h in (4, 2, 2))


# ---- hand values (cases 4, 5, 6) -------------------------------------------------------------------------------


def test_relative_row_fig5():
    assert [string_relative(8 - j, 3, 1) for j in range(9)] == [6, 5, 4, 3, 2, 1, 2, 1, 0]


@pytest.mark.parametrize("length,offset,max_rel", [(131072, 43253, 87946), (8192, 2703, 5616),
                                                   (32768, 10813, 22082), (65536, 21626, 44037)])
def test_default_offsets(length, offset, max_rel):
    assert string_offset(StringParams(), length, None) == offset
    assert string_relative(length - 1, offset, 128) == max_rel


def test_official_attention_factor_values():
    assert round(OFFICIAL_ATTENTION_FACTOR, 6) == 1.069315
    assert round(OFFICIAL_ATTENTION_FACTOR ** 2, 6) == 1.143434
    assert string_relative(43253, 43253, 128) == 128


def test_decode_slicing_hand():
    """Cache of 10 keys (query 9), S=3, W=1: near j = 7, 8, 9 (d 2, 1, 0); far j = 0..6 with r = 7 − j."""
    q, k, v = rand_qkv(10)
    row = [(j, 7 - j) for j in range(7)] + [(7, 2), (8, 1), (9, 0)]
    out = StringKernel(Tables(), 3, 1)(MOD, q[:, :, 9:], k, v)
    assert torch.allclose(out, naive_rows(q, k, v, [(9, row)], MOD.scaling), atol=2e-5)


# ---- kernel vs naive, merge exactness, decode (cases 4, 13, 14) -------------------------------------------------


@pytest.mark.parametrize("S,W", [(3, 1), (5, 2), (1, 0), (6, 6)])
def test_prefill_matches_naive(S, W):
    L = 19
    q, k, v = rand_qkv(L, seed=S)
    out = StringKernel(Tables(), S, W)(MOD, q, k, v)
    assert torch.allclose(out, naive_rows(q, k, v, paper_rows(L, S, W), MOD.scaling), atol=2e-5)


def test_reference_mode_counts_the_key_at_distance_s_twice():
    L, S, W = 12, 5, 1
    q, k, v = rand_qkv(L, seed=7)
    rows = [(i, entries + ([(i - S, S)] if i >= S else [])) for i, entries in paper_rows(L, S, W)]
    ref = StringKernel(Tables(), S, W, reference=True)
    assert torch.allclose(ref(MOD, q, k, v), naive_rows(q, k, v, rows, MOD.scaling), atol=2e-5)
    paper = StringKernel(Tables(), S, W)(MOD, q, k, v)
    assert (ref(MOD, q, k, v) - paper).abs().max() > 1e-3
    # decode steps use the paper semantics, as the official decode does
    assert torch.allclose(ref(MOD, q[:, :, -1:], k, v), paper[:, :, -1:], atol=1e-6)


@pytest.mark.parametrize("s", [1, 3])
def test_decode_equals_prefill_rows(s):
    L = 17
    q, k, v = rand_qkv(L, seed=11)
    ker = StringKernel(Tables(), 6, 2)
    assert torch.allclose(ker(MOD, q[:, :, L - s:], k, v), ker(MOD, q, k, v)[:, :, L - s:], atol=1e-6)


def test_decode_shorter_than_s_is_plain_rope():
    """The official decode slices cache[L−S:] with L < S (out of bounds); here those steps are plain RoPE."""
    q, k, v = rand_qkv(6, seed=12)
    out = StringKernel(Tables(), 10, 2)(MOD, q[:, :, 5:], k, v)
    rows = [(5, [(j, 5 - j) for j in range(6)])]
    assert torch.allclose(out, naive_rows(q, k, v, rows, MOD.scaling), atol=2e-5)


def test_official_factor_multiplies_every_logit():
    L, S, W = 14, 4, 1
    q, k, v = rand_qkv(L, seed=13)
    out = StringKernel(Tables(), S, W, factor=OFFICIAL_ATTENTION_FACTOR)(MOD, q, k, v)
    scale = MOD.scaling * (1 + 0.1 * math.log(2)) ** 2
    assert torch.allclose(out, naive_rows(q, k, v, paper_rows(L, S, W), scale), atol=2e-5)


# ---- model level: identities (case 12), cached decode across S ----------------------------------------------------


def _load(model_dir, params=None, max_pe=None):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if params is not None:
        cls = METHODS.get("string")
        p = P.build(cls.Params, params)
        cfg = types.SimpleNamespace(max_pe=max_pe)
        cls.validate(p, cfg, 64)
        cls(p, cfg).apply(model, model_info(model.config))
    return model


@torch.inference_mode()
def test_identities_with_original(tiny_model_dir):
    short = torch.randint(3, 500, (1, 20))
    assert torch.equal(_load(tiny_model_dir, {"shifted_offset": 20, "local_value": 4})(short).logits,
                       _load(tiny_model_dir)(short).logits)
    assert not torch.allclose(_load(tiny_model_dir, {"shifted_offset": 20, "local_value": 4,
                                                     "official_attention_factor": True})(short).logits,
                              _load(tiny_model_dir)(short).logits, atol=1e-3)
    ids = torch.randint(3, 500, (1, 90))
    ref = _load(tiny_model_dir)(ids).logits
    assert torch.allclose(_load(tiny_model_dir, {"shifted_offset": 30, "local_value": 30})(ids).logits, ref,
                          atol=1e-4)  # W = S is RoPE
    out = _load(tiny_model_dir, {"shifted_offset": 30, "local_value": 4})(ids).logits
    assert torch.allclose(out[:, :30], ref[:, :30], atol=1e-4)  # rows i < S are RoPE
    assert not torch.allclose(out[:, 30:], ref[:, 30:], atol=1e-2)


@torch.inference_mode()
def test_cached_decode_from_shorter_than_s_equals_recomputation(tiny_model_dir):
    model = _load(tiny_model_dir, {"shifted_offset": 40, "local_value": 8})
    ids = torch.randint(3, 500, (1, 50))
    full = model(ids).logits
    cache = DynamicCache(config=model.config)
    steps = [model(ids[:, :30], **{cache_argument(model): cache}, use_cache=True).logits]  # prompt shorter than S
    steps += [model(ids[:, t:t + 1], **{cache_argument(model): cache}, use_cache=True).logits for t in range(30, 50)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)


# ---- configuration -----------------------------------------------------------------------------------------------


def _validate(params, window=64, max_pe=None):
    cls = METHODS.get("string")
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=max_pe), window)


def test_config_errors():
    with pytest.raises(ConfigError, match="params.local_value"):
        _validate({"shifted_offset": 10, "local_value": 20})
    with pytest.raises(ConfigError, match="params.local_value"):
        _validate({}, max_pe=256)  # S = int(0.33·256) = 84 < W = 128
    with pytest.raises(ConfigError, match="params.offset_ratio"):
        _validate({"offset_ratio": 1.5})
    with pytest.raises(ConfigError, match="params.shifted_offset"):
        _validate({"shifted_offset": 0})
    with pytest.raises(ConfigError, match="params.mode"):
        P.build(StringParams, {"mode": "oficial"}, prefix="params.")
    _validate({"local_value": 16}, max_pe=256)


def test_suggested_params_validate_and_fit_the_window():
    sug = METHODS.get("string").suggested_params(64, 96)
    _validate(sug, max_pe=96)
    assert 96 - 1 - sug["shifted_offset"] + sug["local_value"] <= 63
