"""gali-check passes for every registered method on the lab model and on tiny random Llama / Mistral / Qwen2
models, and for every method on each further family it claims (Qwen3, Gemma 2, Gemma 3 text and multimodal, Phi-3).
This file is part of `make test-latest`, so a new transformers release that breaks a method fails CI."""

from __future__ import annotations

import pytest

from harness.core.config import from_dict
from harness.methods.base import METHODS
from harness.stages.check import run_checks
from harness.stages.resolve import method_families, resolve
from tests.tiny import make_model_dir

ALL_METHODS = METHODS.names()


def _cfg(model: str, method: str, window: int, target: int):
    params = METHODS.get(method).suggested_params(window, target)
    if method == "gali":
        params.update(chunk_coe=max(8, window // 4), local_window=max(4, window // 8))
    cfg = from_dict({"task": "pg19", "model": model, "method": method, "exp_name": "check", "max_pe": target,
                     "params": params}, f"{model}:{method}")
    resolve(cfg, window=window, peek=False)
    return cfg


def _assert_passes(cfg, max_len: int) -> None:
    results, _ = run_checks(cfg, max_len)
    failed = [f"{r.name}: {r.detail}" for r in results if r.failed]
    assert not failed, failed
    assert sum(r.name.startswith("preflight:") for r in results) >= 2


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_passes_gali_check_on_the_lab_model(method):
    _assert_passes(_cfg("gali:lab", method, 256, 576), 576)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_passes_gali_check_on_each_family(family_model_dir, method):
    _assert_passes(_cfg(str(family_model_dir), method, 64, 160), 160)


@pytest.fixture(scope="module", params=["qwen3", "gemma2", "gemma3_text", "gemma3", "phi3"])
def other_family_dir(request, tmp_path_factory):
    """Tiny random models of the families only `original` and the frequency methods claim."""
    return request.param, make_model_dir(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_that_claims_a_family_passes_gali_check_on_it(other_family_dir, method):
    family, path = other_family_dir
    if family not in method_families(method):
        pytest.skip(f"{method} does not claim {family} (refused at dry-run; see docs/support.md)")
    _assert_passes(_cfg(str(path), method, 64, 160), 160)
