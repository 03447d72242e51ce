"""ChunkLlama / DCA: docs/reference/methods.md §11 cases 22–27 (sizes, hand distances, naive merge, original, mscale,
decode)."""

from __future__ import annotations

import math
import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.chunkllama.kernel import DcaKernel
from harness.methods.chunkllama.positions import dca_sizes, inter_query_position, mscale
from tests.methods.helpers import MOD, D, Tables, apply_method, cached_forwards
from tests.methods.reference import dca_distances as relative_distances


def naive(q, k, v, S, C, m=1.0):
    """One softmax over all keys; each logit uses the query/key positions of its chunk relation (§4 table)."""
    H, s, K = q.shape[1], q.shape[2], k.shape[2]
    k, v = k.repeat_interleave(H // k.shape[1], 1), v.repeat_interleave(H // v.shape[1], 1)
    qp, kp = torch.arange(K - s, K), torch.arange(K)
    t = Tables()
    kr = t.rotate(k, kp % C).transpose(-1, -2)
    intra = t.rotate(q, qp % C) @ kr
    succ = t.rotate(q, (qp % C + C).clamp(max=S)) @ kr
    inter = t.rotate(q, torch.full_like(qp, min(2 * C - 1, S))) @ kr
    qc, kc = (qp // C)[:, None], (kp // C)[None, :]
    logits = torch.where(qc == kc, intra, torch.where(qc - kc == 1, succ, inter)) * (MOD.scaling * m * m)
    return logits.masked_fill(qp[:, None] < kp[None, :], float("-inf")).softmax(-1) @ v


def qkv(s, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, s, D, generator=g), torch.randn(1, 2, K, D, generator=g),
            torch.randn(1, 2, K, D, generator=g))


# ---- sizes and positions (cases 22, 24) -----------------------------------------------------------------------


def test_sizes():
    assert dca_sizes(4096) == (3072, 256, 2816)
    assert dca_sizes(8192) == (6144, 512, 5632)
    assert dca_sizes(2048) == (1536, 128, 1408)
    assert dca_sizes(4096, 2000, 100) == (2000, 100, 1900)
    assert inter_query_position(3072, 2816) == 3072  # min(2C − 1, S) = S with the defaults
    assert inter_query_position(12, 4) == 7  # a large local window: the successive table's last entry 2C − 1
    cls = METHODS.get("repro_chunkllama")
    assert cls.suggested_params(4096, 16384) == {"chunk_size": 3072, "local_window": 256}  # Table 10
    assert cls.suggested_params(8192, 32768) == {"chunk_size": 6144, "local_window": 512}
    assert cls.suggested_params(2048, 8192) == {"chunk_size": 1536, "local_window": 128}


def _dist(i, j, S=12, C=11):
    return float(relative_distances(torch.tensor([i]), torch.tensor([j]), S, C)[0, 0])


def test_distance_table_by_hand():
    # M = 16: S = 12, W = 1, C = 11
    assert dca_sizes(16) == (12, 1, 11)
    assert _dist(13, 12) == 1  # intra: a − b = i − j
    assert _dist(11, 10) == 1 and _dist(11, 0) == 11  # first row of chunk 1 (a = 0 ≤ W): exact distances
    assert _dist(12, 5) == 7  # a = 1 ≤ W: min(C + a, S) − b = 12 − 5 = i − j
    assert _dist(13, 5) == 7  # a = 2 > W: the query is capped at S (true distance 8)
    assert _dist(21, 0) == 12 and _dist(21, 10) == 2  # successive: S − 0 = S, 12 − 10 (true distance 11)
    assert _dist(22, 21) == 1  # chunk 2 row 0 against chunk 1's last key: min(11, 12) − 10
    assert _dist(22, 10) == 2 and _dist(22, 0) == 12 and _dist(25, 3) == 9  # inter: S − b
    assert math.isnan(_dist(5, 6))  # future key


def test_distance_table_invariants():
    S, W, C = dca_sizes(64)
    pos = torch.arange(300)
    d = relative_distances(pos, pos, S, C)
    rel = pos[:, None] - pos[None, :]
    qc, kc, a = (pos // C)[:, None], (pos // C)[None, :], (pos % C)[:, None]
    valid = rel >= 0
    assert d[valid].max() == S and d[valid].min() == 0
    assert torch.equal(d[(qc == kc) & valid], rel[(qc == kc) & valid].double())
    succ = (qc - kc == 1)
    assert torch.equal(d[succ & (a <= W)], rel[succ & (a <= W)].double())
    assert d[succ].min() >= 1 and d[succ].max() <= S
    inter = (qc - kc >= 2) & valid
    assert d[inter].min() >= W + 1 and d[inter].max() <= S


# ---- kernel against the naive reference (case 25) -------------------------------------------------------------


@pytest.mark.parametrize("K,s,S,W", [(30, 30, 12, 1), (100, 100, 12, 1), (100, 100, 12, 5), (100, 7, 12, 1),
                                     (100, 1, 12, 1), (100, 1, 12, 8), (11, 11, 12, 1), (57, 23, 20, 3)])
@pytest.mark.parametrize("mode", ["off", "per_sample"])
def test_kernel_equals_naive(K, s, S, W, mode):
    q, k, v = qkv(s, K)
    out = DcaKernel(Tables(), 16, S, S - W, mode)(MOD, q, k, v)
    m = 1.0 if mode == "off" else mscale(K, 16)
    assert (out - naive(q, k, v, S, S - W, m)).abs().max() <= 1e-5


@pytest.mark.parametrize("mode", ["per_sample", "stateful"])
def test_decode_steps_reuse_rotated_keys(mode):
    """Decode steps reuse per-layer rotated-key buffers (grown past their capacity); a new sequence starts over."""
    kernel = DcaKernel(Tables(), 16, 12, 11, mode)
    for seed, (first, last) in enumerate([(20, 120), (5, 30)]):
        q, k, v = qkv(last, last, seed=10 + seed)
        kernel(MOD, q[:, :, :first], k[:, :, :first], v[:, :, :first])
        for K in range(first + 1, last + 1):
            out = kernel(MOD, q[:, :, K - 1:K], k[:, :, :K], v[:, :, :K])
            if mode == "per_sample":
                ref = naive(q[:, :, K - 1:K], k[:, :, :K], v[:, :, :K], 12, 11, mscale(K, 16))
            else:  # every key keeps the factor of its step; the query has the current one (lengths only grow)
                m = torch.tensor([mscale(max(j + 1, first, 120 if seed else 0), 16) for j in range(K)])
                kk = k[:, :, :K] * (m / m[-1])[:, None]
                ref = naive(q[:, :, K - 1:K], kk, v[:, :, :K], 12, 11, float(m[-1]))
            assert (out - ref).abs().max() <= 1e-5, (seed, K)


def test_kernel_single_chunk_is_plain_causal():
    q, k, v = qkv(11, 11, seed=4)
    out = DcaKernel(Tables(), 16, 12, 11)(MOD, q, k, v)
    t = Tables()
    pos = torch.arange(11)
    logits = (t.rotate(q, pos) @ t.rotate(k.repeat_interleave(2, 1), pos).transpose(-1, -2)) * MOD.scaling
    ref = logits.masked_fill(pos[:, None] < pos[None, :], float("-inf")).softmax(-1) @ v.repeat_interleave(2, 1)
    assert (out - ref).abs().max() <= 1e-5


# ---- mscale (case 26) -----------------------------------------------------------------------------------------


def test_mscale_values():
    assert mscale(4096, 4096) == 1.0 and mscale(100, 4096) == 1.0
    assert mscale(16384, 4096) == pytest.approx(1 + 0.1 * math.log(4))  # ≈ 1.1386
    assert mscale(8192, 4096) == pytest.approx(1.0693147)


def test_mscale_stateful_record():
    m64, m65 = 1 + 0.1 * math.log(4), 1 + 0.1 * math.log(65 / 16)
    ker = DcaKernel(Tables(), 16, 12, 11, "stateful")
    assert ker.scales(64, 64)[0] == pytest.approx(m64)
    qs, ks = ker.scales(1, 65)  # decode past the longest length: the query and the new key get mscale(65)
    assert qs == pytest.approx(m65) and ks[:64].tolist() == pytest.approx([m64] * 64) and ks[64] == pytest.approx(m65)
    qs, ks = ker.scales(10, 10)  # a later short sample keeps the longest length's factor (never shrinks)
    assert qs == pytest.approx(m65) and ks.tolist() == pytest.approx([m65] * 10)
    per = DcaKernel(Tables(), 16, 12, 11, "per_sample")  # common factor folded into the query: mscale(K)²
    assert per.scales(64, 64)[0] == pytest.approx(m64 ** 2) and per.scales(64, 64)[1] is None
    assert per.scales(10, 10) == (1.0, None)
    assert DcaKernel(Tables(), 16, 12, 11, "off").scales(64, 64) == (1.0, None)


def test_stateful_kernel_equals_reference_scaling():
    """Stateful decode: logits = q·mscale_now · k_j·mscale_when_written (the reference's cached rotated keys)."""
    q, k, v = qkv(1, 65, seed=5)
    ker = DcaKernel(Tables(), 16, 12, 11, "stateful")
    ker.scales(64, 64)
    out = ker(MOD, q, k, v)
    m64, m65 = 1 + 0.1 * math.log(4), 1 + 0.1 * math.log(65 / 16)
    k_ref = k.clone()
    k_ref[:, :, :64] *= m64 / m65  # naive scales every logit by m65²: undo m65 on the old keys and apply m64
    assert (out - naive(q, k_ref, v, 12, 11, m65)).abs().max() <= 1e-5


# ---- configuration --------------------------------------------------------------------------------------------


def _validate(window, **params):
    cls = METHODS.get("chunkllama")
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=None), window)


