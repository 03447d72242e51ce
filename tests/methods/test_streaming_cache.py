"""StreamingLLM's bounded KV cache (SinkWindowCache): which tokens a layer keeps (by hand), attention on the kept
tokens equals the paper's recomputation from them at cache-slot positions, model logits equal the full-cache
computation for any prefill / decode schedule, and the cache's size and a step's largest tensor do not grow with the
length. The preflight checks the declared bound."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.methods.base import Method
from harness.methods.common.cache import SinkWindowCache, SinkWindowLayer, cache_nbytes
from harness.methods.streaming_llm import StreamingLLMKernel
from harness.model.engine import Engine
from harness.model.loading import model_info
from harness.stages.preflight import run_preflight
from tests.methods.helpers import MOD, Tables, apply_method, cached_forwards
from tests.methods.test_streaming_llm import LargestTensor, rand_qkv, rot

MODULE: Any = MOD  # stands in for an attention module


def _positions(layer: SinkWindowLayer) -> list[int]:
    assert layer.keys is not None
    return layer.keys[0, 0, :, 0].long().tolist()


def test_layer_keeps_sinks_and_the_recent_tokens():
    """Keys carry their token index: after each forward the layer holds tokens 0, 1 and the last 3 (capacity 5);
    a forward sees what was held plus its own tokens."""
    layer = SinkWindowLayer(sinks=2, window=3)
    seen, held = 0, []
    for n, want_held in [(4, [0, 1, 2, 3]), (1, [0, 1, 2, 3, 4]), (5, [0, 1, 7, 8, 9]), (1, [0, 1, 8, 9, 10])]:
        new = torch.arange(seen, seen + n, dtype=torch.float32).view(1, 1, n, 1).expand(1, 2, n, 4)
        keys, values = layer.update(new, new.clone())
        assert keys[0, 0, :, 0].long().tolist() == held + list(range(seen, seen + n))
        assert torch.equal(keys, values)
        seen += n
        held = _positions(layer)
        assert held == want_held
        assert layer.get_seq_length() == len(want_held) and layer.cumulative_length == seen
    assert layer.evicted() == 6 and layer.get_max_length() == 5
    with pytest.raises(RuntimeError, match="evicted"):
        layer.crop(-1)
    layer.reset()
    assert layer.get_seq_length() == 0 and layer.cumulative_length == 0


def _recompute_from_kept(q, k, v, i: int, sinks: int, window: int, scale: float) -> torch.Tensor:
    """The paper's rule for query i: attend the cache it keeps (sinks + the last `window` tokens, itself included),
    keys at their cache slots 0..C−1, the query at the last slot; one softmax (fp64, per pair)."""
    H = q.shape[1]
    kept = sorted(set(range(min(sinks, i + 1))) | set(range(max(0, i - window + 1), i + 1)))
    ke, ve = k.repeat_interleave(H // k.shape[1], 1)[0], v.repeat_interleave(H // v.shape[1], 1)[0]
    slot_q = len(kept) - 1
    logits = torch.stack([(rot(q[0, :, i], slot_q - slot) * ke[:, j]).sum(-1) for slot, j in enumerate(kept)], -1)
    return ((logits * scale).softmax(-1)[..., None] * ve[:, kept]).sum(1)


@pytest.mark.parametrize(("sinks", "window"), [(3, 10), (0, 7), (4, 1), (2, 30)])
def test_kernel_on_the_bounded_cache_equals_recomputation_from_the_kept_tokens(sinks, window):
    L = 48
    q, k, v = rand_qkv(L)
    kernel = StreamingLLMKernel(Tables(), sinks, window)
    want = torch.stack([_recompute_from_kept(q, k, v, i, sinks, window, MOD.scaling) for i in range(L)], 1)[None]
    for sizes in ([L], [13, 20, 15], [L - 5] + [1] * 5, [1] * L):
        layer, outs, start = SinkWindowLayer(sinks, window), [], 0
        for n in sizes:
            keys, values = layer.update(k[:, :, start:start + n], v[:, :, start:start + n])
            outs.append(kernel(MODULE, q[:, :, start:start + n], keys, values))
            start += n
            assert layer.get_seq_length() == min(start, sinks + window)
        assert (torch.cat(outs, dim=2) - want).abs().max() < 1e-6, sizes


@pytest.fixture(scope="module")
def streaming(tiny_model_dir):
    """The tiny Llama (window 64) with streaming_llm (4 sinks, window 20) and an engine on it."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    method = apply_method(model, "streaming_llm", sinks=4, window=20)
    return model, method, Engine(model, None, method, "cpu")


