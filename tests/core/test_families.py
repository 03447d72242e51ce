"""Model families: `original` and the frequency methods on tiny random models of every family, method x family
declarations (refused at config time with a reason), and the generated support matrix (docs/support.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.core import params as P
from harness.core.config import from_dict
from harness.core.errors import ConfigError
from harness.methods.base import METHODS
from harness.methods.common.frequency import FREQUENCY_FAMILIES, rotary_inv_freqs
from harness.model.engine import Engine, cache_argument
from harness.model.loading import POSITION_FAMILIES, SUPPORTED_FAMILIES, load_model, model_info
from harness.stages.resolve import method_families, resolve
from tests.tiny import FAMILIES, model_config

ROOT = Path(__file__).resolve().parents[2]
CFG = SimpleNamespace(seed=42, source="", max_pe=None)
FREQUENCY_METHODS = ["linear", "ntk", "dynamic_ntk", "yarn", "ntk_by_parts", "llama3", "longrope"]
WINDOW = 16


def tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    attn = "eager" if family == "gemma2" else "sdpa"
    return AutoModelForCausalLM.from_config(model_config(family, window=WINDOW), attn_implementation=attn).eval()


def applied(family: str, name: str, **params) -> torch.nn.Module:
    model = tiny(family)
    cls = METHODS.get(name)
    method = cls(P.build(cls.Params, params), CFG)
    method.apply(model, model_info(model.config))
    return model


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits[0]


IDS = torch.randint(3, 500, (1, 30), generator=torch.Generator().manual_seed(1))


def test_tiny_families_cover_the_supported_ones():
    assert set(FAMILIES) == set(SUPPORTED_FAMILIES) == set(FREQUENCY_FAMILIES)
    assert set(POSITION_FAMILIES) <= set(SUPPORTED_FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_loader_accepts_family_and_original_nll_equals_stock(tmp_path, family):
    """The harness loader takes the family (Gemma 2 falls back to eager attention); `original`'s per-token NLL
    through the engine equals the stock model's."""
    stock = tiny(family)
    stock.save_pretrained(tmp_path)
    cfg = from_dict({"task": "needle", "model": str(tmp_path), "method": "original", "exp_name": "x"}, "t.toml")
    model, info, _ = load_model(cfg)
    assert info.model_type == family and info.original_window == WINDOW
    METHODS.get("original")(None, cfg).apply(model, info)
    nll = Engine(model, None, METHODS.get("original")(None, cfg), "cpu").token_nll(IDS[0].tolist())
    ref = -torch.log_softmax(logits(stock, IDS)[:-1], -1).gather(1, IDS[0, 1:, None])[:, 0]
    assert torch.allclose(torch.from_numpy(nll), ref, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", FREQUENCY_METHODS)
def test_frequency_method_at_factor_one_is_the_model(family, name):
    """s = 1 (and unit LongRoPE factors, attention 1) reproduces the stock logits: the rope plumbing is exact."""
    extra = {"long_factor": [1.0] * 4 if family == "phi3" else [1.0] * 8, "attention_factor": 1.0} \
        if name == "longrope" else {}
    ids = IDS[:, :WINDOW]  # dynamic NTK with s = 1 still changes the base beyond M
    assert torch.allclose(logits(applied(family, name, factor=1.0, **extra), ids), logits(tiny(family), ids),
                          atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_linear_divides_global_frequencies_only(family):
    """Every rotating frequency of the global layers / 4; Gemma 3's sliding-window layers keep their local rope;
    Phi-3's partial rotary keeps its channel count."""
    before = {k: v.clone() for k, v in rotary_inv_freqs(tiny(family)).items()}
    after = rotary_inv_freqs(applied(family, "linear", factor=4.0))
    assert before.keys() == after.keys()
    for layer_type, inv in after.items():
        expected = before[layer_type] if layer_type == "sliding_attention" else before[layer_type] / 4
        assert inv.shape == before[layer_type].shape and torch.allclose(inv, expected)
    assert next(iter(after.values())).numel() == (4 if family == "phi3" else 8)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["yarn", "llama3", "longrope"])
def test_cached_decode_equals_recomputation(family, name):
    """Prefill 20 tokens (beyond M = 16), decode 10 with the KV cache: equal to full recomputation."""
    model = applied(family, name, factor=4.0, **({"n_hat": 2} if name == "longrope" else {}))
    full = logits(model, IDS)
    with torch.no_grad():
        cache = model(IDS[:, :20], use_cache=True).past_key_values
        kw = {cache_argument(model): cache}
        steps = [model(IDS[:, i:i + 1], **kw, use_cache=True).logits[0, -1] for i in range(20, 30)]
    assert torch.isfinite(full).all()
    assert max(float((s - full[20 + j]).abs().max()) for j, s in enumerate(steps)) < 1e-4


def _cfg(tmp_path: Path, family: str, method: str, **extra):
    tiny(family).config.save_pretrained(tmp_path)  # config only: what --dry-run reads
    return from_dict({"task": "pg19", "model": str(tmp_path), "method": method, "exp_name": "x", "max_pe": 64,
                      **extra}, "exp.toml")


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - set(POSITION_FAMILIES)))
def test_position_methods_refused_on_other_families_with_reason(tmp_path, family):
    refused = [name for name, cls in METHODS.all().items() if family not in method_families(name)]
    assert "selfextend" in refused and "original" not in refused and "longrope" not in refused
    with pytest.raises(ConfigError) as err:
        resolve(_cfg(tmp_path, family, "selfextend"))
    msg = str(err.value)
    assert "exp.toml" in msg and family in msg and "selfextend" in msg and "docs/support.md" in msg
    assert resolve(_cfg(tmp_path, family, "original")).method == "original"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_support_matrix", ROOT / "scripts" / "gen_support_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_support_doc_is_generated_from_the_declarations():
    text = (ROOT / "docs" / "support.md").read_text()
    assert text == _generator().render(), "docs/support.md is stale: run python scripts/gen_support_matrix.py"
