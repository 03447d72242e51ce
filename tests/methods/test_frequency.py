"""Frequency methods (docs/reference/methods.md §5–7, §11 cases 28–30) and cached-decode consistency of every method."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from harness.methods.base import METHODS, Method
from harness.methods.common.frequency import FactorParams
from harness.methods.llama3 import Llama3Params
from harness.methods.longrope import LongRopeParams
from harness.methods.ntk import ntk_base
from harness.methods.ntk_by_parts import NtkByPartsParams
from harness.methods.yarn import YarnParams
from harness.model.engine import Engine, cache_argument
from harness.model.loading import model_info
from tests.tiny import model_config

CFG = SimpleNamespace(seed=42, source="", max_pe=None)


def yarn_range(theta: float, window: int, d: int = 128) -> tuple[int, int]:
    """low = max(floor(c(32)), 0), high = min(ceil(c(1)), d − 1), c(r) = d·ln(M/(2πr)) / (2 ln θ)."""
    c = lambda r: d * math.log(window / (2 * math.pi * r)) / (2 * math.log(theta))  # noqa: E731
    return max(math.floor(c(32)), 0), min(math.ceil(c(1)), d - 1)


def wide_model(window: int = 4096, theta: float = 1e4, family: str = "llama"):
    """A 1-layer random model with head_dim 128 (the formulas' d)."""
    torch.manual_seed(0)
    cfg = model_config(family, window=window, layers=1, heads=2, kv_heads=1, head_dim=128, theta=theta,
                       vocab_size=64)
    return AutoModelForCausalLM.from_config(cfg).eval()


def applied(name: str, params, model=None):
    model = model or wide_model()
    method = METHODS.get(name)(params, CFG)
    method.apply(model, model_info(model.config))
    return model, method


def inv_freq_of(model) -> torch.Tensor:
    return model.model.rotary_emb.inv_freq.double()


def pos_i(theta: float, d: int = 128) -> torch.Tensor:
    return theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)


# ---- static NTK (§5) ----

@pytest.mark.parametrize("theta,s,expected", [(1e4, 4, 40890), (1e4, 2, 20221), (5e5, 2, 1.011e6), (5e5, 4, 2.044e6)])
def test_ntk_base_table(theta, s, expected):
    assert ntk_base(theta, s, 128) == pytest.approx(expected, rel=1e-3)


def test_ntk_inv_freq_formula_and_transformers_dynamic_at_m_times_s():
    model, _ = applied("ntk", FactorParams(factor=4.0))
    base = 1e4 * 4 ** (128 / 126)
    assert torch.allclose(inv_freq_of(model), 1 / pos_i(base), rtol=1e-5)
    # the reference's derivation: HF's dynamic formula with factor 1, evaluated once at seq_len = M·s
    cfg = wide_model().config
    cfg.rope_parameters = {"rope_type": "dynamic", "factor": 1.0, "rope_theta": 1e4}
    hf, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, None, seq_len=4096 * 4)
    assert torch.allclose(inv_freq_of(model), hf.double(), rtol=1e-5)


def test_linear_divides_inv_freq():
    model, _ = applied("linear", FactorParams(factor=4.0))
    assert torch.allclose(inv_freq_of(model), 1 / pos_i(1e4) / 4, rtol=1e-6)


# ---- YaRN (§7) ----

@pytest.mark.parametrize("theta,window,low,high", [(1e4, 4096, 20, 46), (5e5, 8192, 18, 35), (1e4, 2048, 16, 41)])
def test_yarn_ramp_bounds(theta, window, low, high):
    assert yarn_range(theta, window) == (low, high)


