"""GALI attention arithmetic against the explicit two-matrix formula (docs/reference/methods.md §2.7–2.9,
§11 cases 5–9)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods.gali.kernel import IntegerTables, make_plan, rope_rotate, run_plan
from harness.methods.gali.positions import positions

D, H, HKV = 16, 4, 2
INV_FREQ = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))


def rot64(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE in float64, written independently of harness.methods.common.rope: x [..., n, d], pos [n]."""
    ang = pos.double()[:, None] * INV_FREQ[None, :]
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()], dim=-1)


def two_matrix_reference(q, k, v, q_pos, k_pos, scale, r=None):
    """(1 − r)·ℓ(ceil p_i, ceil p_j) + r·ℓ(ceil p_i, floor p_j), r = frac(ceil p_i − p_j); causal softmax; · v."""
    q, k, v = q.double(), k.double(), v.double()
    s, n_keys = q.shape[-2], k.shape[-2]
    qc = rot64(q, torch.ceil(q_pos))
    k = k.repeat_interleave(H // HKV, dim=1)
    v = v.repeat_interleave(H // HKV, dim=1)
    a = qc @ rot64(k, torch.ceil(k_pos)).transpose(-1, -2) * scale
    b = qc @ rot64(k, torch.floor(k_pos)).transpose(-1, -2) * scale
    if r is None:
        r = torch.remainder(torch.ceil(q_pos.double())[:, None] - k_pos.double()[None, :], 1.0)
    logits = (1 - r) * a + r * b
    allowed = torch.arange(n_keys)[None, :] <= torch.arange(n_keys - s, n_keys)[:, None]
    return torch.softmax(logits.masked_fill(~allowed, -math.inf), dim=-1) @ v


def random_qkv(s, n_keys, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, H, s, D, generator=g) * scale
    k = torch.randn(1, HKV, n_keys, D, generator=g) * scale
    v = torch.randn(1, HKV, n_keys, D, generator=g)
    return q, k, v


def random_positions(n_keys, seed):
    """Non-decreasing positions with mixed fractional parts (not necessarily GALI's construction)."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.tensor([0.25, 1 / 3, 0.5, 1.0, 0.7])[torch.randint(0, 5, (n_keys,), generator=g)]
    return (torch.cumsum(steps.double(), 0) - steps[0]) + torch.rand(1, generator=g).double()


@pytest.mark.parametrize("seed", range(12))
def test_sdpa_interpolated_keys_equal_two_matrix_formula(seed):
    n_keys = 40 + 7 * seed
    s = [1, 5, n_keys, 17][seed % 4]
    q, k, v = random_qkv(s, n_keys, seed)
    k_pos = random_positions(n_keys, seed)
    q_pos = k_pos[n_keys - s:]
    plan = make_plan(q_pos, k_pos, INV_FREQ.float(), 1.0)
    assert plan.n_explicit == 0  # no noise: everything on SDPA
    out = run_plan(plan, q, k, v, D ** -0.5)
    ref = two_matrix_reference(q, k, v, q_pos, k_pos, D ** -0.5)
    assert (out.double() - ref).abs().max() < 2e-5


def test_integer_positions_give_plain_rope_attention():
    q, k, v = random_qkv(6, 30, 1)
    pos = torch.arange(30, dtype=torch.float64)
    out = run_plan(make_plan(pos[-6:], pos, INV_FREQ.float(), 1.0), q, k, v, D ** -0.5)
    qr, kr = rot64(q.double(), pos[-6:]), rot64(k.double(), pos).repeat_interleave(2, dim=1)
    logits = qr @ kr.transpose(-1, -2) * D ** -0.5
    allowed = torch.arange(30)[None, :] <= torch.arange(24, 30)[:, None]
    ref = torch.softmax(logits.masked_fill(~allowed, -math.inf), -1) @ v.double().repeat_interleave(2, dim=1)
    assert (out.double() - ref).abs().max() < 2e-5


def test_logit_is_linear_in_distance_between_integers():
    # a single key at fractional position p: logit(δ) interpolates linearly between ℓ(floor δ) and ℓ(ceil δ)
    q, k, _ = random_qkv(1, 1, 3)
    qp = torch.tensor([9.0], dtype=torch.float64)

    def logit(kp: float) -> float:
        plan = make_plan(qp, torch.tensor([kp], dtype=torch.float64), INV_FREQ.float(), 1.0)
        a = rope_rotate(q, plan.q_cos, plan.q_sin)[0, 0, 0]  # rotate as the kernel does, with the plan's tables
        b = rope_rotate(k, *plan.key_tables())[0, 0, 0]
        return float(a.double() @ b.double())

    l4, l5 = logit(4.0), logit(5.0)  # distances 5 and 4
    for frac in (0.25, 0.5, 0.75):
        assert logit(4.0 + frac) == pytest.approx((1 - frac) * l4 + frac * l5, abs=1e-4)
    exact = (rot64(q.double()[0, 0], qp) @ rot64(k.double()[0, 0], torch.tensor([4.0])).T).item()
    assert l4 == pytest.approx(exact, abs=1e-4)  # integer distance: exact RoPE logit


def test_bf16_reference_rows_above_256_equal_ceil_keys():
    n_keys, s = 6000, 3
    pos = positions(n_keys, 4096, 128)
    q, k, v = random_qkv(s, n_keys, 5, scale=1.0)
    plan = make_plan(pos[-s:], pos, INV_FREQ.float(), 1.0, reference=True)
    assert plan.n_explicit == 0
    out = run_plan(plan, q, k, v, D ** -0.5)
    ceil_only = two_matrix_reference(q, k, v, pos[-s:], pos, D ** -0.5, r=torch.zeros(s, n_keys, dtype=torch.float64))
    ideal = two_matrix_reference(q, k, v, pos[-s:], pos, D ** -0.5)
    assert (out.double() - ceil_only).abs().max() < 2e-5
    fp32 = run_plan(make_plan(pos[-s:], pos, INV_FREQ.float(), 1.0), q, k, v, D ** -0.5)
    assert (fp32.double() - ideal).abs().max() < 2e-5


def test_bf16_reference_small_positions_use_bf16_weights():
    pos = positions(40, 24, 2)  # positions below 256: bf16 keeps the halves
    q, k, v = random_qkv(8, 40, 9)
    plan = make_plan(pos[-8:], pos, INV_FREQ.float(), 1.0, reference=True)
    assert plan.n_explicit == 8
    out = run_plan(plan, q, k, v, D ** -0.5)
    assert (out.double() - two_matrix_reference(q, k, v, pos[-8:], pos, D ** -0.5)).abs().max() < 2e-5


def test_fractional_rope_mode():
    # appro_attn = false: RoPE at the fractional positions themselves (queries included)
    pos = positions(40, 24, 2)
    q, k, v = random_qkv(5, 40, 11)
    out = run_plan(make_plan(pos[-5:], pos, INV_FREQ.float(), 1.0, interpolate=False), q, k, v, D ** -0.5)
    qr, kr = rot64(q.double(), pos[-5:]), rot64(k.double(), pos).repeat_interleave(2, dim=1)
    allowed = torch.arange(40)[None, :] <= torch.arange(35, 40)[:, None]
    probs = torch.softmax((qr @ kr.transpose(-1, -2) * D ** -0.5).masked_fill(~allowed, -math.inf), -1)
    assert (out.double() - probs @ v.double().repeat_interleave(2, dim=1)).abs().max() < 2e-5


# noise (case 7): tests/methods/test_gali_noise.py


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_rotate_is_bit_identical_to_transformers(dtype):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from harness.methods.gali.kernel import half_tables

    x = torch.randn(1, 2, 50, D, generator=torch.Generator().manual_seed(0)).to(dtype)
    pos = torch.arange(50)
    cos_h, sin_h = half_tables(pos, INV_FREQ.float())
    cos, sin = torch.cat([cos_h, cos_h], -1).to(dtype), torch.cat([sin_h, sin_h], -1).to(dtype)
    ref, _ = apply_rotary_pos_emb(x, x, cos[None], sin[None])
    assert torch.equal(rope_rotate(x, cos_h, sin_h), ref)


def test_integer_table_lookup_equals_direct_computation():
    pos = positions(70, 32, 4)
    q, k, v = random_qkv(5, 70, 4)
    table = IntegerTables(33, INV_FREQ.float(), 1.0, "cpu")
    for kw in ({}, {"reference": True}):
        with_table = run_plan(make_plan(pos[-5:], pos, INV_FREQ.float(), 1.0, table=table, **kw), q, k, v, 0.25)
        direct = run_plan(make_plan(pos[-5:], pos, INV_FREQ.float(), 1.0, **kw), q, k, v, 0.25)
        assert torch.equal(with_table, direct)


def test_kernel_cached_group_tables_equal_general_plan():
    # the kernel's fast path (cached interpolated rows + integer-tail slices) against make_plan on the positions
    from types import SimpleNamespace

    from harness.methods.gali.runtime import GaliKernel

    kernel = GaliKernel(SimpleNamespace(inv_freq=INV_FREQ.float(), attention_scaling=1.0), 32, 4)
    for n_keys in [33, 34, 40, 57, 58, 64, 100, 101, 150, 200]:  # growing K: group sizes 2..7, cache regrowth
        for s in (1, 6):
            q, k, v = random_qkv(s, n_keys, n_keys)
            pos = positions(n_keys, 32, 4)
            fast = run_plan(kernel.plan(n_keys, s, torch.device("cpu")), q, k, v, 0.25)
            general = run_plan(make_plan(pos[-s:], pos, INV_FREQ.float(), 1.0), q, k, v, 0.25)
            assert (fast - general).abs().max() < 1e-5
            assert torch.equal(kernel.last_positions, pos)


@torch.inference_mode()
def test_decode_rotation_buffers_equal_full_rotation():
    # decode steps rotate only the keys whose rotation is new (within the window: the new key; beyond it, two frames:
    # keys entering the interpolated region + the new key in the token frame); the result must equal a from-scratch
    # step bit for bit, and the one-frame plan (every key rotated at its GALI position) up to float rounding
    from types import SimpleNamespace

    from harness.methods.gali.runtime import GaliKernel

    tables = SimpleNamespace(inv_freq=INV_FREQ.float(), attention_scaling=1.0)
    stateful, stateless = GaliKernel(tables, 32, 4), GaliKernel(tables, 32, 4)
    module = SimpleNamespace(layer_idx=0, scaling=0.25)
    q_all, k_all, v_all = random_qkv(90, 90, 21)
    stateful(module, q_all[..., :20, :], k_all[..., :20, :], v_all[..., :20, :])  # prefill within the window
    reused = 0
    for n_keys in range(21, 91):  # crosses the window (K = 33) and several group sizes
        q, k, v = q_all[..., n_keys - 1:n_keys, :], k_all[..., :n_keys, :], v_all[..., :n_keys, :]
        before = stateful._decoder._state.get(0) or stateful._rotated.get(0)
        out = stateful(module, q, k, v)
        stateless.reset()
        assert torch.equal(out, stateless(module, q, k, v))
        one_frame = run_plan(stateful.plan(n_keys, 1, torch.device("cpu")), q, k, v, 0.25)
        assert (out - one_frame).abs().max() < 1e-5
        after = stateful._decoder._state.get(0) or stateful._rotated.get(0)
        reused += before is after
    assert reused > 50  # most steps extended the previous step's buffers


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_chunk_attention_equals_masked_sdpa(dtype, tol):
    from harness.methods.common.attention import attention
    from harness.methods.common.attention_kernels import sdpa_chunk_cuda

    for s, n_keys in [(1, 9), (9, 9), (2, 9), (7, 30), (29, 30)]:
        q, k, v = (t.to(dtype) for t in random_qkv(s, n_keys, s + n_keys, scale=1.0))
        # "auto": the mask-free chunk formulation; "sdpa": SDPA with a boolean mask, as the model calls it
        got, want = attention(q, k, v, 0.25, causal=True), attention(q, k, v, 0.25, causal=True, kernel="sdpa")
        assert (got.float() - want.float()).abs().max() <= tol
        if 1 < s < n_keys:  # the CUDA backend's formulation, run here through PyTorch's CPU fallback
            assert (sdpa_chunk_cuda(q, k, v, 0.25).float() - want.float()).abs().max() <= tol
