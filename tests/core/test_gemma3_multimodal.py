"""Multimodal Gemma 3 (`gemma3`, Gemma3ForConditionalGeneration): the text decoder under model.model.language_model
is found by the hook and the frequency helpers, ModelInfo and the window come from `text_config`, and
`ori_max_position_embeddings` sets the text decoder's window. (The method runs on it are in test_families.py and
tests/test_check_all.py, which iterate over tests.tiny.FAMILIES.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from harness.core.config import from_dict
from harness.methods.common.frequency import global_rope, rotary_dim, rotary_inv_freqs
from harness.methods.common.hook import attention_modules, decoder, original_rotary
from harness.model.loading import load_model_config, model_info
from harness.stages.resolve import plan_experiment
from tests.tiny import model_config


def _tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(model_config(family, window=32)).eval()


def test_hook_finds_the_text_decoder():
    model = _tiny("gemma3")
    text: Any = model.get_submodule("model.language_model")
    assert decoder(model) is text and original_rotary(model) is text.rotary_emb
    assert attention_modules(model) == [layer.self_attn for layer in text.layers]
    assert decoder(_tiny("llama")).__class__.__name__ == "LlamaModel"


def test_model_info_and_rope_helpers_read_the_text_config():
    mm, text = model_config("gemma3", window=32), model_config("gemma3_text", window=32)
    assert dataclasses.replace(model_info(mm), model_type="gemma3_text") == model_info(text)
    assert model_info(mm).original_window == 32 and model_info(mm).rope_theta == 1e6  # the global layers' base
    assert global_rope(mm) == global_rope(text) and rotary_dim(mm) == rotary_dim(text) == 16
    freqs, ref = rotary_inv_freqs(_tiny("gemma3")), rotary_inv_freqs(_tiny("gemma3_text"))
    assert freqs.keys() == ref.keys() and all(torch.equal(freqs[k], ref[k]) for k in ref)


def test_window_comes_from_the_text_config(tmp_path):
    model_config("gemma3", window=32).save_pretrained(tmp_path)
    base = {"task": "pg19", "model": str(tmp_path), "method": "original", "exp_name": "x"}
    assert plan_experiment(from_dict({**base, "max_pe": 64}, "t.toml")).window == 32
    mcfg = load_model_config(from_dict({**base, "ori_max_position_embeddings": 16}, "t.toml"))
    assert mcfg.text_config.max_position_embeddings == 16 and model_info(mcfg).original_window == 16