@pytest.mark.parametrize("theta,window,s", [(1e4, 4096, 4.0), (5e5, 8192, 2.0)])
def test_yarn_inv_freq_blend_and_attention_factor(theta, window, s):
    model, _ = applied("yarn", YarnParams(factor=s), wide_model(window, theta))
    low, high = yarn_range(theta, window)
    ramp = ((torch.arange(64, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    p = pos_i(theta)
    expected = (1 / (s * p)) * ramp + (1 / p) * (1 - ramp)
    assert torch.allclose(inv_freq_of(model), expected, rtol=1e-5)
    mscale = 0.1 * math.log(s) + 1
    assert model.model.rotary_emb.attention_scaling == pytest.approx(mscale)
    x = torch.zeros(1, 3, 8)
    cos, sin = model.model.rotary_emb(x, torch.tensor([[0, 5, 1000]]))
    ang = torch.tensor([0.0, 5.0, 1000.0], dtype=torch.float64)[:, None] * expected[None, :]
    assert torch.allclose(cos[0, :, :64].double(), ang.cos() * mscale, atol=1e-4)
    assert torch.allclose(sin[0, :, 64:].double(), ang.sin() * mscale, atol=1e-4)


# ---- NTK-by-parts: YaRN's frequencies, no temperature ----

@pytest.mark.parametrize("theta,window,s", [(1e4, 4096, 4.0), (5e5, 8192, 2.0)])
def test_ntk_by_parts_is_yarn_frequencies_without_attention_factor(theta, window, s):
    parts, _ = applied("ntk_by_parts", NtkByPartsParams(factor=s), wide_model(window, theta))
    yarn, _ = applied("yarn", YarnParams(factor=s), wide_model(window, theta))
    assert torch.allclose(inv_freq_of(parts), inv_freq_of(yarn), rtol=1e-7)
    assert parts.model.rotary_emb.attention_scaling == 1.0
    assert yarn.model.rotary_emb.attention_scaling == pytest.approx(0.1 * math.log(s) + 1)
    low, high = yarn_range(theta, window)
    p = pos_i(theta)
    assert torch.allclose(inv_freq_of(parts)[:low], 1 / p[:low], rtol=1e-6)  # fast dimensions untouched
    assert torch.allclose(inv_freq_of(parts)[high:], 1 / (s * p[high:]), rtol=1e-6)  # slow ones interpolated


# ---- llama3 (Llama-3.1 smoothing) ----

def test_llama3_bands_on_llama31_values():
    """θ = 5e5, M = 8192, s = 8, low 1, high 4: wavelength < 2048 kept, > 8192 divided by 8, smooth blend between."""
    model, _ = applied("llama3", Llama3Params(factor=8.0), wide_model(8192, 5e5))
    p = pos_i(5e5)
    wavelen = 2 * math.pi * p
    got = inv_freq_of(model) * p  # 1 = unchanged, 1/8 = interpolated
    high, low = wavelen < 8192 / 4, wavelen > 8192
    assert high.sum() > 0 and low.sum() > 0 and (~high & ~low).sum() > 0
    assert torch.allclose(got[high], torch.ones(int(high.sum()), dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(got[low], torch.full((int(low.sum()),), 1 / 8, dtype=torch.float64), rtol=1e-6)
    mid = ~high & ~low
    smooth = (8192 / wavelen[mid] - 1) / (4 - 1)
    assert torch.allclose(got[mid], (1 - smooth) / 8 + smooth, rtol=1e-5)
    assert model.model.rotary_emb.attention_scaling == 1.0


# ---- dynamic NTK (§6) ----

def test_dynamic_ntk_base_grows_beyond_window_and_resets():
    model, _ = applied("dynamic_ntk", FactorParams(factor=2.0), wide_model(window=64))
    rotary = model.model.rotary_emb
    x = torch.zeros(1, 1, 8)
    original = 1 / pos_i(1e4)
    rotary(x, torch.arange(64)[None])
    assert torch.allclose(inv_freq_of(model), original, rtol=1e-6)
    rotary(x, torch.arange(100)[None])  # ℓ = 100 > M = 64
    base = 1e4 * (2 * 100 / 64 - 1) ** (128 / 126)
    assert torch.allclose(inv_freq_of(model), 1 / pos_i(base), rtol=1e-5)
    rotary(x, torch.arange(10)[None])  # back below M: reset
    assert torch.allclose(inv_freq_of(model), original, rtol=1e-6)


# ---- cached decode vs recomputation, every frequency method ----

FREQUENCY = [("original", None), ("linear", FactorParams(2.0)), ("ntk", FactorParams(2.0)),
             ("dynamic_ntk", FactorParams(2.0)), ("yarn", YarnParams(2.0)), ("ntk_by_parts", NtkByPartsParams(2.0)),
             ("llama3", Llama3Params(2.0)), ("longrope", LongRopeParams(2.0, n_hat=2))]


def _decode_vs_prefill(path, name, params, window=16, prompt=12, total=22):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    model.config.max_position_embeddings = window
    method = METHODS.get(name)(params, CFG) if params is not None else Method(None, CFG)
    method.apply(model, model_info(model.config))
    eng = Engine(model, None, method, "cpu")
    ids = torch.randint(3, 500, (total,), generator=torch.Generator().manual_seed(1)).tolist()
    cache, _ = eng.prefill(ids[:prompt])
    diffs = {}
    for n in range(prompt + 1, total + 1):
        with torch.inference_mode():
            h = model.model(input_ids=torch.tensor([[ids[n - 1]]]), **{cache_argument(model.model): cache},
                            use_cache=True).last_hidden_state
            cached = model.lm_head(h)[0, -1]
        diffs[n] = float((cached - eng.prefill(ids[:n])[1]).abs().max())
    return diffs


@pytest.mark.parametrize("name,params", FREQUENCY, ids=[n for n, _ in FREQUENCY])
def test_cached_decode_equals_recomputation(tiny_model_dir, name, params):
    diffs = _decode_vs_prefill(tiny_model_dir, name, params)
    if name != "dynamic_ntk":
        assert max(diffs.values()) <= 1e-4, diffs
        return
    # dynamic NTK: consistent while the length stays within M; beyond, the cache keeps keys rotated with the
    # base of the step that wrote them, while a fresh prefill rotates all keys with the current base
    assert max(d for n, d in diffs.items() if n <= 16) <= 1e-4
    assert min(d for n, d in diffs.items() if n > 16) > 1e-3
