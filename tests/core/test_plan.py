"""One resolution, one direction: a config is resolved once, with the model's config read once, into a frozen
RunPlan that the run, the dry run and the scoring read."""

from __future__ import annotations

import dataclasses
import json

import pytest
import transformers

from harness.cli.run import main as run_main
from harness.core.config import read_config
from harness.core.results import ExperimentDir
from harness.stages import resolve as R
from harness.stages.evaluate import evaluate_experiment
from harness.stages.run import run_experiment

from .test_runner import needle_toml


class Counting:
    """Counts the reads of a model config in this process (every `AutoConfig.from_pretrained`, the harness's and
    transformers' own, e.g. the tokenizer's) and the resolutions (`method_params`, called once per resolution)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = self.resolutions = 0
        real_read, real_params = transformers.AutoConfig.from_pretrained.__func__, R.method_params
        counter = self

        def from_pretrained(cls, *args, **kwargs):
            counter.reads += 1
            return real_read(cls, *args, **kwargs)

        def method_params(cfg):
            counter.resolutions += 1
            return real_params(cfg)

        monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(from_pretrained))
        monkeypatch.setattr(R, "method_params", method_params)


def test_a_run_resolves_once_and_reads_the_model_config_once(tmp_path, tiny_model_dir, monkeypatch):
    path = needle_toml(tmp_path, tiny_model_dir, tmp_path / "res", method="repro_ntk", times=1, depths=1)
    count = Counting(monkeypatch)
    plan = R.load_plan(path, ["max_pe=128"])
    assert (count.reads, count.resolutions) == (1, 1)
    assert plan.window == 64 and plan.window_source == "llama model config" and plan.info is not None
    assert plan.cfg.method == "ntk" and plan.params.factor is None and plan.device == "cpu"
    assert run_experiment(plan).done == 1
    assert (count.reads, count.resolutions) == (1, 1)  # the run used the plan: nothing read or resolved again


def test_gali_run_and_its_dry_run_resolve_once(tmp_path, tiny_model_dir, monkeypatch, capsys):
    path = needle_toml(tmp_path, tiny_model_dir, tmp_path / "res", times=1, depths=1)
    count = Counting(monkeypatch)
    assert run_main(["--cfg", str(path), "--dry-run", "-q"]) == 0
    assert (count.reads, count.resolutions) == (1, 1)
    assert "# window M = 64 (llama model config)" in capsys.readouterr().out
    assert run_main(["--cfg", str(path), "-q"]) == 0
    assert (count.reads, count.resolutions) == (2, 2)  # one more command: one more of each


def test_scoring_reads_no_model_config(tmp_path, tiny_model_dir, monkeypatch):
    path = needle_toml(tmp_path, tiny_model_dir, tmp_path / "res", times=1, depths=1)
    run_experiment(R.load_plan(path))
    count = Counting(monkeypatch)
    doc = evaluate_experiment(ExperimentDir(tmp_path / "res", "exp"))
    assert (count.reads, count.resolutions) == (0, 1) and doc["subsets"]["needle"]["n_scored"] == 1


def test_the_plan_is_frozen_and_resolving_leaves_the_config_alone(tmp_path, tiny_model_dir):
    path = needle_toml(tmp_path, tiny_model_dir, tmp_path / "res", method="repro_yarn")
    cfg = read_config(path, ["factor=2"])
    plan = R.plan_experiment(cfg)
    assert (cfg.method, cfg.factor, cfg.params) == ("repro_yarn", 2.0, {})  # the caller's config is untouched
    assert (plan.cfg.method, plan.cfg.factor, plan.cfg.params["factor"], plan.params.factor) == ("yarn", None, 2.0, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.window = 128  # type: ignore[misc]
    method = plan.build_method()
    assert method.params == plan.params and method.params is not plan.params  # apply() may fill its own copy
    saved = json.loads(json.dumps(plan.cfg.to_dict()))
    assert R.plan_config(read_config(path, ["factor=2"])).cfg.to_dict() == saved  # deterministic


def test_a_plan_without_the_model_config_gets_it_at_run_time(tmp_path, tiny_model_dir, monkeypatch):
    """A config-time plan made where the model could not be read yet (not fetched) is completed by the run."""
    path = needle_toml(tmp_path, tiny_model_dir, tmp_path / "res", times=1, depths=1)
    plan = R.plan_experiment(read_config(path), "none")
    assert plan.model_config is None and plan.window is None
    count = Counting(monkeypatch)
    assert run_experiment(plan).done == 1 and (count.reads, count.resolutions) == (1, 1)
