"""Fixtures for the cluster tests: tiny needle configs that run in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def needle_toml(model: Path, results: Path, exp_name: str, times: int = 2, depths: int = 4, new_tokens: int = 3,
                extra: str = "") -> str:
    """A needle config: len([64]) x depths x times examples (reference filler: 240 characters), greedy, CPU."""
    return (f'task = "needle"\nmodel = "{model}"\nmethod = "original"\nexp_name = "{exp_name}"\n'
            f'results_dir = "{results}"\ntimes = {times}\ndevice = "cpu"\n{extra}\n'
            f'[task_options]\nlengths = [64]\nfit = "reference"\ndepths = {depths}\n'
            f"extra_new_tokens = {new_tokens}\n")


@pytest.fixture
def write_cfg(tmp_path, tiny_model_dir):
    """write_cfg(name, **needle_toml kwargs) -> path of a config whose results go to tmp_path/results."""

    def write(name: str, **kw) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(needle_toml(tiny_model_dir, tmp_path / "results", name, **kw))
        return path

    return write


@pytest.fixture
def child_env():
    """Environment for harness subprocesses: offline, repo importable, few threads."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for key in [k for k in env if k.startswith("SLURM_") or k == "GALI_SHARDS"]:
        del env[key]
    return env
