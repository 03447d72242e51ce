"""InfLLM: defaults = the official configs, block formation and a retrieval case by hand, the kernel against an
independent token-by-token reference of the algorithm (prefill, chunks, decode), equality with the original model
within n_local, bounded keys per query, no L×L intermediate, state and configuration errors."""

from __future__ import annotations

import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.infllm import InfLLMParams, infllm_sizes
from harness.methods.infllm.kernel import InfLLMKernel, InfLLMSizes
from tests.methods.helpers import MOD, D, Tables, apply_method, cached_forwards
from tests.methods.test_streaming_llm import largest_intermediate, rand_qkv, rot, run_split


def reference(q, k, v, z: InfLLMSizes, scale: float, chunks: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """InfLLM written out query by query. `chunks` None: its decode path (every token a chunk of its own); else the
    chunks [a, b) of its prefill. Before a chunk: form the blocks whose last token is at distance >= n_local from
    the previous token; the chunk retrieves the top-k blocks by Σ_heads <R(n_local) · mean of its queries, repr>;
    each query attends local keys at their distance and the memory (initial, remainder, retrieved) at distance
    n_local, and adds its local probabilities to the keys' scores."""
    H, L = q.shape[1], q.shape[2]
    k, v, q = k.repeat_interleave(H // k.shape[1], 1)[0], v.repeat_interleave(H // v.shape[1], 1)[0], q[0]
    scores, reprs, out = torch.zeros(H, L, dtype=torch.float64), [], torch.zeros_like(q)
    for a, b in chunks or [(i, i + 1) for i in range(L)]:
        nb, start = 0, z.n_init
        while start + z.block_size - 1 <= a - 1 - z.n_local:  # InfLLM: remainder_len − B >= n_local
            nb, start = nb + 1, start + z.block_size
        while len(reprs) < nb:
            lo = z.n_init + len(reprs) * z.block_size
            top = scores[:, lo:lo + z.block_size].topk(z.repr_topk, dim=-1).indices
            reprs.append(torch.stack([k[h, lo + top[h]].mean(0) for h in range(H)]))
        qmean = torch.stack([rot(q[:, i], z.n_local) for i in range(a, b)]).mean(0)
        chosen = set(range(nb)) if nb <= z.topk else \
            set(torch.tensor([(qmean * reprs[c]).sum() for c in range(nb)]).topk(z.topk).indices.tolist())
        for i in range(a, b):
            qg = rot(q[:, i], z.n_local)
            logits, keys, local = [], [], []
            for j in range(i + 1):
                if i - j < z.n_local:
                    logits.append((rot(q[:, i], i - j) * k[:, j]).sum(-1))
                else:
                    block = (j - z.n_init) // z.block_size if j >= z.n_init else None
                    if block is not None and block < nb and block not in chosen:
                        continue
                    logits.append((qg * k[:, j]).sum(-1))
                keys.append(j)
                local.append(i - j < z.n_local)
            p = (torch.stack(logits, -1) * scale).softmax(-1)
            out[:, i] = (p[..., None] * v[:, keys]).sum(1)
            for c, j in enumerate(keys):
                if local[c]:
                    scores[:, j] += p[:, c]
    return out[None]


# ---- defaults and positions by hand ---------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "n_local"), [(4096, 2048), (8192, 4096), (32768, 4096)])
def test_defaults_reproduce_the_official_configs(window, n_local):
    """vicuna / minicpm (4K): n_local 2048; llama-3 (8K), mistral / qwen (32K): 4096; all: block 128, n_init 128,
    topk 16, repr_topk 4, exc_block_size 512."""
    assert infllm_sizes(InfLLMParams(), window) == InfLLMSizes(128, n_local, 128, 16, 4, 512)
    assert InfLLMParams().max_cached_block == 32


def test_block_formation_by_hand():
    z = InfLLMSizes(n_init=2, n_local=8, block_size=3, topk=1, repr_topk=1, exc_block_size=4)
    # block 0 = tokens 2..4; token 4 leaves query 12's window (distance 8): the block exists from query 13 on
    assert [z.blocks_seen(i) for i in range(10, 18)] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert z.max_keys_per_query() == 8 + 2 + 2 * 3


def test_retrieval_and_positions_by_hand():
    """n_init 1, n_local 2, B 1, topk 1, L = 6. Query 5: local 4, 5 (distances 1, 0); initial 0 and remainder 3 at
    distance 2; blocks {1}, {2} are in memory and the one whose key scores higher against R(2)q_5 is retrieved."""
    z = InfLLMSizes(n_init=1, n_local=2, block_size=1, topk=1, repr_topk=1, exc_block_size=2)
    q, k, v = rand_qkv(6, seed=5)
    out = run_split(InfLLMKernel(Tables(), z), q, k, v, [6])
    ke, ve = k[0].repeat_interleave(2, 0), v[0].repeat_interleave(2, 0)
    qg = rot(q[0, :, 5], 2)
    picked = 1 if (qg * ke[:, 1]).sum() > (qg * ke[:, 2]).sum() else 2  # a one-token block's repr is its key
    keys = [0, picked, 3]
    logits = [(qg * ke[:, j]).sum(-1) for j in keys] + [(rot(q[0, :, 5], 1) * ke[:, 4]).sum(-1),
                                                        (q[0, :, 5] * ke[:, 5]).sum(-1)]
    p = (torch.stack(logits, -1) * MOD.scaling).softmax(-1)
    want = (p[..., None] * ve[:, keys + [4, 5]]).sum(1)
    assert torch.allclose(out[0, :, 5], want, atol=1e-6)


# ---- kernel against the reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [InfLLMSizes(2, 8, 3, 2, 2, 5), InfLLMSizes(0, 6, 4, 1, 1, 3),
                               InfLLMSizes(3, 10, 2, 40, 1, 4)])
