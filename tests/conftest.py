"""Shared fixtures: offline tiny models of each supported family."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny import make_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama (window 64, GQA 4/2 heads, head_dim 16) with a BPE tokenizer."""
    return make_model_dir(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session", params=["llama", "mistral", "qwen2"])
def family_model_dir(request, tmp_path_factory):
    """Tiny random models of every supported family."""
    return make_model_dir(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(autouse=True)
def _cli_quiet_is_undone():
    """A CLI run with -q in one test must not silence the next (bars and log level are process-wide)."""
    yield
    from harness.cli._flags import reset_quiet

    reset_quiet()