def _run(engine: Engine, ids: list[int], sizes: list[int]) -> tuple[torch.Tensor, SinkWindowCache]:
    cache, outs, start = engine.new_cache(), [], 0
    assert isinstance(cache, SinkWindowCache)
    for n in sizes:
        outs.append(engine.step(ids[start:start + n], cache))
        start += n
    return torch.cat(outs), cache


def test_model_logits_with_the_bounded_cache_equal_the_full_cache(streaming):
    """Prefill + decode with 24 tokens kept per layer give the logits of the same kernel over a cache that keeps all
    120 tokens (one forward), for any schedule; the cache ends with sinks + window tokens."""
    model, _, engine = streaming
    ids = torch.randint(3, 500, (1, 120), generator=torch.Generator().manual_seed(3))
    full = cached_forwards(model, ids, [120])[0]
    for sizes in ([120], [33, 41, 46], [85] + [1] * 35, [7] * 17 + [1]):
        got, cache = _run(engine, ids[0].tolist(), sizes)
        assert (got - full).abs().max() < 1e-4, sizes
        assert cache.get_seq_length() == 24
        assert [getattr(layer, "cumulative_length", None) for layer in cache.layers] == [120, 120]


def test_cache_size_and_step_memory_do_not_grow_with_length(streaming):
    """Cache bytes after 150 and 600 tokens are both 2 layers × (K, V) × 2 kv heads × 24 tokens × 16 dims × 4 B; the
    largest tensor of a decode step and of a prefill (chunks of max(window, 512)) is the same at both lengths."""
    _, method, engine = streaming
    sizes, largest_step, largest_prefill = [], [], []
    for n in (150, 600, 1200):
        ids = torch.randint(3, 500, (n + 1,), generator=torch.Generator().manual_seed(n)).tolist()
        with LargestTensor() as probe:
            cache, _ = engine.prefill(ids[:n])
        largest_prefill.append(probe.largest)
        sizes.append(cache_nbytes(cache))
        with LargestTensor() as probe:
            engine.step(ids[n:], cache)
        largest_step.append(probe.largest)
    assert sizes == [2 * 2 * 2 * 24 * 16 * 4] * 3
    assert largest_step[0] == largest_step[1] == largest_step[2]
    assert method.prefill_chunks(1200) == [512, 512, 176]
    assert largest_prefill[1] == largest_prefill[2]  # both have a full 512-token chunk


def test_default_cache_is_dynamic_and_unbounded(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    method = apply_method(model, "lm_infinite")  # keeps every token by design (docs/methods/streaming.md)
    assert type(method).make_cache is Method.make_cache and method.cache_capacity(model_info(model.config)) is None
    cache = Engine(model, None, method, "cpu").new_cache()
    assert type(cache).__name__ == "DynamicCache"


@pytest.mark.parametrize("declared", [True, False])
def test_preflight_checks_the_declared_cache_bound(streaming, monkeypatch, declared):
    """The probe (64 tokens) overflows the 24-token cache: passes with the declared capacity, fails without."""
    model, method, engine = streaming
    if not declared:
        monkeypatch.setattr(type(method), "cache_capacity", lambda self, info: None)
    report = run_preflight(engine, model_info(model.config), None)
    check = next(c for c in report.checks if c.name == "chunked_prefill_equals_one_shot")
    assert "holds 24 of 64 tokens" in check.detail
    assert check.passed is declared and report.passed is declared
