"""The one attention function (harness.methods.common.attention): every backend against a naive softmax, the
bottom-right causal alignment, GQA, masks, the log-sum-exp merge, the self-check and the query-block budget."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods.common import attention as A
from harness.methods.common.attention import attention, merge_lse


def _qkv(s: int, n_keys: int, heads: int = 4, kv: int = 2, e: int = 16, dv: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, s, e, generator=g), torch.randn(1, kv, n_keys, e, generator=g),
            torch.randn(1, kv, n_keys, dv or e, generator=g))


def _naive(q, k, v, scale, allowed):
    """float64 softmax over the allowed keys ([s, K] bool), heads expanded by hand."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(rep, dim=1), v.double().repeat_interleave(rep, dim=1)
    scores = (q.double() @ k.transpose(-1, -2) * scale).masked_fill(~allowed, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)
    return torch.nan_to_num(torch.softmax(scores, dim=-1)) @ v, lse


def _bottom_right(s, n_keys):
    return torch.arange(n_keys)[None, :] <= torch.arange(n_keys - s, n_keys)[:, None]


@pytest.mark.parametrize("kernel", ["auto", "sdpa", "eager"])  # flex: tests/methods/test_kernel_option.py
@pytest.mark.parametrize("s,n_keys", [(1, 9), (6, 6), (3, 11), (10, 11)])
def test_bottom_right_causal_equals_naive(kernel, s, n_keys):
    q, k, v = _qkv(s, n_keys)
    want, want_lse = _naive(q, k, v, 0.3, _bottom_right(s, n_keys))
    out = attention(q, k, v, 0.3, causal=True, kernel=kernel)
    assert out.dtype == q.dtype and (out.double() - want).abs().max() < 1e-5
    out, lse = attention(q, k, v, 0.3, causal=True, return_lse=True, kernel=kernel)
    assert out.dtype == lse.dtype == torch.float32
    assert (out.double() - want).abs().max() < 1e-5 and (lse.double() - want_lse).abs().max() < 1e-5


@pytest.mark.parametrize("kernel", ["auto", "sdpa", "eager"])  # flex (slow to warm up on CPU): test_kernel_option.py
def test_bool_and_additive_masks_with_an_empty_row(kernel):
    q, k, v = _qkv(5, 12, dv=8)
    allowed = torch.rand(5, 12, generator=torch.Generator().manual_seed(1)) > 0.5
    allowed[2] = False
    want, want_lse = _naive(q, k, v, 0.3, allowed)
    additive = torch.zeros(5, 12).masked_fill(~allowed, -math.inf)
    for mask in (allowed, additive):
        out, lse = attention(q, k, v, 0.3, mask=mask, return_lse=True, kernel=kernel)
        assert (out.double() - want).abs().max() < 1e-5
        assert torch.equal(lse.isinf(), want_lse.isinf()) and bool((out[:, :, 2] == 0).all())
        assert (lse[lse.isfinite()].double() - want_lse[want_lse.isfinite()]).abs().max() < 1e-5
    # a mask and causal together: the mask is intersected with the bottom-right causal mask
    out = attention(q, k, v, 0.3, causal=True, mask=allowed, kernel=kernel)
    assert (out.double() - _naive(q, k, v, 0.3, allowed & _bottom_right(5, 12))[0]).abs().max() < 1e-5


def test_merging_disjoint_key_sets_equals_one_softmax():
    q, k, v = _qkv(4, 20)
    parts = [attention(q, k[:, :, a:b], v[:, :, a:b], 0.3, return_lse=True) for a, b in ((0, 7), (7, 8), (8, 20))]
    out, lse = merge_lse(parts)
    want, want_lse = attention(q, k, v, 0.3, return_lse=True, kernel="eager")
    assert (out - want).abs().max() < 1e-5 and (lse - want_lse).abs().max() < 1e-5


def test_kernel_option_in_effect_and_argument_override(monkeypatch):
    q, k, v = _qkv(3, 7)
    used = []
    real = A._eager

    def spy(*args):
        used.append("eager")
        return real(*args)

    monkeypatch.setattr(A, "_eager", spy)
    with A.use_kernel("eager"):
        attention(q, k, v, 0.3, return_lse=True)
        assert used == ["eager"]
        attention(q, k, v, 0.3, causal=True, kernel="sdpa")  # the argument wins over the option in effect
        assert used == ["eager"]
    with pytest.raises(ValueError, match="unknown attention kernel"):
        attention(q, k, v, 0.3, kernel="fast")
    with pytest.raises(ValueError, match="last queries"):
        attention(q, k[:, :, :2], v[:, :, :2], 0.3, causal=True)


def test_backend_table_and_a_wrong_backend_is_never_used(monkeypatch):
    assert set(A.BACKENDS) == {"sdpa", "flex", "flash", "eager"} and set(A.KERNELS) == {"auto", *A.BACKENDS}
    q, k, v = _qkv(5, 20)
    want = attention(q, k, v, 0.3, causal=True, return_lse=True, kernel="eager")
    wrong = A.Backend(lambda q, k, v, scale, causal, mask: (torch.zeros_like(q), torch.zeros(q.shape[:-1])),
                      lambda q, op: True, lambda q, k, v, scale: torch.zeros_like(q))
    monkeypatch.setitem(A.BACKENDS, "sdpa", wrong)
    monkeypatch.setattr(A, "_VERIFIED", {})
    got = attention(q, k, v, 0.3, causal=True, return_lse=True, kernel="sdpa")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # failed its self-check: eager instead
    assert attention(q, k, v, 0.3, causal=True).abs().max() > 0  # the chunk path falls back to masked SDPA
    assert A._VERIFIED and not any(A._VERIFIED.values())


def test_query_blocks_stay_within_the_byte_budget(monkeypatch):
    assert A.block_rows(8, 1000, budget=12 * 8 * 1000 * 3) == 3 and A.block_rows(8, 10**9) == 1
    q, k, v = _qkv(9, 30)
    mask = torch.rand(9, 30, generator=torch.Generator().manual_seed(2)) > 0.3
    full = attention(q, k, v, 0.3, mask=mask, return_lse=True, kernel="eager")
    monkeypatch.setattr(A, "QUERY_BLOCK_BUDGET", A.BYTES_PER_SCORE * 4 * 30 * 2)  # two rows per block
    seen = []
    real = A._eager_block

    def spy(q, *args):
        seen.append(q.shape[-2])
        return real(q, *args)

    monkeypatch.setattr(A, "_eager_block", spy)
    blocked = attention(q, k, v, 0.3, mask=mask, return_lse=True, kernel="eager")
    assert seen == [2, 2, 2, 2, 1]  # [b, H, 2, K] fp32 scores per block, never [s, K] at once
    assert (blocked[0] - full[0]).abs().max() < 1e-6 and (blocked[1] - full[1]).abs().max() < 1e-6


def test_empty_inputs():
    q, k, v = _qkv(0, 5)
    out, lse = attention(q, k, v, 0.3, return_lse=True)
    assert out.shape == (1, 4, 0, 16) and lse.shape == (1, 4, 0)