def test_kernel_matches_reference_in_prefill_chunks_and_decode(z):
    L = 60
    q, k, v = rand_qkv(L, seed=7)
    ref = reference(q, k, v, z, MOD.scaling)
    for sizes in ([L], [13, 27, 20], [L - 3, 1, 1, 1]):
        kernel = InfLLMKernel(Tables(), z)
        assert (run_split(kernel, q, k, v, sizes) - ref).abs().max() < 1e-5, sizes
        assert kernel.max_keys_seen <= z.max_keys_per_query()
        if z.topk < 5:
            assert kernel.max_keys_seen < L  # retrieval dropped keys


def test_chunk_retrieval_matches_the_official_prefill_rule():
    """retrieval = "chunk": chunks aligned to exc_block_size share the blocks formed before them and one retrieval
    by the mean query; single-token forwards (decode) retrieve per token. Retrieval changes the result."""
    z = InfLLMSizes(2, 8, 3, 2, 2, 5, chunk_retrieval=True)
    L = 60
    q, k, v = rand_qkv(L, seed=11)
    aligned = [(a, min(a + 5, L)) for a in range(0, L, 5)]
    ref = reference(q, k, v, z, MOD.scaling, aligned)
    kernel = InfLLMKernel(Tables(), z)
    assert (run_split(kernel, q, k, v, [L]) - ref).abs().max() < 1e-5
    assert kernel.max_keys_seen <= z.max_keys_per_query()
    assert (run_split(InfLLMKernel(Tables(), z), q, k, v, [25, 35]) - ref).abs().max() < 1e-5  # aligned forwards
    mixed = reference(q, k, v, z, MOD.scaling, [(a, min(a + 5, 57)) for a in range(0, 57, 5)] + [(57, 58), (58, 59),
                                                                                                (59, 60)])
    assert (run_split(InfLLMKernel(Tables(), z), q, k, v, [57, 1, 1, 1]) - mixed).abs().max() < 1e-5
    assert (ref - reference(q, k, v, z, MOD.scaling)).abs().max() > 1e-3  # per-chunk != per-token retrieval


