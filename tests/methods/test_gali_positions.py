"""GALI position construction and chunk schedule (docs/reference/methods.md §2.3, §2.4, §11 cases 1–3)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from harness.methods.gali.positions import (
    bf16_reference_weights,
    chunk_sizes,
    key_weights,
    layout,
    position_parts,
    positions,
)


def construct_loop(total: int, window: int, w: int) -> list[Fraction]:
    """The reference's `construct_new_pi` loop, paraphrased (docs/reference/methods.md §2.4), in exact fractions."""
    g = math.ceil((total - w) / (window - w))
    ids: list[Fraction] = []
    u = 0
    while (window - u) + len(ids) < total:
        ids += [u + Fraction(j, g) for j in range(g)]
        u += 1
    tail = [Fraction(x) for x in range(u, window)]
    return ids[: total - len(tail)] + tail


def as_fractions(total: int, window: int, w: int) -> list[Fraction]:
    floor, num, g = position_parts(total, window, w)
    return [f + Fraction(n, g) for f, n in zip(floor.tolist(), num.tolist())]


# ---- chunk schedule (case 1) ----

def test_chunk_sizes_reference_examples():
    assert chunk_sizes(16000, 4096, 3000) == [4096, 3000, 3000, 3000, 2904]
    assert chunk_sizes(16000, 4096, 0.5) == [4096, 2048, 3072, 4608, 2176]
    assert chunk_sizes(4097, 4096, 3000) == [4096, 1]


def test_integral_float_is_a_ratio():
    # decided: like the reference, the type decides; 3000.0 is a ratio (chunk = 3000 x tokens so far)
    assert chunk_sizes(16000, 4096, 3000.0) == [4096, 11904]
    assert chunk_sizes(16000, 4096, 1.0) == [4096, 4096, 7808]


@pytest.mark.parametrize("n", [1, 15, 16])
def test_within_window_is_one_forward(n):
    assert chunk_sizes(n, 16, 3) == [n]


@pytest.mark.parametrize("coe", [1, 3, 7, 100, 0.1, 0.5, 2.5])
@pytest.mark.parametrize("n", [17, 40, 333])
def test_chunk_sizes_sum_and_first(n, coe):
    sizes = chunk_sizes(n, 16, coe)
    assert sum(sizes) == n and sizes[0] == 16 and all(s >= 1 for s in sizes)


def test_empty_chunk_is_an_error_not_a_loop():
    with pytest.raises(ValueError, match="empty chunk"):
        chunk_sizes(100, 16, 0.05)  # floor(16 * 0.05) = 0
    with pytest.raises(ValueError):
        chunk_sizes(100, 16, 0)


# ---- positions (cases 2, 3) ----

def test_golden_small_vectors():
    half = [i / 2 for i in range(10)]
    assert positions(17, 16, 0).tolist() == [0, 0.5] + list(range(1, 16))
    assert positions(17, 16, 4).tolist() == [0, 0.5] + list(range(1, 16))
    assert positions(21, 16, 0).tolist() == half + list(range(5, 16))
    assert positions(30, 16, 2).tolist() == [i / 2 for i in range(28)] + [14, 15]


def test_truncated_group():
    got = as_fractions(37, 16, 4)
    thirds = [Fraction(i, 3) for i in range(32)]  # 0 .. 10 + 1/3 in steps of 1/3 (the slot at 10 keeps 2 of 3)
    assert got == thirds + [Fraction(x) for x in range(11, 16)]
    assert got[31] == 10 + Fraction(1, 3) and got[32] - got[31] == Fraction(2, 3)


def test_large_examples():
    lay = layout(16000, 4096, 128)
    assert lay.group == 4 and lay.window - lay.slots == 128
    p = positions(16000, 4096, 128)
    assert p[-128] == 3968 and p[-129] == 3967.75
    lay = layout(16000, 8192, 128)
    assert lay.group == 2 and lay.slots == 7808 and positions(16000, 8192, 128)[-384] == 7808
    assert positions(16000, 4096, 1).equal(positions(16000, 4096, 128))  # w = 1 and 128 give g = 4 alike


