"""GALI's noise (docs/methods/gali.md "Noise"): reference statistics, r = 0 masking, counter-based reproducibility,
the factored sampler and the noise-free equivalence of both fused paths."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods.common.attention import attention
from harness.methods.gali.fused import add_noise_, factored_attention, noisy_attention
from harness.methods.gali.kernel import NoiseSpec, make_plan, noise_for_block, run_plan
from harness.methods.gali.noise import FACTOR_BLOCK, FactoredGaussian, NoiseStream
from harness.methods.gali.positions import positions
from harness.methods.gali.runtime import GaliKernel
from tests.methods.helpers import MOD, Tables
from tests.methods.test_gali_attention import HKV, INV_FREQ, D, H, random_qkv, two_matrix_reference


def _noise(spec, n_keys=2048, n=64, scores=None, r_nonzero=None, stream=None, z=None):
    """The noise add_noise_ adds for queries K−n..K−1 over all K keys (fp32 path), and the query indices."""
    a = torch.arange(n_keys - n, n_keys)
    scores = torch.zeros(1, H, n, n_keys) if scores is None else scores
    r_nonzero = torch.ones(n_keys, dtype=torch.bool) if r_nonzero is None else r_nonzero
    allowed = torch.arange(n_keys)[None, :] <= a[:, None]
    out = add_noise_(scores.clone(), a, n_keys, spec, stream or NoiseStream(3, 1), r_nonzero, allowed, z)
    return out - scores, a


def _distance_buckets(a, n_keys, edges=(1, 64, 256, 768, 1400, 2048)):
    dist = (a[:, None] - torch.arange(n_keys)[None, :]).float()
    return dist, [(dist >= lo) & (dist < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


@pytest.mark.parametrize("sampler", ["exact", "factored"])
def test_gaussian_noise_has_the_reference_std_per_distance_bucket(sampler):
    n_keys, std_base = 2048, 2.0
    spec = NoiseSpec("gaussian", addon_relcoef=0, std_base=std_base, sampler=sampler)
    z = FactoredGaussian(3, 1).standard(H, torch.arange(n_keys - 64, n_keys), n_keys) if sampler == "factored" else None
    noise, a = _noise(spec, n_keys, z=z)
    dist, buckets = _distance_buckets(a, n_keys)
    std = dist / n_keys * std_base  # the rule: (query index − key index)/K · std_base
    unit = noise[0] / std  # [H, n, K]: N(0, 1) where dist > 0
    tol = 0.03 if sampler == "exact" else 0.06  # factored: rows of one block are correlated (fewer effective draws)
    for bucket in buckets:
        vals = unit[:, bucket]
        assert abs(float(vals.mean())) < tol and abs(float(vals.std()) - 1) < tol
    causal = dist > 0
    vals = unit[:, causal]
    kurtosis = float(((vals - vals.mean()) ** 4).mean() / vals.var() ** 2)
    assert abs(kurtosis - 3) < 0.15  # Gaussian tails, not a uniform (1.8) or a sum of few uniforms
    assert bool((noise[0][:, dist == 0] == 0).all())  # distance 0: std 0


def test_uniform_noise_is_uniform_times_std_and_row_max():
    n_keys = 2048
    noise, a = _noise(NoiseSpec("uniform", addon_relcoef=0, scale_max=0), n_keys)
    dist, buckets = _distance_buckets(a, n_keys)
    unit = noise[0] / (dist / n_keys)
    for bucket in buckets:
        vals = unit[:, bucket]
        assert float(vals.min()) >= 0 and float(vals.max()) < 1
        assert abs(float(vals.mean()) - 0.5) < 0.02 and abs(float(vals.var()) * 12 - 1) < 0.05
    scores = torch.rand(1, H, 64, n_keys) * 4 + 1  # positive rows: amp = the causal row max
    scaled, _ = _noise(NoiseSpec("uniform", addon_relcoef=0, scale_std=0, scale_max=1), n_keys, scores=scores)
    causal = torch.arange(n_keys)[None, :] <= a[:, None]
    amp = scores.masked_fill(~causal, -math.inf).amax(-1, keepdim=True)
    ratio = (scaled / amp)[..., causal]
    assert float(ratio.min()) >= -1e-5 and float(ratio.max()) < 1 + 1e-5 and abs(float(ratio.mean()) - 0.5) < 0.02


def test_scale_mean_shifts_by_the_causal_row_mean():
    n_keys = 2048
    scores = torch.arange(n_keys, dtype=torch.float32).expand(1, H, 64, n_keys).clone()
    noise, a = _noise(NoiseSpec("gaussian", addon_relcoef=0, scale_mean=1, scale_std=0), n_keys, scores=scores)
    row_mean = noise[0].mean(dim=-1)  # over K draws of N(mean, 1)
    assert torch.allclose(row_mean, (a.float() / 2).expand(H, -1), atol=0.15)  # mean of keys 0..a = a/2


@pytest.mark.parametrize("sampler", ["exact", "factored"])
@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_is_zero_exactly_where_r_is_zero(kind, sampler):
    if kind == "uniform" and sampler == "factored":
        pytest.skip("the factored sampler draws gaussian noise only")
    n_keys = 300
    r_nonzero = torch.arange(n_keys) % 3 != 0
    spec = NoiseSpec(kind, addon_relcoef=1, scale_max=0, sampler=sampler)
    z = FactoredGaussian(3, 1).standard(H, torch.arange(n_keys - 64, n_keys), n_keys) if sampler == "factored" else None
    noise, a = _noise(spec, n_keys, r_nonzero=r_nonzero, z=z)
    assert bool((noise[..., ~r_nonzero] == 0).all())
    past = (torch.arange(n_keys)[None, :] < a[:, None]) & r_nonzero[None, :]
    assert bool((noise[0][:, past] != 0).all())


def test_draws_are_a_pure_function_of_the_indices():
    stream, a, b = NoiseStream(7, 2), torch.arange(5000, 5040), torch.arange(6000)
    full = stream.gaussian(H, a, b)
    pieces = torch.cat([torch.cat([stream.gaussian(H, a[i:i + 7], b[j:j + 1500]) for j in range(0, 6000, 1500)], -1)
                        for i in range(0, 40, 7)], dim=1)
    assert torch.equal(full, pieces)  # any blocking: bit-identical
    assert torch.equal(full, NoiseStream(7, 2).gaussian(H, a, b))  # a new stream object: the same values
    for other in (NoiseStream(8, 2), NoiseStream(7, 3)):  # another seed / layer: other values
        assert not torch.equal(full, other.gaussian(H, a, b))
    assert abs(float(torch.corrcoef(torch.stack([full[0].flatten(), full[1].flatten()]))[0, 1])) < 0.02  # heads
    f = FactoredGaussian(7, 2)
    rows = torch.arange(FACTOR_BLOCK - 20, FACTOR_BLOCK + 20)  # across a block boundary
    whole = f.standard(H, rows, 3000)
    split = torch.cat([FactoredGaussian(7, 2).standard(H, rows[i:i + 9], 3000) for i in range(0, 40, 9)], dim=1)
    assert torch.allclose(whole, split, atol=1e-6)


def test_factored_rows_are_iid_standard_gaussian_and_blocks_independent():
    f = FactoredGaussian(11, 0)
    a = torch.arange(2 * FACTOR_BLOCK - 8, 2 * FACTOR_BLOCK + 8)  # 8 rows in each of two blocks
    z = f.standard(1, a, 8192)[0]
    assert torch.allclose(z.mean(-1), torch.zeros(16), atol=0.05)
    assert torch.allclose(z.std(-1), torch.ones(16), atol=0.05)
    u = f.rows(1, a)[0]
    corr = torch.corrcoef(z)
    same_block = torch.arange(16)[:, None] // 8 == torch.arange(16)[None, :] // 8
    assert torch.allclose(corr[same_block], (u @ u.T)[same_block], atol=0.05)  # documented: <u(a), u(a')>
    assert float(corr[~same_block].abs().max()) < 0.06  # other block: independent key factors


def _one_hot_values(n_keys):
    vals = torch.zeros(1, HKV, n_keys, n_keys)
    vals[0, :, torch.arange(n_keys), torch.arange(n_keys)] = 1.0
    return vals  # the attention output rows are the probabilities themselves


@pytest.mark.parametrize("sampler", ["exact", "factored"])
def test_noisy_attention_is_the_softmax_of_noisy_logits(sampler):
    n_keys, s = FACTOR_BLOCK + 40, 70  # queries on both sides of a factor block boundary
    q, k, _ = random_qkv(s, n_keys, 5)
    v = _one_hot_values(n_keys)
    r_nonzero = torch.arange(n_keys) % 4 != 0
    spec, scale = NoiseSpec("gaussian", std_base=3.0, sampler=sampler), D ** -0.5
    a = torch.arange(n_keys - s, n_keys)
    f = FactoredGaussian(2, 0)
    if sampler == "factored":
        probs = factored_attention(q, k, v, scale, spec=spec, factors=f, r_nonzero=r_nonzero)
        z = FactoredGaussian(2, 0).standard(H, a, n_keys)
    else:
        probs = noisy_attention(q, k, v, scale, spec=spec, stream=NoiseStream(2, 0), r_nonzero=r_nonzero)
        z = NoiseStream(2, 0).gaussian(H, a, torch.arange(n_keys))
    logits = (q.double() @ k.double().repeat_interleave(H // HKV, 1).transpose(-1, -2)) * scale
    std = (a[:, None] - torch.arange(n_keys)[None, :]).double() / n_keys * 3.0 * r_nonzero
    logits = logits + z.double() * std
    want = torch.softmax(logits.masked_fill(torch.arange(n_keys)[None, :] > a[:, None], -math.inf), dim=-1)
    assert (probs.double() - want).abs().max() < 2e-5
    assert bool((probs[0][:, torch.arange(n_keys)[None, :] > a[:, None]] == 0).all())  # future keys


@pytest.mark.parametrize("sampler", ["exact", "factored"])
def test_block_size_and_chunk_split_do_not_change_a_querys_result(sampler):
    n_keys, s = 600, 48
    q, k, _ = random_qkv(s, n_keys, 8)
    v = _one_hot_values(n_keys)
    r_nonzero, scale = torch.arange(n_keys) % 2 == 1, D ** -0.5
    spec = NoiseSpec("gaussian", sampler=sampler)

    def run(qq, block):
        if sampler == "factored":
            return factored_attention(qq, k, v, scale, spec=spec, factors=FactoredGaussian(1, 1), r_nonzero=r_nonzero)
        return noisy_attention(qq, k, v, scale, spec=spec, stream=NoiseStream(1, 1), r_nonzero=r_nonzero,
                               block_elements=block)

    full = run(q, 2**21)
    for block, tail in ((H * 600 * 5, 48), (1, 48), (2**21, 7), (2**21, 1)):  # query blocks of 5 or 1; last 7 / 1
        part = run(q[..., -tail:, :], block)
        assert (part - full[..., -tail:, :]).abs().max() < 5e-6  # float rounding of other matmul shapes only


def test_a_decode_step_gets_the_same_noise_as_a_chunk_forward():
    kernel = GaliKernel(Tables(), window=32, local_window=4, noise=NoiseSpec("gaussian", std_base=4.0), seed=9)
    q, k, v = random_qkv(6, 80, 3)
    with torch.no_grad():
        chunk = kernel(MOD, q.float(), k.float(), v.float())  # 6 queries: the tiled path
        kernel.reset()
        step = kernel(MOD, q[..., -1:, :].float(), k.float(), v.float())  # one query: the two-frame decode
    assert (chunk[..., -1:, :] - step).abs().max() < 1e-5
    clean = GaliKernel(Tables(), window=32, local_window=4, seed=9)
    with torch.no_grad():
        assert (clean(MOD, q[..., -1:, :].float(), k.float(), v.float()) - step).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["exact", "factored"])
@pytest.mark.parametrize("block", [10**9, 40, 1])
def test_zero_noise_equals_the_noise_free_path(sampler, block):
    q, k, v = random_qkv(9, 50, 7)
    k_pos = positions(50, 32, 4)
    spec = NoiseSpec("gaussian", std_base=0.0, sampler=sampler)  # std 0, mean 0: the noisy paths add exact zeros
    plan = make_plan(k_pos[-9:], k_pos, INV_FREQ.float(), 1.0, noise=spec)
    assert plan.n_explicit == 9
    out = run_plan(plan, q, k, v, D ** -0.5, noise=spec, stream=NoiseStream(0, 0), factors=FactoredGaussian(0, 0),
                   block_elements=block)
    clean = run_plan(make_plan(k_pos[-9:], k_pos, INV_FREQ.float(), 1.0), q, k, v, D ** -0.5)
    assert (out - clean).abs().max() < 1e-5
    assert (out.double() - two_matrix_reference(q, k, v, k_pos[-9:], k_pos, D ** -0.5)).abs().max() < 2e-5
    q, k, v = random_qkv(30, 70, 1)  # the factored path straight on chunk attention
    r_nonzero = torch.ones(70, dtype=torch.bool)
    got = factored_attention(q, k, v, 0.25, spec=spec, factors=FactoredGaussian(0, 0), r_nonzero=r_nonzero)
    assert (got - attention(q, k, v, 0.25, causal=True)).abs().max() < 2e-6


def test_bf16_reference_noise_keeps_its_statistics():
    n_keys = 256
    a = torch.arange(n_keys - 32, n_keys)
    allowed = torch.arange(n_keys)[None, :] <= a[:, None]
    spec = NoiseSpec("gaussian", addon_relcoef=0, scale_mean=1, scale_std=0, reference=True)
    scores = torch.arange(n_keys, dtype=torch.float32).expand(1, H, 32, n_keys).clone()
    noise = noise_for_block(scores, a, n_keys, spec, NoiseStream(1, 0), torch.ones(n_keys, dtype=torch.bool), allowed)
    assert noise.dtype == torch.bfloat16
    assert torch.allclose(noise.float().mean(-1), torch.full((H, 32), (n_keys - 1) / 2), atol=0.3)  # all K keys
    assert abs(float((noise.float() - (n_keys - 1) / 2).std()) - 1) < 0.1


def test_factored_sampler_end_to_end_and_its_limits(tiny_model_dir):
    from harness.core.errors import ConfigError
    from harness.methods.gali import GaliParams, validate_params
    from tests.methods.test_gali_model import gali_engine, ids_of

    ids = ids_of(60, 2)
    eng, method = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="gaussian",
                              noise_sampler="factored")
    method.start_example(5)
    first = eng.token_nll(ids)
    method.start_example(5)
    assert (eng.token_nll(ids) == first).all()  # seeded, no generator state
    clean, _ = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="none")
    assert abs(clean.token_nll(ids) - first).max() > 1e-4
    for bad in ({"noise_type": "uniform"}, {"scale_mean": 1}, {"precision": "bf16-reference"}):
        with pytest.raises(ConfigError, match="noise_sampler"):
            validate_params(GaliParams(noise_sampler="factored", local_window=4, **bad), 16)


def test_plan_marks_exactly_the_fractional_positions_as_noisy():
    kernel = GaliKernel(Tables(), window=32, local_window=4, noise=NoiseSpec("gaussian"))
    for n_keys in (33, 47, 80, 150):
        plan = kernel.plan(n_keys, 3, torch.device("cpu"))
        pos = positions(n_keys, 32, 4)
        assert torch.equal(plan.r_nonzero, pos != torch.floor(pos))
