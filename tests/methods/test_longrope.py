"""LongRoPE: factor families, the `longrope` method (factors, attention factor, n̂, short/long switch, factors file)
and the evolutionary search (budget, monotone genomes, seeded, resumable)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.errors import ConfigError, HarnessError
from harness.methods.base import METHODS
from harness.methods.common.frequency import FactorParams
from harness.methods.common.rope import rope_cos_sin
from harness.methods.longrope import LongRopeParams
from harness.methods.longrope.factors import (
    ntk_by_parts_factors,
    ntk_factors,
    pi_factors,
    read_factors_file,
    write_factors_file,
)
from harness.methods.longrope.search import Genome, Search, SearchSettings
from harness.methods.ntk_by_parts import NtkByPartsParams
from harness.model.engine import cache_argument
from harness.model.loading import model_info
from tests.tiny import model_config

CFG = SimpleNamespace(seed=42, source="", max_pe=None)
D, THETA, M = 32, 1e4, 64


def tiny(window: int = M):
    torch.manual_seed(0)
    cfg = model_config("llama", window=window, layers=1, heads=2, kv_heads=1, head_dim=D, theta=THETA, vocab_size=64)
    return AutoModelForCausalLM.from_config(cfg).eval()


def applied(name: str, params, model=None):
    model = model or tiny()
    METHODS.get(name)(params, CFG).apply(model, model_info(model.config))
    return model


def base_inv_freq() -> torch.Tensor:
    return 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)


def inv_freq(model) -> torch.Tensor:
    return model.model.rotary_emb.inv_freq.double()


# ---- factor families equal the methods they name ----

@pytest.mark.parametrize("name,factors", [("linear", pi_factors(D, 4.0)), ("ntk", ntk_factors(D, 4.0))])
def test_pi_and_ntk_factors_equal_the_methods(name, factors):
    model = applied(name, FactorParams(factor=4.0))
    assert torch.allclose(inv_freq(model), base_inv_freq() / torch.from_numpy(factors), rtol=1e-5)
    assert factors[0] == pytest.approx(1.0 if name == "ntk" else 4.0) and factors[-1] == pytest.approx(4.0)


def test_ntk_by_parts_factors_equal_the_method():
    model = applied("ntk_by_parts", NtkByPartsParams(factor=4.0))
    expected = base_inv_freq() / torch.from_numpy(ntk_by_parts_factors(D, 4.0, THETA, M))
    assert torch.allclose(inv_freq(model), expected, rtol=1e-5)


# ---- the method ----

def test_longrope_frequencies_and_attention_factor():
    lam = list(np.linspace(1.0, 4.0, D // 2))
    model = applied("longrope", LongRopeParams(factor=4.0, long_factor=lam))
    rotary = model.model.rotary_emb
    rotary(torch.zeros(1), torch.arange(M + 1)[None])  # beyond M: the long factors
    assert torch.allclose(inv_freq(model), base_inv_freq() / torch.tensor(lam, dtype=torch.float64), rtol=1e-5)
    assert rotary.attention_scaling == pytest.approx(math.sqrt(1 + math.log(4) / math.log(M)))


def test_short_factor_of_ones_with_unit_attention_is_the_model_within_the_window():
    ids = torch.randint(3, 60, (1, M), generator=torch.Generator().manual_seed(0))
    ones = [1.0] * (D // 2)
    model = applied("longrope", LongRopeParams(factor=4.0, long_factor=[2.0] * (D // 2), short_factor=ones,
                                               attention_factor=1.0))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tiny()(ids).logits, atol=1e-5)
        longer = torch.cat([ids, ids[:, :8]], 1)  # beyond M: the long factors take over
        assert not torch.allclose(model(longer).logits[:, :M], tiny()(longer).logits[:, :M], atol=1e-3)


def test_n_hat_positions_keep_the_original_frequencies():
    lam = [3.0] * (D // 2)
    model = applied("longrope", LongRopeParams(factor=4.0, long_factor=lam, n_hat=4))
    rotary = model.model.rotary_emb
    pos = torch.arange(100)[None]
    cos, sin = rotary(torch.zeros(1), pos)
    scale = rotary.attention_scaling
    o_cos, o_sin = rope_cos_sin(pos, base_inv_freq().float(), scale)
    s_cos, s_sin = rope_cos_sin(pos, (base_inv_freq() / 3).float(), scale)
    assert torch.allclose(cos[:, :4], o_cos[:, :4], atol=1e-6) and torch.allclose(sin[:, :4], o_sin[:, :4], atol=1e-6)
    assert torch.allclose(cos[:, 4:], s_cos[:, 4:], atol=1e-5) and torch.allclose(sin[:, 4:], s_sin[:, 4:], atol=1e-5)


def test_cached_decode_equals_recomputation_with_n_hat():
    model = applied("longrope", LongRopeParams(factor=4.0, n_hat=2))
    ids = torch.randint(3, 60, (1, M + 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids).logits[0]
        cache = model(ids[:, :M + 5], use_cache=True).past_key_values
        steps = [model(ids[:, i:i + 1], **{cache_argument(model): cache}, use_cache=True).logits[0, -1]
                 for i in range(M + 5, M + 20)]
    assert max(float((s - full[M + 5 + j]).abs().max()) for j, s in enumerate(steps)) < 1e-4


def test_factors_file_round_trip_and_params_win(tmp_path):
    lam = [round(x, 6) for x in np.linspace(1.0, 8.0, D // 2)]
    path = write_factors_file(tmp_path / "f.json", lam, n_hat=4, factor=8.0, model="x")
    assert read_factors_file(path) == {"long_factor": lam, "n_hat": 4, "factor": 8.0}
    from_file = applied("longrope", LongRopeParams(factors_file=str(path)))
    explicit = applied("longrope", LongRopeParams(factor=8.0, long_factor=lam, n_hat=4))
    x, pos = torch.zeros(1), torch.arange(M + 8)[None]
    tables = zip(from_file.model.rotary_emb(x, pos), explicit.model.rotary_emb(x, pos))
    assert all(torch.allclose(a, b) for a, b in tables)
    csv = tmp_path / "result_final.csv"  # the LongRoPE repository's format: one factor per line
    csv.write_text("\n".join(map(str, lam)))
    assert read_factors_file(csv)["long_factor"] == pytest.approx(lam)
    assert from_file.model.rotary_emb.n_hat == 4
    override = applied("longrope", LongRopeParams(factors_file=str(path), n_hat=0))  # [params] win over the file
    assert not hasattr(override.model.rotary_emb, "n_hat")


@pytest.mark.parametrize("params,key", [
    ({"long_factor": [2.0] * 3}, "params.long_factor"),
    ({"factors_file": "/nonexistent/f.json"}, "params.factors_file"),
    ({"long_factor": [0.0] * (D // 2)}, "params.long_factor"),
    ({"long_factor": []}, "params.long_factor"),
    ({"n_hat": -1}, "params.n_hat"),
])
def test_bad_params_name_the_key(params, key):
    with pytest.raises(ConfigError) as err:
        built = P.build(LongRopeParams, {"factor": 4.0, **params}, prefix="params.")
        METHODS.get("longrope").validate(built, CFG, M)
        applied("longrope", built)
    assert key in str(err.value)


@pytest.mark.parametrize("key,value", [("long_factor", [0.0] * (D // 2)), ("n_hat", -1), ("attention_factor", -1.0)])
def test_bad_values_in_a_factors_file_name_the_key(tmp_path, key, value):
    fields = {"long_factor": [2.0] * (D // 2), "factor": 4.0, key: value}
    path = write_factors_file(tmp_path / "f.json", **fields)
    params = P.build(LongRopeParams, {"factors_file": str(path)}, prefix="params.")
    with pytest.raises(ConfigError, match=f"params.{key}"):
        METHODS.get("longrope").validate(params, CFG, M)


# ---- the search ----

TARGET = np.array([1.0, 1.0, 1.2, 1.5, 2.0, 2.6, 3.3, 4.0])


def objective_counter():
    calls = []

    def objective(g: Genome) -> float:
        calls.append(g)
        return float(np.abs(np.array(g.factors) - TARGET).sum()) + 0.01 * g.n_hat

    return objective, calls


def run_search(evals: int, seed: int = 0, state=None):
    objective, calls = objective_counter()
    settings = SearchSettings(scale=4.0, population=8, parents=4, mutations=4, crossovers=4, evals=evals, seed=seed,
                              step=0.1)
    init = [pi_factors(16, 4.0), ntk_factors(16, 4.0)]
    search = Search(settings, objective, init, window=64, state_path=state)
    best, value = search.run()
    return search, best, value, calls


def test_search_improves_spends_the_budget_and_keeps_factors_monotone():
    search, best, value, calls = run_search(120)
    start = min(float(np.abs(f - TARGET).sum()) for f in (pi_factors(16, 4.0), ntk_factors(16, 4.0)))
    assert len(calls) == 120 == len(search.order) == len(set(search.order))  # budget, no genome twice
    assert value < 0.5 * start
    assert all(np.all(np.diff(g.factors) >= 0) and 1.0 <= min(g.factors) and max(g.factors) <= 5.0
               for g in search.order)


def test_search_is_seeded_and_resumes_exactly(tmp_path):
    straight = run_search(60)
    assert run_search(60)[0].order == straight[0].order
    assert run_search(60, seed=1)[0].order != straight[0].order
    state = tmp_path / "state.json"
    run_search(25, state=state)
    resumed, best, value, calls = run_search(60, state=state)
    assert resumed.order == straight[0].order and (best, value) == straight[1:3]
    assert len(calls) == 35  # only the evaluations the first run did not do
    rows = json.loads(state.read_text())["evaluations"]
    assert len(rows) == 60


def test_resume_with_other_settings_is_refused(tmp_path):
    state = tmp_path / "state.json"
    run_search(10, state=state)
    with pytest.raises(HarnessError) as err:
        run_search(10, seed=3, state=state)
    assert "--state" in str(err.value)


def test_search_cli_writes_a_factors_file_a_config_uses(tiny_model_dir, tmp_path, capsys):
    from harness.cli.longrope_search import main
    from harness.core.config import from_dict
    from harness.stages.resolve import build_method, resolve
    from tests.tiny import corpus

    text = corpus()
    docs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    docs[0].write_text(text[:6000])
    docs[1].write_text(text[6000:12000])
    cfg = tmp_path / "search.toml"
    cfg.write_text(f'task = "pg19"\nmodel = "{tiny_model_dir}"\nmethod = "original"\nmax_pe = 130\n'
                   f'[task_options]\ntext_files = {json.dumps([str(d) for d in docs])}\n')
    out, state = tmp_path / "factors.json", tmp_path / "state.json"
    args = ["--cfg", str(cfg), "--out", str(out), "--state", str(state), "--search-docs", "1", "--heldout-docs", "1",
            "--population", "4", "--parents", "2", "--mutations", "1", "--crossovers", "1", "--evals", "6"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "PPL at 128 tokens (2x the window 64)" in printed and "| searched (n̂ = " in printed
    saved = json.loads(out.read_text())
    assert len(saved["long_factor"]) == 8 and np.all(np.diff(saved["long_factor"]) >= 0)
    assert saved["evaluations"] == 6 and saved["factor"] == 2.0
    assert len(json.loads(state.read_text())["evaluations"]) == 6
    run = from_dict({"task": "pg19", "model": str(tiny_model_dir), "method": "longrope", "max_pe": 130, "exp_name": "x",
                     "params": {"factors_file": "factors.json"}}, source=str(tmp_path / "run.toml"))
    method = build_method(resolve(run, peek=False))  # the file is found beside the config
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    method.apply(model, model_info(model.config))
    assert model.config.rope_parameters["long_factor"] == saved["long_factor"]


def test_committed_lab_config_and_factors_resolve():
    from pathlib import Path

    from harness.stages.resolve import load_plan

    root = Path(__file__).resolve().parents[2]
    cfg = load_plan(root / "configs" / "longrope" / "lab-8x-longrope.toml").cfg
    saved = read_factors_file(root / "configs" / "longrope" / "lab-longrope-factors.json")
    assert cfg.method == "longrope" and len(saved["long_factor"]) == 16 and saved["factor"] == 8.0
