"""DPE: docs/reference/beyond.md §4 cases 7–12, 14, 15 (hand rows, groups, division conventions, probe grid, top-k,
identities)."""

from __future__ import annotations

import json
import random
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.common.rope import rotate
from harness.methods.dpe import DpeParams, probe, resolve_setting
from harness.methods.dpe.positions import DpeKernel, far_key_positions, far_query_positions
from harness.methods.dpe.table import PRESETS, DpeTable, equal_groups, pair_scales, save_table, topk_masks
from harness.model.engine import cache_argument
from harness.model.loading import model_info
from tests.methods.reference import dpe_relative

THETA, D = 100.0, 8
MOD = types.SimpleNamespace(scaling=D ** -0.5, layer_idx=0)


class Tables:
    def __init__(self):
        self.inv_freq = (1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)).float()
        self.attention_scaling = 1.0

    def rotate(self, x, pos):
        return rotate(x, pos, self.inv_freq, 1.0)


def rel_pair(i, j, s, w, division="true"):
    """The official code's relative position for one pair (test's own formula): floor form beyond w."""
    if i - j < w:
        return float(i - j)
    return i // s - j // s + w - (w / s if division == "true" else w // s)


def naive(q, k, v, rel, scale):
    """rel [H, L, L, pairs]: per head and pair relative positions; causal softmax of <R(rel) q_i, k_j>·scale."""
    H, L = q.shape[1], q.shape[2]
    k = k.repeat_interleave(H // k.shape[1], 1)[0]
    v = v.repeat_interleave(H // v.shape[1], 1)[0]
    ang = rel * (1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    q1, q2 = q[0, ..., : D // 2][:, :, None], q[0, ..., D // 2:][:, :, None]
    k1, k2 = k[..., : D // 2][:, None], k[..., D // 2:][:, None]
    logits = ((q1 * ang.cos() - q2 * ang.sin()) * k1 + (q2 * ang.cos() + q1 * ang.sin()) * k2).sum(-1) * scale
    logits = logits.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), float("-inf"))
    return (logits.softmax(-1) @ v)[None]


def rel_tensor(L, scales, w, H=4, division="true", mask=None):
    """[H, L, L, pairs] from per-pair scales; pairs outside a head's top-k mask keep r = d."""
    rel = torch.zeros(H, L, L, len(scales), dtype=torch.float64)
    for h in range(H):
        for p, s in enumerate(scales):
            use = mask is None or bool(mask[h][p])
            for i in range(L):
                for j in range(i + 1):
                    rel[h, i, j, p] = rel_pair(i, j, s, w, division) if use else i - j
    return rel


def rand_qkv(L, seed=0, H=4, Hkv=2):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, h, L, D, generator=g, dtype=torch.float64) for h in (H, Hkv, Hkv))


# ---- hand rows (cases 7, 8, 9) ---------------------------------------------------------------------------------


def test_prefill_rows_one_group():
    assert [rel_pair(9, j, 2, 4) for j in range(10)] == [6, 6, 5, 5, 4, 4, 3, 2, 1, 0]
    assert [rel_pair(8, j, 2, 4) for j in range(9)] == [6, 6, 5, 5, 4, 3, 2, 1, 0]
    assert [rel_pair(5, j, 2, 4) for j in range(6)] == [4, 4, 3, 2, 1, 0]
    assert [dpe_relative(9, j, 2, 4) for j in range(10)] == [6, 6, 5, 5, 4, 4, 3, 2, 1, 0]


def test_two_groups_positions():
    """d=8 (4 pairs), bounds [0, 2, 4], scales [1, 4], w=4, i=9."""
    scales = pair_scales([0, 2, 4], [1, 4])
    assert scales.tolist() == [1, 1, 4, 4]
    far = far_query_positions(torch.tensor([9]), scales, 4, "true") - far_key_positions(torch.arange(10), scales)
    rows = [[float(9 - j) if 9 - j < 4 else float(far[j, p]) for j in range(10)] for p in range(4)]
    assert rows[0] == rows[1] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert rows[2] == rows[3] == [5, 5, 5, 5, 4, 4, 3, 2, 1, 0]


def test_division_conventions():
    assert dpe_relative(9, 0, 3, 4, "true") == pytest.approx(3 + 4 - 4 / 3)  # 5.667, official prefill
    assert dpe_relative(9, 0, 3, 4, "floor") == 6  # official decode
    assert dpe_relative(9, 0, 2, 4, "true") == dpe_relative(9, 0, 2, 4, "floor")  # s | w: the same


# ---- kernel vs naive, decode, top-k (cases 11, 13, 14) -------------------------------------------------------------


@pytest.mark.parametrize("scales,w,division", [([2, 2, 2, 2], 4, "true"), ([1, 1, 4, 4], 4, "true"),
                                               ([3, 1, 2, 5], 4, "true"), ([3, 1, 2, 5], 5, "floor")])
def test_kernel_matches_naive(scales, w, division):
    L = 21
    q, k, v = rand_qkv(L, seed=w)
    ker = DpeKernel(Tables(), w, torch.tensor(scales), division)
    ref = naive(q, k, v, rel_tensor(L, scales, w, division=division), MOD.scaling)
    assert torch.allclose(ker(MOD, q, k, v), ref, atol=2e-5)


@pytest.mark.parametrize("division", ["true", "floor"])
@pytest.mark.parametrize("s", [1, 4])
def test_decode_equals_prefill_even_when_s_does_not_divide_w(division, s):
    L = 20
    q, k, v = rand_qkv(L, seed=3)
    ker = DpeKernel(Tables(), 4, torch.tensor([3, 3, 3, 3]), division)
    assert torch.allclose(ker(MOD, q[:, :, L - s:], k, v), ker(MOD, q, k, v)[:, :, L - s:], atol=1e-6)


def test_topk_concatenation_trick_equals_per_head_reference():
    """Mask [1, 0, 1, 0] (head 0) and [0, 1, 1, 0] (head 1), one shared KV head: unselected pairs keep r = d."""
    L, scales, w = 18, [2, 4, 3, 8], 4
    masks = torch.tensor([[[True, False, True, False], [False, True, True, False]]])
    q, k, v = rand_qkv(L, seed=5, H=2, Hkv=1)
    ker = DpeKernel(Tables(), w, torch.tensor(scales), "true", masks=masks)
    ref = naive(q, k, v, rel_tensor(L, scales, w, H=2, mask=masks[0]), MOD.scaling)
    assert torch.allclose(ker(MOD, q, k, v), ref, atol=2e-5)
    assert torch.allclose(ker(MOD, q[:, :, -1:], k, v), ref[:, :, -1:], atol=2e-5)


def test_contributions_and_topk_hand():
    """Pair p of d=4 is (x[p], x[p+2]). q=(3,1,4,0), k=(0,2,1,0): norms q (5, 1), k (1, 2) -> (5, 2) per token."""
    q = torch.tensor([[[3.0, 1.0, 4.0, 0.0], [3.0, 1.0, 4.0, 0.0]]]).repeat(2, 1, 1)  # 2 heads, 2 tokens
    k = torch.tensor([[[0.0, 2.0, 1.0, 0.0], [0.0, 2.0, 1.0, 0.0]]])  # 1 KV head
    assert probe.pair_contribution(q, k).tolist() == [[10.0, 4.0], [10.0, 4.0]]
    assert topk_masks(torch.tensor([[[0.1, 0.5, 0.3, 0.2]]]), 2).tolist() == [[[False, True, True, False]]]


# ---- probe arithmetic (case 10) --------------------------------------------------------------------------------


def test_probe_grid():
    background, factors = probe.probe_grid(131072, 8192)
    assert (background, factors) == (32, [1, 2, 4, 8, 16, 32, 64, 128])
    runs = probe.probe_settings(8, background, factors)
    assert len(runs) == 64
    assert [s for g, f, s in runs if g == 2 and f == 4] == [[32, 32, 4, 32, 32, 32, 32, 32]]
    assert probe.probe_grid(32768, 4096) == (16, [1, 2, 4, 8, 16, 32])


def test_choose_scales_and_scoring():
    scores = [[0.25, 0.75, 0.75], [0.5, 0.5, 0.5], [1.0, 0.0, 0.5]]
    assert probe.choose_scales(scores, [1, 2, 4], 8) == [2, 8, 1]  # tie -> smaller; flat -> background
    assert probe.score_output("The numbers are 1234567 and 7654321.", ["1234567", "7654321", "1111111", "2"]) == 0.75


def test_probe_sample_fits_and_hides_every_value(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sentences = probe.haystack_sentences("The grass is green. The sky is blue. The sun is yellow. " * 40)
    sample = probe.make_probe_sample(tok, sentences, 600, random.Random(0))
    assert 500 < len(sample.input_ids) <= 600 and len(sample.values) == 4
    text = tok.decode(sample.input_ids)
    assert all(len(v) == 7 and f"is: {v}." in text for v in sample.values)
    with pytest.raises(ValueError, match="budget"):
        probe.make_probe_sample(tok, sentences, 100, random.Random(0))


# ---- model level: identities (cases 12, 15) and the config path -----------------------------------------------------


def _load(model_dir, params=None, max_pe=None):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if params is not None:
        cls = METHODS.get("dpe")
        p = P.build(cls.Params, params)
        cfg = types.SimpleNamespace(max_pe=max_pe)
        cls.validate(p, cfg, 64)
        cls(p, cfg).apply(model, model_info(model.config))
    return model


@torch.inference_mode()
def test_identities_with_original(tiny_model_dir):
    short = torch.randint(3, 500, (1, 16))
    params = {"local_window": 16, "scale_factors": [2, 4, 4, 8, 8, 8, 16, 16]}
    assert torch.equal(_load(tiny_model_dir, params)(short).logits, _load(tiny_model_dir)(short).logits)
    ids = torch.randint(3, 500, (1, 120))
    ref = _load(tiny_model_dir)(ids).logits
    ones = _load(tiny_model_dir, {"local_window": 16, "scale_factors": [1] * 8})(ids).logits
    assert torch.allclose(ones, ref, atol=1e-4)
    assert not torch.allclose(_load(tiny_model_dir, params)(ids).logits, ref, atol=1e-2)


@torch.inference_mode()
def test_uniform_scales_equal_selfextend_when_available(tiny_model_dir):
    if "selfextend" not in METHODS.names():
        pytest.skip("no selfextend method registered yet")
    se = METHODS.get("selfextend")
    try:
        p = P.build(se.Params, {"group_size": 4, "window_size": 16})
    except ConfigError as exc:
        pytest.skip(f"selfextend params differ: {exc}")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    se(p, types.SimpleNamespace(max_pe=None)).apply(model, model_info(model.config))
    ids = torch.randint(3, 500, (1, 120))
    dpe = _load(tiny_model_dir, {"local_window": 16, "scale_factors": [4] * 8})(ids).logits
    assert torch.allclose(model(ids).logits, dpe, atol=1e-4)


@torch.inference_mode()
def test_cached_decode_with_topk_table_equals_recomputation(tiny_model_dir, tmp_path):
    contrib = torch.rand(2, 4, 8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "scales.json"
    save_table(DpeTable(local_window=12, group_bounds=[0, 2, 4, 8], scale_factors=[1, 3, 5], topk_dim=5,
                        contributions=contrib.tolist()), path)
    model = _load(tiny_model_dir, {"scales_file": str(path)})
    ids = torch.randint(3, 500, (1, 100))
    full = model(ids).logits
    cache = DynamicCache(config=model.config)
    steps = [model(ids[:, :85], **{cache_argument(model): cache}, use_cache=True).logits]
    steps += [model(ids[:, t:t + 1], **{cache_argument(model): cache}, use_cache=True).logits for t in range(85, 100)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)


def test_presets_and_table_precedence(tmp_path):
    assert resolve_setting(DpeParams(preset="llama3-8b-config")).scale_factors == [2, 8, 2, 8, 32, 32, 32, 4]
    readme = resolve_setting(DpeParams(preset="llama3-8b-readme"))
    assert (readme.scale_factors, readme.local_window) == ([4, 4, 2, 16, 32, 32, 16, 128], 1024)
    assert PRESETS["llama3-8b-readme"].published_topk == 48
    path = tmp_path / "t.json"
    save_table(DpeTable(local_window=8, group_bounds=[0, 4, 8], scale_factors=[2, 4]), path)
    assert json.loads(path.read_text())["format"] == "gali-dpe-scales"
    r = resolve_setting(DpeParams(preset="llama3-8b-config", scales_file=str(path)))
    assert (r.scale_factors, r.local_window, r.group_bounds) == ([2, 4], 8, [0, 4, 8])
    r = resolve_setting(DpeParams(scales_file=str(path), local_window=4, scale_factors=[3] * 8))
    assert (r.scale_factors, r.local_window, r.group_bounds) == ([3] * 8, 4, None)
    assert equal_groups(64, 8) == [0, 8, 16, 24, 32, 40, 48, 56, 64] and equal_groups(32, 8)[1] == 4


def _validate(params, window=64, max_pe=None):
    cls = METHODS.get("dpe")
    cls.validate(P.build(cls.Params, params, prefix="params."), types.SimpleNamespace(max_pe=max_pe), window)


def test_config_errors(tmp_path):
    cases = [({}, "params.scale_factors"), ({"scale_factors": [2, 2]}, "2 scales for 8 groups"),
             ({"scale_factors": [0] * 8}, "params.scale_factors"), ({"preset": "llama3-8b"}, "did you mean"),
             ({"preset": "llama3-8b-readme"}, "params.local_window"),  # w = 1024 >= the tiny window 64
             ({"scale_factors": [2] * 8, "topk_dim": 4}, "params.topk_dim"),
             ({"scales_file": str(tmp_path / "missing.json")}, "not found"),
             ({"scale_factors": [2] * 3, "group_bounds": [0, 3, 2, 8]}, "params.group_bounds")]
    for params, match in cases:
        with pytest.raises(ConfigError, match=match):
            _validate(params)


def test_group_bounds_must_cover_the_head(tiny_model_dir):
    with pytest.raises(ConfigError, match="head_dim/2 = 8"):
        _load(tiny_model_dir, {"local_window": 8, "scale_factors": [2, 2], "group_bounds": [0, 4, 6]})


def test_suggested_params_follow_the_selfextend_rule():
    sug = METHODS.get("dpe").suggested_params(64, 256)
    assert sug == {"local_window": 8, "scale_factors": [5] * 8}  # ceil((256 − 8) / (64 − 8)) = 5
    _validate(sug, max_pe=256)
    assert dpe_relative(255, 0, 5, 8) < 64


def test_probe_cli_end_to_end(tiny_model_dir, tmp_path):
    from harness.cli.dpe_probe import main

    out = tmp_path / "dpe.json"
    rc = main(["--model", str(tiny_model_dir), "--out", str(out), "--target", "512", "--groups", "2",
               "--min-length", "256", "--samples", "1", "--max-new-tokens", "2", "--topk", "3",
               "--dim-min-length", "32", "--dim-samples", "1", "--device", "cpu"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["group_bounds"] == [0, 4, 8] and len(data["scale_factors"]) == 2 and data["topk_dim"] == 3
    assert torch.tensor(data["contributions"]).shape == (2, 4, 8)
    assert data["probe"]["factors"] == [1, 2] and data["probe"]["background"] == 16
    ids = torch.randint(3, 500, (1, 40))
    with torch.inference_mode():
        assert torch.isfinite(_load(tiny_model_dir, {"scales_file": str(out)})(ids).logits).all()
