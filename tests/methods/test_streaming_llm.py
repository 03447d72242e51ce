"""StreamingLLM: hand-computed cache positions, the kernel against a naive per-pair reference (prefill, chunks and
decode), equality with the original model while nothing is evicted, no L×L intermediate, configuration errors."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.common.rope import rotate_half
from harness.methods.streaming_llm import StreamingLLMKernel
from tests.methods.helpers import MOD, THETA, D, Tables, apply_method, cached_forwards
from tests.methods.reference import streaming_relative


def rot(x: torch.Tensor, r: float) -> torch.Tensor:
    """x [..., D] rotated by relative position r (fp64, independent of the harness's tables)."""
    inv = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.cat([r * inv, r * inv])
    return x * ang.cos() + rotate_half(x) * ang.sin()


def naive(q, k, v, relative, scale) -> torch.Tensor:
    """Softmax over the keys j <= i with relative(i, j) not None of <R(relative(i, j)) q_i, k_j>·scale, one pair at a
    time (L×L, for small L only)."""
    H, L = q.shape[1], q.shape[2]
    k, v, q = k.repeat_interleave(H // k.shape[1], 1)[0], v.repeat_interleave(H // v.shape[1], 1)[0], q[0]
    out = torch.zeros_like(q)
    for i in range(L):
        pairs = [(j, r) for j in range(i + 1) if (r := relative(i, j)) is not None]
        logits = torch.stack([(rot(q[:, i], r) * k[:, j]).sum(-1) * scale for j, r in pairs], -1)
        out[:, i] = (logits.softmax(-1)[..., None] * v[:, [j for j, _ in pairs]]).sum(1)
    return out[None]


def rand_qkv(L: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, h, L, D, generator=g, dtype=torch.float64) for h in (4, 2, 2))


def run_split(kernel, q, k, v, sizes: list[int]) -> torch.Tensor:
    """Kernel outputs when the L tokens arrive in forwards of `sizes` (queries = last s of the cached keys)."""
    outs, start = [], 0
    for n in sizes:
        outs.append(kernel(MOD, q[:, :, start:start + n], k[:, :, :start + n], v[:, :, :start + n]))
        start += n
    return torch.cat(outs, dim=2)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns (the kernel's largest intermediate)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def largest_intermediate(kernel, L: int, heads: int = 2) -> int:
    """Largest tensor (elements) created while `kernel` computes a prefill of L tokens (fp32, `heads` heads)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, heads, L, D, generator=g) for _ in range(3))
    with LargestTensor() as probe:
        kernel(MOD, q, k, v)
    return probe.largest


# ---- positions by hand -------------------------------------------------------------------------------------


def test_cache_positions_by_hand():
    # S = 2, W = 4: query 9 sits in cache slot S + W − 1 = 5; sinks at slots 0, 1; tokens 2..5 are evicted
    assert [streaming_relative(9, j, 2, 4) for j in range(10)] == [5, 4, None, None, None, None, 3, 2, 1, 0]
    # nothing is evicted while i < S + W: true distances
    assert [streaming_relative(5, j, 2, 4) for j in range(6)] == [5, 4, 3, 2, 1, 0]
    # no sinks: a pure sliding window
    assert [streaming_relative(6, j, 0, 3) for j in range(7)] == [None] * 4 + [2, 1, 0]


def test_attention_by_hand():
    """S = 1, W = 1, L = 3: query 2 attends sink 0 from cache slot 1 (distance 1) and itself (distance 0)."""
    q, k, v = rand_qkv(3)
    out = run_split(StreamingLLMKernel(Tables(), 1, 1), q, k, v, [3])
    ke, ve = k[0].repeat_interleave(2, 0), v[0].repeat_interleave(2, 0)  # GQA: query head h reads kv head h // 2
    logits = torch.stack([(rot(q[0, :, 2], 1) * ke[:, 0]).sum(-1), (q[0, :, 2] * ke[:, 2]).sum(-1)], -1)
    want = ((logits * MOD.scaling).softmax(-1)[..., None] * ve[:, [0, 2]]).sum(1)
    assert torch.allclose(out[0, :, 2], want, atol=1e-6)


# ---- kernel against the naive reference -------------------------------------------------------------------


@pytest.mark.parametrize(("sinks", "window"), [(3, 10), (0, 7), (4, 1), (2, 30)])
def test_kernel_matches_naive_in_prefill_chunks_and_decode(sinks, window):
    L = 40
    q, k, v = rand_qkv(L)
    ref = naive(q, k, v, lambda i, j: streaming_relative(i, j, sinks, window), MOD.scaling)
    kernel = StreamingLLMKernel(Tables(), sinks, window)
    for sizes in ([L], [13, 27], [L - 3, 1, 1, 1]):
        assert (run_split(kernel, q, k, v, sizes) - ref).abs().max() < 1e-5, sizes


def test_no_quadratic_intermediate():
    L, W = 2048, 64
    largest = largest_intermediate(StreamingLLMKernel(Tables(), 4, W), L)
    assert largest < L * L // 4  # an L×L score matrix (×2 heads) would be 8× this bound
    assert largest <= 2 * 512 * (512 + W) * 2  # one near block: heads × rows × (rows + W − 1) scores (+ slack)


# ---- model level ---------------------------------------------------------------------------------------------


def _model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.inference_mode()
def test_equals_original_until_eviction_then_differs(tiny_model_dir):
    ids = torch.randint(3, 500, (1, 100))
    ref = _model(tiny_model_dir)(ids).logits
    model = _model(tiny_model_dir)
    method = apply_method(model, "streaming_llm", sinks=4, window=28)
    assert method.exact_length(method.info) == 32
    out = model(ids).logits
    assert torch.equal(out[:, :28], ref[:, :28])  # within the window: the model's own attention, bit for bit
    assert torch.allclose(out[:, :32], ref[:, :32], atol=1e-4)  # sinks still at their true positions
    assert not torch.allclose(out[:, 40:], ref[:, 40:], atol=1e-2)  # evicted tokens change the result


@torch.inference_mode()
def test_cached_decode_and_chunks_equal_one_shot(tiny_model_dir):
    model = _model(tiny_model_dir)
    apply_method(model, "streaming_llm", sinks=4, window=20)
    ids = torch.randint(3, 500, (1, 90))
    full = cached_forwards(model, ids, [90])
    assert (cached_forwards(model, ids, [33, 41, 16]) - full).abs().max() < 1e-4
    assert (cached_forwards(model, ids, [85] + [1] * 5) - full).abs().max() < 1e-4


# ---- configuration --------------------------------------------------------------------------------------------


def _validate(params, window=64):
    cls = METHODS.get("streaming_llm")
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=None), window)


def test_defaults_and_config_errors():
    cls = METHODS.get("streaming_llm")
    assert P.build(cls.Params, {}).sinks == 4
    with pytest.raises(ConfigError, match="params.window"):
        _validate({"sinks": 4, "window": 61})  # 4 + 61 > 64
    with pytest.raises(ConfigError, match="params.sinks"):
        _validate({"sinks": -1})
    _validate({})  # default window min(2000, M − 4) fits
    _validate(cls.suggested_params(64, 1024))
    assert METHODS.canonical("streamingllm") == "streaming_llm"
