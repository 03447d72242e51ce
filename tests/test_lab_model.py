"""The committed lab model (harness/assets/lab_model) loads offline and behaves like a trained 256-window RoPE LM."""

from __future__ import annotations

import math
import os
import webbrowser
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR = Path(__file__).resolve().parents[1] / "harness" / "assets" / "lab_model"
WINDOW = 256


@pytest.fixture(scope="module")
def lab():
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    return model, tok


def heldout_ids(tok, n_tokens: int) -> torch.Tensor:
    """[BOS] + tokens of webbrowser.py, a stdlib file in the held-out (last 10% by name) split of the training data."""
    text = Path(webbrowser.__file__).read_text(encoding="utf-8")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) >= n_tokens
    return torch.tensor([[tok.bos_token_id] + ids[200 : 200 + n_tokens - 1]])


def token_nll(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    return F.cross_entropy(logits, ids[0, 1:], reduction="none")


def test_config_is_small_llama_with_256_window(lab):
    model, tok = lab
    assert model.config.model_type == "llama"
    assert model.config.max_position_embeddings == WINDOW
    assert 1e6 <= sum(p.numel() for p in model.parameters()) <= 5e6
    assert model.config.vocab_size == len(tok)
    assert (tok.bos_token_id, tok.eos_token_id) == (model.config.bos_token_id, model.config.eos_token_id)
    assert tok.pad_token_id is not None and tok.pad_token_id not in (tok.bos_token_id, tok.eos_token_id)


def test_tokenizer_round_trip_bos_and_single_digits(lab):
    _, tok = lab
    text = "def f(x):\n    return x ** 2  # café, naïve, 日本\nThe pass key is 4096."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    digits = tok("1234567890", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in digits] == list("1234567890")


def test_in_window_nll_beats_uniform_and_snippet_unigram(lab):
    """Held-out NLL inside the window must beat two baselines by a wide margin:
    uniform over the vocab (ln 2048 = 7.6 nats) and the snippet's own plug-in unigram entropy (a unigram model fit to
    the very tokens it is scored on, which a real LM only beats by using context)."""
    model, tok = lab
    ids = heldout_ids(tok, WINDOW)
    nll = token_nll(model, ids).mean().item()
    counts = Counter(ids[0, 1:].tolist())
    n = sum(counts.values())
    unigram = -sum(c / n * math.log(c / n) for c in counts.values())
    assert nll < math.log(model.config.vocab_size) - 3.0
    assert nll < unigram - 0.5, (nll, unigram)  # measured 3.70 vs unigram 4.52


def test_nll_rises_beyond_the_trained_window(lab):
    """The plain RoPE model extrapolates badly: tokens at positions [512, 1024) cost more than those at [128, 256)
    (both have at least half a window of context). Measured on this snippet: 3.76 -> 3.96; 12 windows in
    tests/demo/test_extrapolation.py give the averaged picture."""
    model, tok = lab
    nll = token_nll(model, heldout_ids(tok, 4 * WINDOW))
    inside, beyond = nll[WINDOW // 2 - 1 : WINDOW - 1].mean().item(), nll[2 * WINDOW - 1 :].mean().item()
    assert beyond > inside + 0.1, (inside, beyond)
