"""Model loading: all layers, window override, dtype/device resolution, clear offline errors."""

from __future__ import annotations

import pytest
import torch

from harness.core.config import from_dict
from harness.core.errors import ModelLoadError
from harness.model.loading import load_model, load_tokenizer, resolve_dtype


def cfg_for(model: str, **kw):
    data = {"task": "needle", "model": model, "method": "original", "exp_name": "x", **kw}
    return from_dict(data, source="test.toml")


def test_all_layers_loaded_and_window_override(tiny_model_dir):
    model, info, device = load_model(cfg_for(str(tiny_model_dir), ori_max_position_embeddings=32))
    assert len(model.model.layers) == 2 == info.num_layers  # the reference truncated to 1 layer; we never do
    assert info.original_window == 32 and model.config.max_position_embeddings == 32
    assert device == "cpu" and next(model.parameters()).dtype == torch.float32
    assert info.num_heads == 4 and info.num_kv_heads == 2 and info.head_dim == 16


def test_dtype_auto():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16


def test_offline_missing_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_tokenizer(cfg_for("someone/not-cached-model-xyz"))
    msg = str(err.value)
    assert "HF_HUB_OFFLINE=1" in msg and "someone/not-cached-model-xyz" in msg and "Fix:" in msg
