"""GALI end to end on tiny random Llama / Mistral / Qwen2 models (docs/reference/methods.md §11 cases 4, 10–15)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import Method
from harness.methods.common.hook import install_kernel
from harness.methods.gali import Gali, GaliParams, validate_params
from harness.methods.gali.positions import positions
from harness.model.engine import Engine, cache_argument
from harness.model.loading import model_info
from tests.methods.test_gali_attention import two_matrix_reference

CFG = SimpleNamespace(seed=42, source="", max_pe=None)


def load(path, window=None, dtype=torch.float32):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    if window:
        model.config.max_position_embeddings = window  # what ori_max_position_embeddings does
    return model


def gali_engine(path, window=None, dtype=torch.float32, **params):
    model = load(path, window, dtype)
    method = Gali(GaliParams(**params), CFG)
    method.apply(model, model_info(model.config))
    return Engine(model, None, method, "cpu"), method


def original_engine(path, window=None, dtype=torch.float32):
    return Engine(load(path, window, dtype), None, Method(None, CFG), "cpu")


def ids_of(n, seed=0):
    return torch.randint(3, 500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


class Recorder:
    """Wraps the GALI kernel: records (queries, keys) of layer 0 and the layer-0 inputs/outputs."""

    def __init__(self, kernel):
        self.kernel, self.shapes, self.calls = kernel, [], []

    def __call__(self, module, q, k, v):
        out = self.kernel(module, q, k, v)
        if module.layer_idx == 0:
            self.shapes.append((q.shape[-2], k.shape[-2]))
            self.calls.append((q, k, v, out, self.kernel.last_positions))
        return out


def record(engine):
    rec = Recorder(engine.method.kernel)
    install_kernel(engine.model, rec)
    return rec


def test_within_window_equals_original(family_model_dir):
    ids = ids_of(64)
    gal, _ = gali_engine(family_model_dir, local_window=8, chunk_coe=16, noise_type="gaussian")
    ref = original_engine(family_model_dir)
    assert (torch.from_numpy(gal.token_nll(ids)) - torch.from_numpy(ref.token_nll(ids))).abs().max() <= 1e-5
    _, a = gal.prefill(ids)
    _, b = ref.prefill(ids)
    assert (a - b).abs().max() <= 1e-5
    # greedy generation that stays within the window: identical tokens
    gal.tokenizer = ref.tokenizer = SimpleNamespace(decode=lambda t, **kw: "")
    assert gal.generate(ids[:50], 14).token_ids == ref.generate(ids[:50], 14).token_ids


def test_forward_schedule_and_positions(tiny_model_dir):
    # case 4: L = 37, M = 16, chunk 8, w = 4, 3 decode steps
    eng, _ = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="none")
    rec = record(eng)
    eng.tokenizer = SimpleNamespace(decode=lambda t, **kw: "")
    eng.generate(ids_of(37), max_new_tokens=3)
    assert rec.shapes == [(16, 16), (8, 24), (8, 32), (5, 37), (1, 38), (1, 39)]
    for (s, n_keys), (*_, pos) in zip(rec.shapes[1:], rec.calls[1:]):
        assert torch.equal(pos, positions(n_keys, 16, 4))  # every key moves: positions rebuilt for all K
        assert torch.equal(eng.method.kernel.plan(n_keys, s, torch.device("cpu")).q_pos, pos[-s:])  # last s
        assert pos[-1] == 15 and pos.max() - pos.min() <= 15  # newest token at M - 1; no distance >= M


def test_generation_crossing_the_window_matches_original_until_it_crosses(tiny_model_dir):
    # case 12: M = 16, prompt 14, 5 new tokens; steps with K <= 16 are the original model
    ids = ids_of(14, 3)
    gal, _ = gali_engine(tiny_model_dir, window=16, chunk_coe=4, local_window=2, noise_type="none")
    ref = original_engine(tiny_model_dir, window=16)
    rec = record(gal)
    gal.tokenizer = ref.tokenizer = SimpleNamespace(decode=lambda t, **kw: "")
    a = gal.generate(ids, 5).token_ids
    b = ref.generate(ids, 5).token_ids
    assert a[:3] == b[:3]  # produced by forwards with K = 14, 15, 16
    assert [k for _, k in rec.shapes] == [14, 15, 16, 17, 18]
    assert torch.equal(rec.calls[3][4], positions(17, 16, 2))


@pytest.mark.parametrize("appro_attn", [True, False])
def test_chunk_coe_1_cached_decode_equals_recomputation(family_model_dir, appro_attn):
    # case 13 and "cached decode == recomputation": with chunk_coe = 1 a prefill has the decode schedule
    if not appro_attn and "llama" not in str(family_model_dir):
        pytest.skip("fractional-RoPE mode: one family suffices")
    ids = ids_of(24, 5)
    eng, _ = gali_engine(family_model_dir, window=16, chunk_coe=1, local_window=4, noise_type="none",
                         appro_attn=appro_attn)
    cache, logits = eng.prefill(ids[:15])
    for n in range(16, 25):
        with torch.inference_mode():
            hidden = eng.model.model(input_ids=torch.tensor([[ids[n - 1]]]), **{cache_argument(eng.model.model): cache},
                                     use_cache=True).last_hidden_state
            logits = eng.model.lm_head(hidden)[0, -1]
        assert (logits - eng.prefill(ids[:n])[1]).abs().max() <= 1e-4


def test_decode_equals_prefill_at_a_chunk_boundary(tiny_model_dir):
    eng, method = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="none")
    n = 16 + 8 + 8 + 1
    assert method.prefill_chunks(n) == method.prefill_chunks(n - 1) + [1]
    cache, _ = eng.prefill(ids_of(n)[: n - 1])
    with torch.inference_mode():
        h = eng.model.model(input_ids=torch.tensor([[ids_of(n)[-1]]]), **{cache_argument(eng.model.model): cache},
                            use_cache=True).last_hidden_state
        logits = eng.model.lm_head(h)[0, -1]
    assert (logits - eng.prefill(ids_of(n))[1]).abs().max() <= 1e-4


def test_first_window_equals_original(family_model_dir):
    # case 11: the first M positions of a long prompt are the original model on those M tokens
    ids = ids_of(100, 1)
    eng, _ = gali_engine(family_model_dir, chunk_coe=0.5, local_window=8)
    nll = torch.from_numpy(eng.token_nll(ids))
    ref = torch.from_numpy(original_engine(family_model_dir).token_nll(ids[:64]))
    assert (nll[:63] - ref).abs().max() <= 1e-5
    assert bool(torch.isfinite(nll).all())


def test_cache_holds_unrotated_keys_and_attention_uses_current_positions(tiny_model_dir):
    # case 14: after chunks that moved every key, a decode step attends with R(new p_j)·k_j
    ids = ids_of(31, 2)
    eng, _ = gali_engine(tiny_model_dir, window=16, chunk_coe=5, local_window=3, noise_type="none")
    rec = record(eng)
    cache, _ = eng.prefill(ids[:30])
    with torch.inference_mode():
        eng.model.model(input_ids=torch.tensor([ids[30:]]), **{cache_argument(eng.model.model): cache}, use_cache=True)
        layer0 = eng.model.model.layers[0]
        raw = layer0.self_attn.k_proj(layer0.input_layernorm(eng.model.model.embed_tokens(torch.tensor([ids]))))
    q, k, v, out, pos = rec.calls[-1]
    assert torch.allclose(cache.layers[0].keys, k) and k.shape[-2] == 31
    assert torch.allclose(k[0].transpose(0, 1).reshape(31, -1), raw[0], atol=1e-6)  # stored un-rotated
    assert torch.equal(pos, positions(31, 16, 3))
    ref = two_matrix_reference(q, k, v, pos[-1:], pos, layer0.self_attn.scaling)
    assert (out.double() - ref).abs().max() < 1e-4


def test_noise_is_seeded_per_example(tiny_model_dir):
    ids = ids_of(40, 4)
    eng, method = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="gaussian",
                              scale_std=0, addon_relcoef=0)
    runs = {}
    for seed in (1, 1, 2):
        method.start_example(seed)
        runs.setdefault(seed, []).append(torch.from_numpy(eng.token_nll(ids)))
    assert torch.equal(runs[1][0], runs[1][1])
    assert (runs[1][0] - runs[2][0]).abs().max() > 1e-4
    clean, _ = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="none")
    assert (runs[1][0] - torch.from_numpy(clean.token_nll(ids))).abs().max() > 1e-4


def test_no_noise_spellings_and_chunk_softmax_do_not_change_results(tiny_model_dir):
    ids = ids_of(40, 6)
    base = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="none")[0].token_nll(ids)
    for params in ({"noise_type": "no"}, {"noise_type": "none", "use_chunk_softmax": True}):
        eng, _ = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, **params)
        assert (eng.token_nll(ids) == base).all()


def test_stride_does_not_change_chunking(tiny_model_dir):
    eng, method = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="none")
    assert method.prefill_chunks(45, stride=5) == method.prefill_chunks(45) == [16, 8, 8, 8, 5]
    assert (eng.token_nll(ids_of(45), stride=5) == eng.token_nll(ids_of(45))).all()


def test_bf16_model_paths(tiny_model_dir):
    ids = ids_of(60, 7)
    ref = original_engine(tiny_model_dir, window=16, dtype=torch.bfloat16)
    for params in ({"noise_type": "none"}, {"noise_type": "gaussian"}, {"precision": "bf16-reference"}):
        eng, _ = gali_engine(tiny_model_dir, window=16, dtype=torch.bfloat16, chunk_coe=8, local_window=4, **params)
        nll = torch.from_numpy(eng.token_nll(ids))
        assert bool(torch.isfinite(nll).all())
        assert (nll[:15] - torch.from_numpy(ref.token_nll(ids[:16]))).abs().max() == 0


def test_llama3_rope_type_is_supported_and_others_refused(tmp_path):
    from tests.tiny import make_model_dir

    path = make_model_dir(tmp_path / "l3", "llama", window=32)
    model = load(path)
    model.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8}
    rotary = type(model.model.rotary_emb)(config=model.config)
    model.model.rotary_emb = rotary
    ids = torch.tensor([ids_of(32)])
    with torch.inference_mode():
        want = model(ids).logits
        Gali(GaliParams(local_window=4, chunk_coe=8), CFG).apply(model, model_info(model.config))
        assert (model(ids).logits - want).abs().max() <= 1e-5
    other = load(path)
    other.config.rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(ConfigError, match="rope_type"):
        Gali(GaliParams(local_window=4), CFG).apply(other, model_info(other.config))


@pytest.mark.parametrize("params,key", [
    ({"local_window": 16}, "local_window"), ({"local_window": -1}, "local_window"),
    ({"chunk_coe": 0}, "chunk_coe"), ({"chunk_coe": 0.05}, "chunk_coe"), ({"chunk_coe": -0.5}, "chunk_coe"),
    ({"noise_type": "gausian"}, "noise_type"), ({"addon_relcoef": 2}, "addon_relcoef"),
    ({"scale_std": 0.5}, "scale_std"), ({"std_base": -1.0}, "std_base"),
])
def test_validation(params, key):
    with pytest.raises(ConfigError, match=f"params.{key}"):
        validate_params(P.build(GaliParams, {"local_window": 4, **params}, prefix="params."), 16)


def test_defaults_and_apply_time_validation(tiny_model_dir):
    p = GaliParams()
    assert (p.chunk_coe, p.local_window, p.appro_attn, p.noise_type, p.precision) == (3000, 128, True, "gaussian",
                                                                                       "fp32")
    validate_params(p, 4096)
    with pytest.raises(ConfigError, match="local_window"):  # README default 128 on a 64-token window
        Gali(p, CFG).apply(load(tiny_model_dir), model_info(load(tiny_model_dir).config))
    sugg = Gali.suggested_params(64, 256)
    validate_params(GaliParams(**sugg), 64)


def test_fractional_rope_mode_runs_for_any_chunk_size(tiny_model_dir):
    # appro_attn = false: the reference crashes for chunks > 1; here queries and keys use their fractional positions
    ids = ids_of(45, 8)
    frac, method = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, appro_attn=False)
    interp, _ = gali_engine(tiny_model_dir, window=16, chunk_coe=8, local_window=4, noise_type="none")
    a, b = torch.from_numpy(frac.token_nll(ids)), torch.from_numpy(interp.token_nll(ids))
    assert bool(torch.isfinite(a).all()) and (a - b).abs().max() > 1e-4
    plan = method.kernel.plan(40, 8, torch.device("cpu"))
    assert torch.equal(plan.q_pos, positions(40, 16, 4)[-8:]) and bool((plan.q_pos % 1 != 0).any())
