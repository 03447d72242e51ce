"""SelfExtend: docs/reference/methods.md §11 cases 16–21 (hand positions, config validity, naive L×L reference,
original/decode)."""

from __future__ import annotations

import math
import re
import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.selfextend.kernel import SelfExtendKernel
from harness.methods.selfextend.positions import (
    TABLE10,
    group_shift,
    log_scale,
    max_supported_length,
    suggested_pair,
)
from tests.methods.helpers import MOD, D, Tables, apply_method, cached_forwards
from tests.methods.reference import neighbor_mask
from tests.methods.reference import selfextend_distances as relative_distances


def naive(q, k, v, W, G, shift, scale_base=-1.0):
    """Eager reference: both full logit maps, select neighbour inside the band and group elsewhere, one softmax."""
    H, s, K = q.shape[1], q.shape[2], k.shape[2]
    k, v = k.repeat_interleave(H // k.shape[1], 1), v.repeat_interleave(H // v.shape[1], 1)
    qp, kp = torch.arange(K - s, K), torch.arange(K)
    if scale_base > 0:
        q = q * (torch.log(qp + 1.0) / math.log(scale_base)).clamp(min=1)[:, None]
    t = Tables()
    near = t.rotate(q, qp) @ t.rotate(k, kp).transpose(-1, -2)
    far = t.rotate(q, (qp // G).double() + shift) @ t.rotate(k, kp // G).transpose(-1, -2)
    rel = qp[:, None] - kp[None, :]
    logits = torch.where(rel < W, near, far).masked_fill(rel < 0, float("-inf")) * MOD.scaling
    return logits.softmax(-1) @ v


def qkv(s, K, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, s, D, generator=g, dtype=dtype), torch.randn(1, 2, K, D, generator=g, dtype=dtype),
            torch.randn(1, 2, K, D, generator=g, dtype=dtype))


# ---- positions (cases 17, 21) ---------------------------------------------------------------------------------


def test_shift_values_and_mismatch():
    assert group_shift(4096, 3, "floor") == 2731  # 4096 − 1365
    assert group_shift(4096, 3, "true_div") == pytest.approx(4096 - 4096 / 3)
    assert group_shift(4096, 3, "floor") - group_shift(4096, 3, "true_div") == pytest.approx(1 / 3)
    assert group_shift(2048, 5, "floor") == 1639 and group_shift(2048, 5, "true_div") == pytest.approx(1638.4)
    assert group_shift(4096, 3, "floor", max_position=4095) == 0  # sequence shorter than the window
    assert group_shift(4096, 3, "true_div", max_position=4096) == pytest.approx(4096 - 4096 / 3)


def test_group_distances_by_hand():
    # W = 4, G = 3, query 10: neighbours j = 10..7 at 0..3; group keys at floor(10/3) + (4 − 1) − floor(j/3)
    d = relative_distances(torch.tensor([10]), torch.arange(11), 4, 3, "floor")[0]
    assert d.tolist() == [6, 6, 6, 5, 5, 5, 4, 3, 2, 1, 0]
    d = relative_distances(torch.tensor([10]), torch.arange(11), 4, 3, "true_div")[0]
    expect = [3 + 4 - 4 / 3 - j // 3 for j in range(7)] + [3, 2, 1, 0]
    assert d.tolist() == pytest.approx(expect)
    # future keys carry no distance; continuity: at i − j = W the group distance is ≈ W
    d = relative_distances(torch.tensor([10]), torch.arange(12), 4, 3, "floor")[0]
    assert math.isnan(d[11]) and abs(d[6] - 4) <= 1


def test_region_split():
    q, k = torch.arange(20), torch.arange(20)
    m = neighbor_mask(q, k, 5)
    for i in range(20):
        for j in range(20):
            assert bool(m[i, j]) == (0 <= i - j < 5)


def test_validity_formula_and_table10():
    assert max_supported_length(4096, 1024, 5) == 16384
    assert max_supported_length(8192, 4096, 3) == 16384 and max_supported_length(8192, 2048, 5) == 32768
    assert max_supported_length(4096, 4096, 3) == 4096  # the README example is not valid for Llama-2 at 16k
    for (M, target), (W, G) in TABLE10.items():
        assert max_supported_length(M, W, G) >= target
    cls = METHODS.get("repro_se")
    assert cls.suggested_params(4096, 16384) == {"window_size": 1024, "group_size": 5}
    assert cls.suggested_params(8192, 32768) == {"window_size": 2048, "group_size": 5}
    assert cls.suggested_params(2048, 8192) == {"window_size": 512, "group_size": 5}
    # not in Table 10: W = M/4 = 16 and the smallest valid G: (64 − 16)·21 + 16 = 1024 ≥ 1000 > (64 − 16)·20 + 16
    assert suggested_pair(64, 1000) == (16, 21)


def test_log_scale():
    assert log_scale(torch.tensor([0, 15]), -1) is None
    assert log_scale(torch.tensor([0, 15, 63]), 4.0).tolist() == pytest.approx([1.0, 2.0, 3.0])


# ---- configuration (case 21) ----------------------------------------------------------------------------------


def _validate(window, max_pe, **params):
    cls = METHODS.get("selfextend")
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=max_pe), window)


def test_invalid_pair_rejected_with_valid_proposals():
    with pytest.raises(ConfigError) as err:
        _validate(4096, 16384, window_size=4096, group_size=3)
    text = str(err.value)
    assert "(M − W)·G + W = (4096 − 4096)·3 + 4096 = 4096" in text and "max_pe = 16384" in text
    pairs = [(int(w), int(g)) for w, g in re.findall(r"window_size = (\d+), group_size = (\d+)", text)]
    assert (1024, 5) in pairs and len(pairs) >= 2
    assert all((4096 - w) * g + w >= 16384 for w, g in pairs)
    _validate(4096, 16384, window_size=1024, group_size=5)  # valid: no error
    _validate(8192, 32768, window_size=2048, group_size=5)


def test_other_config_errors():
    with pytest.raises(ConfigError, match="set both group_size and window_size"):
        _validate(4096, 16384, window_size=1024)
    with pytest.raises(ConfigError, match="needs window_size and group_size, or max_pe"):
        _validate(4096, None)
    with pytest.raises(ConfigError, match="exceeds the model's pre-trained window"):
        _validate(4096, None, window_size=5000, group_size=2)
    with pytest.raises(ConfigError, match="must be ≥ 1"):
        _validate(None, 16384, window_size=1024, group_size=0)
    _validate(None, 16384, window_size=1024, group_size=5)  # model not known yet: checked again at apply


# ---- kernel against the naive L×L reference (cases 17, 19, 20) -------------------------------------------------


@pytest.mark.parametrize("K,s,W,G", [(40, 40, 8, 3), (100, 100, 16, 4), (100, 30, 16, 4), (100, 37, 16, 4),
                                     (100, 1, 16, 4), (20, 20, 32, 2), (77, 77, 9, 5)])
@pytest.mark.parametrize("fused_band", [True, False])
@pytest.mark.parametrize("mode", ["floor", "true_div"])
def test_kernel_equals_naive(K, s, W, G, fused_band, mode):
    q, k, v = qkv(s, K)
    kernel = SelfExtendKernel(Tables(), W, G, mode, band_fused_min=1 if fused_band else 10 ** 6)
    shift = group_shift(W, G, mode if s > 1 else "floor", K - 1)
    assert (kernel(MOD, q, k, v) - naive(q, k, v, W, G, shift)).abs().max() <= 1e-5


def test_kernel_log_scale_and_bf16():
    q, k, v = qkv(90, 90, seed=3)
    kernel = SelfExtendKernel(Tables(), 12, 3, scale_base=8.0)
    assert (kernel(MOD, q, k, v) - naive(q, k, v, 12, 3, 12 - 4, scale_base=8.0)).abs().max() <= 1e-5
    out = SelfExtendKernel(Tables(), 12, 3)(MOD, q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16 and (out.float() - naive(q, k, v, 12, 3, 8)).abs().max() <= 5e-2


def test_rows_below_window_are_plain_rope():
    q, k, v = qkv(60, 60, seed=1)
    out = SelfExtendKernel(Tables(), 16, 4)(MOD, q, k, v)
    plain = naive(q, k, v, 10 ** 6, 1, 0)  # every key a neighbour
    assert (out[:, :, :16] - plain[:, :, :16]).abs().max() <= 1e-5
    assert (out[:, :, 16:] - plain[:, :, 16:]).abs().max() > 1e-3  # beyond W the grouping matters


def test_decode_equals_flash_decode_formulation():
    """Case 20: un-rotated query, each key rotated by −distance, one softmax: the reference's flash decode."""
    K, W, G = 70, 16, 4
    q, k, v = qkv(1, K, seed=2)
    i, j = K - 1, torch.arange(K)
    dist = torch.where(i - j < W, i - j, i // G - j // G + W - W // G)
    kk = Tables().rotate(k.repeat_interleave(2, 1), -dist)
    ref = ((q @ kk.transpose(-1, -2)) * MOD.scaling).softmax(-1) @ v.repeat_interleave(2, 1)
    assert (SelfExtendKernel(Tables(), W, G)(MOD, q, k, v) - ref).abs().max() <= 1e-5


def test_decode_steps_reuse_rotated_keys():
    """Decode steps reuse per-layer rotated-key buffers (grown past their capacity); a new sequence starts over."""
    W, G = 8, 3
    kernel = SelfExtendKernel(Tables(), W, G)
    for seed, (first, last) in enumerate([(20, 120), (5, 30), (12, 14)]):
        q, k, v = qkv(last, last, seed=10 + seed)
        kernel(MOD, q[:, :, :first], k[:, :, :first], v[:, :, :first])  # prefill: buffers dropped
        for K in range(first + 1, last + 1):
            out = kernel(MOD, q[:, :, K - 1:K], k[:, :, :K], v[:, :, :K])
            ref = naive(q[:, :, K - 1:K], k[:, :, :K], v[:, :, :K], W, G, group_shift(W, G, "floor", K - 1))
            assert (out - ref).abs().max() <= 1e-5, (seed, K)


def test_shift_mode_per_forward():
    kernel = SelfExtendKernel(Tables(), 16, 3, "true_div")
    assert kernel.shift(5, 100) == pytest.approx(16 - 16 / 3)
    assert kernel.shift(1, 100) == 16 - 5  # decode keeps floor, as the reference
    assert kernel.shift(5, 15) == 0


# ---- model level (cases 16, 18) -------------------------------------------------------------------------------


def _apply(model, max_pe=None, **params):
    return apply_method(model, "selfextend", max_pe, **params)


_forwards = cached_forwards


def _prefill_and_decode(model, ids, n_prompt):
    return _forwards(model, ids, [n_prompt] + [1] * (ids.shape[1] - n_prompt))


def test_equals_original_up_to_window(family_model_dir):
    """Case 16: L ≤ W gives the original's logits (prefill and every decode step), all families."""
    model = AutoModelForCausalLM.from_pretrained(family_model_dir).eval()
    ids = torch.randint(3, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref_full = model(ids).logits
    ref_dec = _prefill_and_decode(model, ids, 27)
    method = _apply(model, window_size=32, group_size=4)
    assert method.params.window_size == 32
    with torch.inference_mode():
        assert (model(ids).logits - ref_full).abs().max() <= 1e-5
    assert (_prefill_and_decode(model, ids, 27) - ref_dec).abs().max() <= 1e-5


def test_decode_and_chunks_equal_prefill_beyond_window(tiny_model_dir):
    """Case 18: prefill of L − 1 then one decode step (and a chunked prefill) give the one-shot prefill's logits."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(3, model.config.vocab_size, (1, 150), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref_orig = model(ids).logits
    _apply(model, max_pe=200, window_size=16, group_size=4)  # (64 − 16)·4 + 16 = 208 ≥ 200
    with torch.inference_mode():
        full = model(ids).logits
    assert (full - ref_orig).abs().max() > 1e-3  # beyond W the method is active
    assert (full[:, :16] - ref_orig[:, :16]).abs().max() <= 1e-5
    assert (_prefill_and_decode(model, ids, 149) - full).abs().max() <= 1e-4
    assert (_forwards(model, ids, [50, 37, 60, 1, 2]) - full).abs().max() <= 1e-4


def test_apply_rejects_invalid_pair(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ConfigError, match="valid pairs for max_pe = 1000"):
        _apply(model, max_pe=1000, window_size=32, group_size=4)
    method = _apply(model, max_pe=1000)  # neither given: the suggested pair for (64, 1000)
    assert (method.params.window_size, method.params.group_size) == (16, 21)