def test_config_errors():
    _validate(4096)
    _validate(None, chunk_size=3072, local_window=256)
    with pytest.raises(ConfigError, match="must be below chunk_size"):
        _validate(4096, chunk_size=300, local_window=300)
    with pytest.raises(ConfigError, match="must be below the pre-trained window M = 4096"):
        _validate(4096, chunk_size=4096)
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        _validate(None, chunk_size=100, local_window=-1)


# ---- model level (cases 23, 27) -------------------------------------------------------------------------------


def _apply(model, **params):
    return apply_method(model, "chunkllama", **params)


_forwards = cached_forwards


def _ids(model, n, seed=0):
    return torch.randint(3, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(seed))


def test_equals_original_up_to_chunk(family_model_dir):
    """Case 23: L ≤ C (M = 64: C = 48 − 4 = 44) gives the original's logits in prefill and decode, all families."""
    model = AutoModelForCausalLM.from_pretrained(family_model_dir).eval()
    ids = _ids(model, 44)
    ref = _forwards(model, ids, [44])
    ref_dec = _forwards(model, ids, [40, 1, 1, 1, 1])
    method = _apply(model)
    assert (method.params.chunk_size, method.params.local_window) == (48, 4)
    assert (_forwards(model, ids, [44]) - ref).abs().max() <= 1e-5
    assert (_forwards(model, ids, [40, 1, 1, 1, 1]) - ref_dec).abs().max() <= 1e-5