@pytest.mark.parametrize("total,window,w", [(17, 16, 0), (37, 16, 4), (100, 16, 15), (64, 16, 1), (257, 64, 8),
                                            (1000, 64, 0), (513, 512, 100), (5000, 300, 37)])
def test_closed_form_matches_reference_loop(total, window, w):
    assert as_fractions(total, window, w) == construct_loop(total, window, w)


@pytest.mark.parametrize("total,window,w", [(17, 16, 0), (37, 16, 4), (100, 16, 15), (999, 64, 8), (7096, 4096, 128),
                                            (32000, 8192, 128), (4097, 4096, 0)])
def test_properties(total, window, w):
    lay = layout(total, window, w)
    p = as_fractions(total, window, w)
    g = lay.group
    assert g == math.ceil((total - w) / (window - w))
    assert len(p) == total and p[0] == 0 and p[-1] == window - 1
    gaps = [b - a for a, b in zip(p, p[1:])]
    assert all(0 < d <= 1 and (d * g).denominator == 1 for d in gaps)  # multiples of 1/g in (0, 1]
    assert all(d == Fraction(1, g) for d in gaps[: lay.n_interp - 1])  # inside the interpolated region
    assert all(d == 1 for d in gaps[lay.n_interp:])  # the integer tail
    assert lay.slots == math.ceil((total - window) / (g - 1))
    assert lay.tail == window - lay.slots >= w
    assert max(p) - min(p) <= window - 1  # no relative distance >= M (case 15)


def test_within_window_positions_are_integers():
    assert positions(10, 16, 4).tolist() == list(range(10))


def test_local_window_must_be_below_window():
    with pytest.raises(ValueError):
        layout(40, 16, 16)


# ---- interpolation weights ----

def test_key_weights_hand_values():
    pos = torch.tensor([0.0, 0.25, 0.5, 2 / 3, 3.0, 7.75])
    expected = torch.tensor([0.0, 0.75, 0.5, 1 / 3, 0.0, 0.25], dtype=torch.float64)
    assert torch.allclose(key_weights(pos.double()), expected, atol=1e-12)


def test_fp32_weights_match_ideal_at_large_positions():
    p = positions(6000, 4096, 128)
    r = key_weights(p)
    frac = p - torch.floor(p)
    ideal = torch.where(frac > 0, 1 - frac, torch.zeros_like(frac))
    assert torch.equal(r, ideal)
    assert (r > 0).sum() > 0 and set(torch.unique(r).tolist()) == {0.0, 0.5}


def test_bf16_reference_weights_vanish_above_256():
    p = positions(6000, 4096, 128)
    q = p[-300:]  # queries of a 300-token chunk: positions in the thousands
    r = bf16_reference_weights(q, p)
    assert r.dtype == torch.bfloat16 and bool((r == 0).all())
    # fp32 weights are 0.5 for the half-integer keys of the same rows
    assert float(key_weights(p).max()) == 0.5


def test_bf16_reference_weights_small_positions_interpolate():
    p = positions(30, 16, 2)  # positions 0 .. 13.5 in halves, then 14, 15
    r = bf16_reference_weights(p[-3:], p)
    assert torch.equal(r.double(), key_weights(p).expand(3, -1))  # 0.5 and 0 are exact in bf16


@pytest.mark.parametrize("total,window,w", [(10, 16, 4), (37, 16, 4), (999, 64, 8), (7096, 4096, 128)])
def test_positions_at_any_indices(total, window, w):
    from harness.methods.gali.positions import positions_at

    idx = torch.tensor(sorted({0, 1, total // 3, total // 2, total - 2, total - 1}))
    assert torch.equal(positions_at(idx, total, window, w), positions(total, window, w)[idx])
