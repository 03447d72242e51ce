"""Optional tracking: a [tracking] table makes gali-collect log config, scores and figures (fake backends record
the calls; the real packages are used when installed: MLflow file store, W&B offline mode)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest

from harness.cli.collect import main as collect_main
from harness.core.errors import ConfigError
from harness.core.results import ExperimentDir
from harness.stages.evaluate import evaluate_experiment
from harness.stages.tracking import flat_metrics, flat_params, tracking_options
from tests.scoring.test_eval_collect import needle_exp


def tracked_exp(root: Path, backend: str) -> dict:
    d = needle_exp(root, "needle-tracked")
    cfg = json.loads((d / "config.json").read_text())
    cfg["tracking"] = {"backend": backend, "project": "proj"}
    (d / "config.json").write_text(json.dumps(cfg))
    return evaluate_experiment(ExperimentDir(root, d.name))


def fake_mlflow(calls: list) -> types.ModuleType:
    mod = types.ModuleType("mlflow")
    mod.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)  # libraries probe it with find_spec

    class Run:
        def __init__(self, run_id):
            self.info = types.SimpleNamespace(run_id=run_id or "run-1")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    mod.set_tracking_uri = lambda uri: calls.append(("uri", uri))
    mod.set_experiment = lambda name: calls.append(("experiment", name))
    mod.start_run = lambda run_id=None, run_name=None: calls.append(("start", run_id, run_name)) or Run(run_id)
    mod.log_params = lambda p: calls.append(("params", p))
    mod.log_metrics = lambda m: calls.append(("metrics", m))
    mod.log_artifact = lambda path, artifact_path=None: calls.append(("artifact", Path(path).name, artifact_path))
    return mod


def test_mlflow_logs_config_scores_and_figures(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow(calls))
    scores = tracked_exp(tmp_path, "mlflow")
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(tmp_path / "s" / "s.xlsx")]) == 0
    assert "tracked:  run run-1" in capsys.readouterr().out
    kinds = [c[0] for c in calls]
    assert kinds[:3] == ["uri", "experiment", "start"] and calls[1] == ("experiment", "proj")
    assert calls[0][1] == (tmp_path / "mlruns").resolve().as_uri() and calls[2] == ("start", None, "needle-tracked")
    params = next(c[1] for c in calls if c[0] == "params")
    assert params["method"] == "original" and params["model"] == "org/model-a"
    assert params["tracking.backend"] == "mlflow"
    metrics = next(c[1] for c in calls if c[0] == "metrics")
    assert metrics["score/needle"] == scores["subsets"]["needle"]["score"]
    assert metrics["acc_at_1024/needle"] == 100.0 and metrics["acc_at_4096/needle"] == 25.0
    assert sorted(c[1] for c in calls if c[0] == "artifact") == [
        "needle_length_model-a.png", "needle_needle-tracked.png"]
    state = json.loads((tmp_path / "needle-tracked" / "tracking.json").read_text())
    assert state == {"backend": "mlflow", "project": "proj", "run_id": "run-1"}
    calls.clear()  # collecting again updates the same run
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(tmp_path / "s" / "s.xlsx")]) == 0
    assert ("start", "run-1", None) in calls


def test_wandb_logs_offline(tmp_path, monkeypatch):
    calls: list = []
    mod = types.ModuleType("wandb")
    mod.__spec__ = importlib.machinery.ModuleSpec("wandb", None)

    class Run:
        id = "w1"

        def __init__(self):
            self.summary = {}

        def log(self, data):
            calls.append(("log", sorted(data)))

        def finish(self):
            calls.append(("finish",))

    run = Run()
    mod.init = lambda **kw: calls.append(("init", kw)) or run
    mod.Image = lambda path: ("image", Path(path).name)
    monkeypatch.setitem(sys.modules, "wandb", mod)
    tracked_exp(tmp_path, "wandb")
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(tmp_path / "s" / "s.xlsx")]) == 0
    init = calls[0][1]
    assert init["mode"] == "offline" and init["project"] == "proj" and init["name"] == "needle-tracked"
    assert init["config"]["task"] == "needle" and run.summary["score/needle"] == pytest.approx(66.67)
    assert ("log", ["figures/needle_length_model-a", "figures/needle_needle-tracked"]) in calls
    assert calls[-1] == ("finish",)


def test_tracking_table_is_validated_and_missing_package_is_clear(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="unknown backend 'tensorboard'"):
        tracking_options({"backend": "tensorboard"})
    with pytest.raises(ConfigError, match="tracking.projekt"):
        tracking_options({"backend": "mlflow", "projekt": "x"})
    assert tracking_options({}) is None
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as if not installed
    tracked_exp(tmp_path, "mlflow")
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(tmp_path / "s" / "s.xlsx")]) == 2
    assert "pip install 'gali-harness[track]'" in capsys.readouterr().err
    assert flat_params({"a": {"b": [1, 2]}, "c": None}) == {"a.b": "[1, 2]"}
    assert flat_metrics({"subsets": {"s": {"score": float("nan")}}, "speed": {"n": 3}}) == {"speed/n": 3.0}


def test_real_mlflow_file_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    tracked_exp(tmp_path, "mlflow")
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(tmp_path / "s" / "s.xlsx")]) == 0
    run_id = json.loads((tmp_path / "needle-tracked" / "tracking.json").read_text())["run_id"]
    mlflow.set_tracking_uri((tmp_path / "mlruns").resolve().as_uri())
    run = mlflow.get_run(run_id)
    assert run.data.params["method"] == "original" and "score/needle" in run.data.metrics


def test_real_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracked_exp(tmp_path, "wandb")
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(tmp_path / "s" / "s.xlsx")]) == 0
    run_id = json.loads((tmp_path / "needle-tracked" / "tracking.json").read_text())["run_id"]
    [run_dir] = (tmp_path / "needle-tracked" / "wandb").glob(f"offline-run-*-{run_id}")
    assert (run_dir / f"run-{run_id}.wandb").is_file()  # the offline log `wandb sync` uploads