def test_decode_equals_prefill(tiny_model_dir):
    """Case 27: cached decode and chunked prefill equal the one-shot prefill across chunk boundaries."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = _ids(model, 150, seed=1)
    ref = _forwards(model, ids, [150])
    method = _apply(model, mscale="off")
    full = _forwards(model, ids, [150])
    assert (full[:, :44] - ref[:, :44]).abs().max() <= 1e-5 and (full - ref).abs().max() > 1e-3
    assert (_forwards(model, ids, [146, 1, 1, 1, 1]) - full).abs().max() <= 1e-4
    assert (_forwards(model, ids, [30, 50, 44, 26]) - full).abs().max() <= 1e-4
    method.kernel.mscale_mode = "per_sample"  # within M the factor is 1: decode == prefill there too
    assert (_forwards(model, ids[:, :60], [57, 1, 1, 1]) - full[:, :60]).abs().max() <= 1e-4


def test_stateful_mscale_leaks_into_later_samples(tiny_model_dir):
    """Reference behaviour (bug-compat option): after a long sample, a short one no longer equals the original."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    short, long = _ids(model, 30, seed=2), _ids(model, 200, seed=3)
    ref = _forwards(model, short, [30])
    method = _apply(model, mscale="stateful")
    assert (_forwards(model, short, [30]) - ref).abs().max() <= 1e-5
    _forwards(model, long, [200])
    assert (_forwards(model, short, [30]) - ref).abs().max() > 1e-4
    method.kernel.mscale_mode = "per_sample"
    assert (_forwards(model, short, [30]) - ref).abs().max() <= 1e-5
