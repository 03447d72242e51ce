"""GALI's fast exact noise path (docs/methods/gali.md "Noise"): the table Gaussian passes goodness-of-fit and
independence tests, and `split_attention` (flash for the clean keys, explicit tiles for the noisy ones) equals the
full-tile path for any block size, chunk, batch and r pattern."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods.gali import fused
from harness.methods.gali.fused import noisy_attention, split_attention, splittable
from harness.methods.gali.kernel import NoiseSpec
from harness.methods.gali.noise import NORMAL_BITS, NoiseStream, normal_table
from tests.methods.test_gali_attention import HKV, D, H, random_qkv


def _ks_statistic(z: torch.Tensor) -> float:
    """Kolmogorov–Smirnov distance of the sample z to N(0, 1)."""
    x = z.double().flatten().sort().values
    n = x.numel()
    cdf = torch.special.ndtr(x)
    hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(hi - cdf, cdf - (hi - 1 / n)).max())


def test_the_normal_table_is_the_inverse_cdf_at_bin_centres():
    table = normal_table()
    n = 1 << NORMAL_BITS
    assert table.dtype == torch.float32 and table.numel() == n
    centres = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    assert torch.allclose(torch.special.ndtr(table.double()), centres, rtol=1e-5, atol=1e-9)  # Φ(T[i]) = (i + ½)/n
    assert torch.equal(table, -table.flip(0))  # symmetric: mean exactly 0
    assert bool((table.diff() > 0).all())
    var = float((table.double() ** 2).mean())  # the discrete law's variance: 1 up to the clipped tails
    assert 0.9995 < var < 1.0


def test_gaussian_draws_pass_kolmogorov_smirnov_and_moment_checks():
    z = NoiseStream(5, 3).gaussian(4, torch.arange(1000, 1250), torch.arange(3000, 4000))  # 10^6 draws
    n = z.numel()
    assert _ks_statistic(z) < 1.95 / math.sqrt(n)  # KS test at the 0.1 % level
    assert abs(float(z.mean())) < 5 / math.sqrt(n) and abs(float(z.std()) - 1) < 0.005
    kurtosis = float((z.double() ** 4).mean() / z.double().var() ** 2)
    assert abs(kurtosis - 3) < 0.05


def _chi_square(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_hash_bits_are_uniform_and_neighbours_independent():
    stream = NoiseStream(11, 0)
    a, b = torch.arange(7000, 7256), torch.arange(0, 2048)
    top = (stream.hashes(1, a, b)[0] >> 26) & 63  # top 6 bits: 64 bins, 524288 draws
    # chi-square with 63 degrees of freedom: 0.1 % critical value 103.4
    assert _chi_square(torch.bincount(top.flatten(), minlength=64).double()) < 103.4
    # joint bins of neighbours (a, b) / (a + 1, b) / (a, b + 1) / (a + 1, b + 1): 8 x 8 bins, 63 degrees of freedom
    q = top >> 3
    for other in (q[1:, :-1], q[:-1, 1:], q[1:, 1:]):
        pairs = q[:-1, :-1] * 8 + other
        assert _chi_square(torch.bincount(pairs.flatten(), minlength=64).double()) < 103.4
    assert torch.equal(stream.col_range(300), stream.cols(torch.arange(300)))  # the kept column hashes
    assert torch.equal(stream.col_range(5000), stream.cols(torch.arange(5000)))  # ... grown
    z = stream.gaussian(2, a, b)
    for x, y in ((z[:, 1:], z[:, :-1]), (z[:, :, 1:], z[:, :, :-1]), (z[0], z[1])):
        assert abs(float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1])) < 0.01


def _pattern(n_keys: int, kind: str) -> torch.Tensor:
    idx = torch.arange(n_keys)
    if kind == "gali":  # fractional keys in an old region (2 of every 3), integer tail: like GALI's positions
        return (idx % 3 != 0) & (idx < n_keys * 3 // 4)
    return idx % 2 == 1 if kind == "alternate" else torch.zeros(n_keys, dtype=torch.bool)


@pytest.mark.parametrize("kind", ["gali", "alternate", "none"])
@pytest.mark.parametrize("s", [1, 37, 300])
def test_split_attention_equals_the_full_tile_path(monkeypatch, kind, s):
    n_keys = 400
    q, k, v = random_qkv(s, n_keys, 4)
    q, k, v = (torch.cat([x, x.flip(2) * 0.5]) for x in (q, k, v))  # batch of 2
    r_nonzero = _pattern(n_keys, kind)
    spec, scale = NoiseSpec("gaussian", std_base=4.0), D ** -0.5
    assert splittable(spec, q.device)
    got = noisy_attention(q, k, v, scale, spec=spec, stream=NoiseStream(6, 2), r_nonzero=r_nonzero)
    monkeypatch.setitem(fused._FLASH_OK, "cpu", False)  # the full-tile path: one explicit tile, all keys
    assert not splittable(spec, q.device)
    want = noisy_attention(q, k, v, scale, spec=spec, stream=NoiseStream(6, 2), r_nonzero=r_nonzero)
    assert (got - want).abs().max() < 1e-5  # float rounding of the merge only (outputs are O(1))


@pytest.mark.parametrize("scale_std", [1, 0])
def test_split_attention_does_not_depend_on_the_block_size(scale_std):
    n_keys, s = 500, 90
    q, k, v = random_qkv(s, n_keys, 2)
    r_nonzero = _pattern(n_keys, "gali")
    spec = NoiseSpec("gaussian", std_base=3.0, scale_std=scale_std)

    def run(rows):
        return split_attention(q * D ** -0.5, k, v, spec=spec, stream=NoiseStream(1, 4), r_nonzero=r_nonzero,
                               block_elements=1, min_rows=rows)

    full = run(s)
    for rows in (1, 7, 32):
        assert (run(rows) - full).abs().max() < 2e-5  # float rounding of other tile shapes only
    tail = split_attention(q[..., -20:, :] * D ** -0.5, k, v, spec=spec, stream=NoiseStream(1, 4),
                           r_nonzero=r_nonzero, min_rows=5)  # a later chunk: the last 20 queries alone
    assert (tail - full[..., -20:, :]).abs().max() < 2e-5


def test_split_attention_with_other_value_size_and_no_noise():
    n_keys, s = 300, 40
    q, k, _ = random_qkv(s, n_keys, 9)
    v = torch.randn(1, HKV, n_keys, 2 * D)  # values wider than queries: the flash call pads
    spec = NoiseSpec("gaussian", std_base=0.0)  # std 0: plain causal attention
    got = split_attention(q * D ** -0.5, k, v, spec=spec, stream=NoiseStream(0, 0), r_nonzero=_pattern(n_keys, "gali"),
                          min_rows=16)
    scores = (q @ k.repeat_interleave(H // HKV, 1).transpose(-1, -2)) * D ** -0.5
    causal = torch.arange(n_keys)[None, :] <= torch.arange(n_keys - s, n_keys)[:, None]
    want = torch.softmax(scores.masked_fill(~causal, -math.inf), -1) @ v.repeat_interleave(H // HKV, 1)
    assert (got - want).abs().max() < 2e-5  # float rounding only (logits of size ~10)
