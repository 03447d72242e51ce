"""Preflight: every method passes on tiny models and the lab model; a mis-wired method is refused before any
prediction is written, with one line (exit code 3); --skip-preflight bypasses it and provenance records either."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.cli import run as run_cli
from harness.core.config import from_dict
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.attention import attention
from harness.methods.common.hook import RopeTables, install_kernel, installed_kernel, uninstall_kernel
from harness.methods.invariants import invariant, not_applicable, passed
from harness.model.engine import Engine
from harness.model.loading import model_info
from harness.stages.preflight import PreflightError, apply_with_preflight, probe_length
from harness.stages.resolve import build_method, resolve

KERNEL_METHODS = ["gali", "selfextend", "chunkllama", "dpe", "string", "rerope", "leaky_rerope", "streaming_llm",
                  "lm_infinite", "infllm"]


class CachelessKernel:
    """Mis-wired on purpose: attends only to the keys of the current forward (ignores the KV cache)."""

    def __init__(self, tables: RopeTables):
        self.tables = tables

    def __call__(self, module, q, k, v):
        s = q.shape[-2]
        k, v = k[..., -s:, :], v[..., -s:, :]
        pos = torch.arange(s, device=q.device)
        return attention(self.tables.rotate(q, pos), self.tables.rotate(k, pos), v, module.scaling, causal=True,
                         kernel="sdpa")


class OffByOneKernel:
    """Mis-wired on purpose: keys rotated one position too far (a subtle position bug)."""

    def __init__(self, tables: RopeTables):
        self.tables = tables

    def __call__(self, module, q, k, v):
        K, s = k.shape[-2], q.shape[-2]
        pos = torch.arange(K, device=q.device)
        return attention(self.tables.rotate(q, pos[K - s:]), self.tables.rotate(k, pos + 1), v, module.scaling,
                         causal=True, kernel="sdpa")


@dataclass
class _NoParams:
    pass


def _method(name: str, kernel_cls: type) -> type[Method]:
    class Miswired(Method):
        Params = _NoParams
        equals_original_within_window = True

        def apply(self, model, info: ModelInfo) -> None:
            super().apply(model, info)
            install_kernel(model, kernel_cls(RopeTables(model)))

    Miswired.name = name
    return Miswired


@pytest.fixture
def miswired_methods():
    """Register the two mis-wired methods for one test (and remove them again)."""
    added = {"test_cacheless": _method("test_cacheless", CachelessKernel),
             "test_off_by_one": _method("test_off_by_one", OffByOneKernel)}
    METHODS._load_all()
    for cls in added.values():
        METHODS.register(cls)
    yield added
    for name in added:
        METHODS.unregister(name)


def _load(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _cfg(model_dir, method, **extra):
    params = {**METHODS.get(method).suggested_params(64, 192), **extra.pop("params", {})}
    cfg = from_dict({"task": "pg19", "model": str(model_dir), "method": method, "exp_name": "x", "max_pe": 192,
                     "params": params, **extra}, "test.toml")
    resolve(cfg, window=64, peek=False)
    return cfg


@pytest.mark.parametrize("method", KERNEL_METHODS + ["original", "ntk", "yarn", "linear", "dynamic_ntk"])
def test_every_method_passes_on_tiny_llama(tiny_model_dir, method):
    model, tok = _load(tiny_model_dir)
    cfg = _cfg(tiny_model_dir, method)
    m = build_method(cfg)
    report = apply_with_preflight(model, tok, m, model_info(model.config), "cpu")
    assert report is not None
    assert report.passed, report.error_line()
    names = [c.name for c in report.checks]
    assert names[0] == "chunked_prefill_equals_one_shot" and names[-1] == "cached_decode_equals_recomputation"
    if m.exact_length(model_info(model.config)):
        assert "equals_original" in names  # a method that must equal the original is compared with it


@pytest.mark.parametrize("kind", ["test_cacheless", "test_off_by_one"])
def test_miswired_kernel_is_refused(tiny_model_dir, miswired_methods, kind):
    model, tok = _load(tiny_model_dir)
    cfg = _cfg(tiny_model_dir, "original")
    method = miswired_methods[kind](None, cfg)
    with pytest.raises(PreflightError) as err:
        apply_with_preflight(model, tok, method, model_info(model.config), "cpu")
    line = str(err.value)
    assert "\n" not in line and f"method '{kind}'" in line and "transformers" in line
    failed = "chunked_prefill_equals_one_shot" if kind == "test_cacheless" else "equals_original"
    assert failed in line and err.value.exit_code == 3


class _DeclaresPreflight(Method):
    """Declares a failing preflight invariant of its own and switches a generic preflight invariant off."""

    name = "test_declares"
    Params = _NoParams
    equals_original_within_window = True
    invariants = (
        invariant("always_fails", preflight=True)(lambda ctx: passed("always_fails", False, "by construction", 1.0,
                                                                     0.5)),
        not_applicable("cached_decode_equals_recomputation", "switched off for this test"),
        invariant("not_in_the_preflight")(lambda ctx: passed("not_in_the_preflight", False, "")),
    )


def test_preflight_runs_the_flagged_invariants_a_method_declares(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    reports = []
    with pytest.raises(PreflightError) as err:
        apply_with_preflight(model, tok, _DeclaresPreflight(None, _cfg(tiny_model_dir, "original")),
                             model_info(model.config), "cpu", on_report=reports.append)
    assert [c.name for c in reports[0].checks] == ["chunked_prefill_equals_one_shot", "equals_original",
                                                   "always_fails"]  # the skip is left out, the unflagged not run
    assert [c.name for c in reports[0].failures()] == ["always_fails"]
    assert "always_fails (max|Δlogit| 1, tolerance 0.5; by construction)" in str(err.value)


def test_uninstall_restores_the_model_exactly(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    ids = torch.tensor([list(range(3, 60))])
    rotary, impl = model.model.rotary_emb, model.config._attn_implementation
    with torch.inference_mode():
        want = model(ids).logits
        build_method(_cfg(tiny_model_dir, "gali", params={"local_window": 8})).apply(model, model_info(model.config))
        assert installed_kernel(model) is not None and model.model.rotary_emb is not rotary
        uninstall_kernel(model)
        assert model.model.rotary_emb is rotary and model.config._attn_implementation == impl
        assert installed_kernel(model) is None
        assert torch.equal(model(ids).logits, want)


def _write(tmp_path, model, method):
    path = tmp_path / "exp.toml"
    path.write_text(f'task = "pg19"\nmodel = "{model}"\nmethod = "{method}"\nexp_name = "pf"\nmax_pe = 512\n'
                    f'results_dir = "{tmp_path / "results"}"\nmax_examples = 1\n'
                    '[task_options]\nsource = "python_heldout"\nppl_lengths = [256]\n')
    return str(path)


def test_gali_run_refuses_a_miswired_method_before_predicting(tmp_path, miswired_methods, capsys):
    code = run_cli.main(["--cfg", _write(tmp_path, "gali:lab", "test_cacheless")])
    err = capsys.readouterr().err
    assert code == 3, err
    lines = [line for line in err.splitlines() if "preflight failed" in line]
    assert len(lines) == 1 and "Traceback" not in err and "chunked_prefill_equals_one_shot" in lines[0]
    exp = tmp_path / "results" / "pf"
    assert not list((exp / "predictions").glob("*.jsonl")) if (exp / "predictions").exists() else True
    prov = json.loads((exp / "provenance.json").read_text())
    assert prov["preflight"]["passed"] is False


def test_gali_run_records_the_preflight_and_can_skip_it(tmp_path, miswired_methods, capsys):
    assert run_cli.main(["--cfg", _write(tmp_path, "gali:lab", "gali")]) == 0
    prov = json.loads((tmp_path / "results" / "pf" / "provenance.json").read_text())
    assert prov["preflight"]["passed"] is True and prov["preflight"]["length"] == 256
    assert len(prov["preflight"]["checks"]) == 3
    cfg = _write(tmp_path, "gali:lab", "test_cacheless")
    assert run_cli.main(["--cfg", cfg, "--overwrite", "--skip-preflight"]) == 0
    prov = json.loads((tmp_path / "results" / "pf" / "provenance.json").read_text())
    assert prov["preflight"] == {"skipped": True}


def test_probe_length_stays_inside_the_window():
    info = ModelInfo("llama", 8192, 128, 5e5, 32, 32, 8)
    assert probe_length(info) == 256
    assert probe_length(ModelInfo("llama", 64, 16, 1e4, 2, 4, 2)) == 64


def test_engine_step_uses_the_cache(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    eng = Engine(model, tok, Method(None, None), "cpu")
    ids = list(range(3, 40))
    cache = eng.new_cache()
    first = eng.step(ids[:20], cache)
    rest = eng.step(ids[20:], cache)
    assert int(cache.get_seq_length()) == len(ids)
    full = eng.step(ids, eng.new_cache())
    assert (torch.cat([first, rest]) - full).abs().max() < 1e-4
