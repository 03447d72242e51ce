"""Flags every CLI shares (--version, -q, -v), gali-run --list, gali-check with several configs, and what
--dry-run catches before any weights load (missing local model, unsupported family)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from importlib import import_module

import pytest

import harness
from harness.cli.run import main as run_main
from harness.core.errors import ConfigError
from harness.model.loading import SUPPORTED_FAMILIES, _load_error, looks_local
from harness.tasks.base import TASKS

CLIS = {"gali-run": "run", "gali-eval": "evaluate", "gali-collect": "collect", "gali-check": "check",
        "gali-data": "data", "gali-demo": "demo", "gali-sweep": "sweep", "gali-launch": "launch",
        "gali-dpe-probe": "dpe_probe"}


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_version_on_every_cli(prog, capsys):
    parser = import_module(f"harness.cli.{CLIS[prog]}").build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} (gali-harness) {harness.__version__}"


def test_quiet_and_verbose_flags(monkeypatch):
    from harness.cli._flags import configure_logging, disable_progress_bars

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    parser = import_module("harness.cli.evaluate").build_parser()
    args = parser.parse_args(["--all", "-q"])
    configure_logging(args)
    assert logging.getLogger("harness").getEffectiveLevel() == logging.WARNING and os.environ["TQDM_DISABLE"] == "1"
    from tqdm import tqdm

    try:
        assert tqdm(range(3)).disable  # bars of this process are off too (tqdm was imported before the flag)
    finally:
        disable_progress_bars(False)
    assert not tqdm(range(3), file=open(os.devnull, "w")).disable
    with pytest.raises(SystemExit):
        parser.parse_args(["--all", "-q", "-v"])  # mutually exclusive


def test_list_methods_tasks_models(capsys):
    assert run_main(["--list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "gali (aliases: dpi): " in out and "chunk_coe=3000" in out and "local_window=128" in out
    assert "selfextend (aliases: repro_se)" in out and "original (aliases: repro_original)" in out
    assert run_main(["--list", "tasks"]) == 0
    out = capsys.readouterr().out
    fields = [f.name for f in dataclasses.fields(TASKS.get("needle").Options)]
    assert "needle: " in out and "depths=16" in out and all(f"{name}=" in out for name in fields)
    assert run_main(["--list", "models"]) == 0
    out = capsys.readouterr().out
    assert "gali:lab" in out and ", ".join(SUPPORTED_FAMILIES) in out


def test_check_takes_several_configs(tmp_path, capsys):
    from harness.cli.check import build_parser
    from harness.cli.check import main as check_main

    assert build_parser().parse_args(["--cfg", "a.toml", "b.toml"]).cfg == ["a.toml", "b.toml"]
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text('task = "pg19"\nmodel = "gali:lab"\nmethod = "gali"\n'
                                               "[params]\nchunk_cooe = 1\n")
    assert check_main(["--cfg", str(tmp_path / "*.toml")]) == 2
    err = capsys.readouterr().err
    assert "a.toml" in err and "did you mean 'chunk_coe'" in err


def _cfg(tmp_path, model: str, method: str = "gali") -> str:
    path = tmp_path / "x.toml"
    path.write_text(f'task = "pg19"\nmodel = "{model}"\nmethod = "{method}"\nmax_pe = 1024\n'
                    '[task_options]\nsource = "python_heldout"\n')
    return str(path)


def test_dry_run_missing_local_model_is_an_error(tmp_path, capsys):
    assert run_main(["--cfg", _cfg(tmp_path, str(tmp_path / "no" / "such-model")), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "config key 'model'" in err and "download" not in err
    assert "Traceback" not in err
    assert looks_local("./m") and looks_local("/a/b") and looks_local("a/b/c") and not looks_local("org/model")


def test_dry_run_unsupported_family_names_the_supported_ones(tmp_path, capsys):
    model = tmp_path / "gpt2-like"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 1024}))
    assert run_main(["--cfg", _cfg(tmp_path, str(model), "original"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "model type 'gpt2'" in err and all(family in err for family in SUPPORTED_FAMILIES)
    assert "Traceback" not in err


def test_offline_hint_names_the_hf_cli(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    class Cfg:
        model, source = "org/not-cached", "x.toml"

    msg = str(_load_error(Cfg(), "model config", OSError("not found")))
    assert "`hf download org/not-cached`" in msg and "huggingface-cli" not in msg


def test_config_error_wording_uses_an():
    from harness.core import params as P

    with pytest.raises(ConfigError) as exc:
        P.coerce("x", int, "times")
    assert "write an int value" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        P.coerce(3, str, "model")
    assert "write a str value" in str(exc.value)
