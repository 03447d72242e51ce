"""Shared helpers for the task tests: tiny tokenizers with Llama-2/Llama-3-like chat templates, a fake engine."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.core.config import from_dict
from harness.model.engine import Generation
from harness.stages.resolve import build_task, resolve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}[INST] {% if sys and loop.first %}<<SYS>>\n{{ sys }}\n<</SYS>>\n\n{% endif %}"
    "{{ m['content'] }} [/INST]{% endfor %}"
)
LLAMA2_NAME = "meta-llama/Llama-2-7b-chat-hf"
LLAMA3_NAME = "meta-llama/Meta-Llama-3-8B-Instruct"


def llama3_render(user: str, system: str | None = None) -> str:
    """What LLAMA3_TEMPLATE renders, written out by hand."""
    sys = f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>" if system else ""
    return (f"<s>{sys}<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


def llama2_render(user: str, system: str | None = None) -> str:
    """What LLAMA2_TEMPLATE renders, written out by hand."""
    sys = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
    return f"<s>[INST] {sys}{user} [/INST]"


@pytest.fixture(scope="session")
def tok():
    """The tiny BPE tokenizer (BOS <s>, EOS </s>) plus Llama-3 header/eot special tokens; no chat template."""
    from tests.tiny import build_tokenizer

    t = build_tokenizer()
    t.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    return t


@pytest.fixture(scope="session")
def tok3(tok):
    t = copy.deepcopy(tok)
    t.chat_template = LLAMA3_TEMPLATE
    return t


@pytest.fixture(scope="session")
def tok2(tok):
    t = copy.deepcopy(tok)
    t.chat_template = LLAMA2_TEMPLATE
    return t


def plain(tokenizer: Any, text: str) -> list[int]:
    """Ids of `text` with the tokenizer's BOS (how the reference tokenises a finished prompt string)."""
    return list(tokenizer(text)["input_ids"])


def rendered(tokenizer: Any, text: str) -> list[int]:
    """Ids of an already rendered chat string (the template output contains BOS itself)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_task(tokenizer: Any = None, **keys: Any):
    """A resolved task from config keys (model defaults to a Llama-2 chat name; no weights are loaded)."""
    data = {"model": LLAMA2_NAME, "method": "original", "exp_name": "t", **keys}
    cfg = resolve(from_dict(data), peek=False)
    return build_task(cfg, tokenizer)


class FakeEngine:
    """Records generate() calls and answers with a fixed text."""

    def __init__(self, text: str = "answer"):
        self.text = text
        self.model = None
        self.calls: list[dict[str, Any]] = []

    def generate(self, ids, max_new_tokens, stop_ids=(), min_new_tokens=0):
        self.calls.append({"ids": list(ids), "max_new_tokens": max_new_tokens, "stop_ids": list(stop_ids),
                           "min_new_tokens": min_new_tokens})
        return Generation([5, 6], self.text, len(ids), 0.0, 0.0)