def test_bounded_keys_and_no_quadratic_intermediate():
    z = InfLLMSizes(n_init=4, n_local=64, block_size=8, topk=4, repr_topk=2, exc_block_size=16)
    kernel = InfLLMKernel(Tables(), z)
    L = 2048
    largest = largest_intermediate(kernel, L)
    assert kernel.max_keys_seen == z.max_keys_per_query()  # reached, never exceeded
    assert largest <= 2 * L * D  # nothing larger than the output itself (2 heads × L × head_dim)


def test_out_of_step_state_is_refused():
    z = InfLLMSizes(1, 4, 2, 1, 1, 2)
    q, k, v = rand_qkv(12)
    kernel = InfLLMKernel(Tables(), z)
    run_split(kernel, q, k, v, [8])
    with pytest.raises(RuntimeError, match="KV cache holds 10"):
        kernel(MOD, q[:, :, 10:12], k, v)  # 2 tokens skipped
    run_split(kernel, q, k, v, [12])  # a new sequence (empty cache) starts afresh


# ---- model level ------------------------------------------------------------------------------------------------


def _model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.inference_mode()
def test_equals_original_within_n_local_then_differs(tiny_model_dir):
    ids = torch.randint(3, 500, (1, 120))
    ref = _model(tiny_model_dir)(ids).logits
    model = _model(tiny_model_dir)
    method = apply_method(model, "infllm", n_local=32, n_init=2, block_size=2, topk=4, repr_topk=1,
                          exc_block_size=8)
    assert method.exact_length(method.info) == 32
    assert torch.equal(model(ids[:, :32]).logits, ref[:, :32])
    out = model(ids).logits
    assert torch.allclose(out[:, :32], ref[:, :32], atol=1e-4)
    assert not torch.allclose(out[:, 60:], ref[:, 60:], atol=1e-2)


@torch.inference_mode()
def test_cached_decode_and_chunks_equal_one_shot(tiny_model_dir):
    model = _model(tiny_model_dir)
    apply_method(model, "infllm", n_local=24, n_init=2, block_size=3, topk=3, repr_topk=2, exc_block_size=8)
    ids = torch.randint(3, 500, (1, 110))
    full = cached_forwards(model, ids, [110])
    assert (cached_forwards(model, ids, [37, 41, 32]) - full).abs().max() < 1e-4
    assert (cached_forwards(model, ids, [106] + [1] * 4) - full).abs().max() < 1e-4


@torch.inference_mode()
def test_chunk_retrieval_strides_keep_chunks_whole(tiny_model_dir):
    model = _model(tiny_model_dir)
    method = apply_method(model, "infllm", n_local=16, n_init=2, block_size=2, topk=2, repr_topk=1,
                          exc_block_size=8, retrieval="chunk")
    assert method.prefill_chunks(100, stride=30) == [32, 32, 32, 4]
    ids = torch.randint(3, 500, (1, 100))
    full = cached_forwards(model, ids, [100])
    assert (cached_forwards(model, ids, [32, 32, 32, 4]) - full).abs().max() < 1e-4
    assert (cached_forwards(model, ids, [30, 70]) - full).abs().max() > 1e-3  # a split chunk retrieves differently


# ---- configuration -------------------------------------------------------------------------------------------------


def _validate(params, window=64):
    cls = METHODS.get("infllm")
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=None), window)


def test_config_errors():
    with pytest.raises(ConfigError, match="params.n_local"):
        _validate({"n_local": 65})
    with pytest.raises(ConfigError, match="params.exc_block_size"):
        _validate({"n_local": 16, "exc_block_size": 17})
    with pytest.raises(ConfigError, match="params.repr_topk"):
        _validate({"block_size": 2, "repr_topk": 4})
    with pytest.raises(ConfigError, match="params.topk"):
        _validate({"topk": 0})
    _validate({"n_local": 32, "block_size": 4, "repr_topk": 4})
    _validate({})  # derived block size 2: repr_topk 4 is capped at it
    assert infllm_sizes(InfLLMParams(), 64).repr_topk == 2
    _validate(METHODS.get("infllm").suggested_params(64, 1024))
    assert METHODS.canonical("inf-llm") == "infllm"
