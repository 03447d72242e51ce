"""The example configs of the benchmark tasks resolve (method params and task options valid)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.config import from_dict, read_toml
from harness.stages.resolve import resolve

ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(p for d in ("longbench", "leval", "pg19") for p in (ROOT / d).glob("*.toml"))


def test_there_are_configs_for_both_models():
    names = {p.stem for p in CONFIGS}
    assert {"llama2-7b-chat-4k-to-16k-gali", "llama3-8b-ins-8k-to-16k-gali", "llama3-8b-ins-8k-to-32k-gali"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_resolves(path):
    cfg = from_dict(read_toml(path), source=str(path))
    cfg = resolve(cfg, window=cfg.ori_max_position_embeddings, peek=False)
    assert cfg.task == path.parent.name and cfg.exp_name == path.stem
    assert cfg.max_pe in (16384, 32768)
