"""End to end on the fixtures with the tiny model: gali-run (and --dry-run) then gali-eval, for every task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli.evaluate import main as eval_main
from harness.cli.run import main as run_main
from harness.core.results import ExperimentDir, iter_jsonl
from tests.tasks.conftest import FIXTURES

CASES = {
    "longbench": (f'task = "longbench"\nmax_pe = 256\ndata_dir = "{FIXTURES / "longbench"}"\n'
                  'subsets = ["samsum", "passage_count_e", "lsht"]\n'
                  "[task_options]\nmax_new_tokens = 4\n",
                  {"samsum": 2, "passage_count_e": 3, "lsht": 2}),
    "leval": (f'task = "leval"\nmax_pe = 300\ndata_dir = "{FIXTURES / "leval"}"\nmax_examples = 1\n'
              "[task_options]\nmax_new_tokens = 3\n",
              dict.fromkeys(["coursera", "quality", "topic_retrieval_longchat", "tpo", "gsm100", "codeU", "sci_fi"],
                            1)),
    "pg19": ('task = "pg19"\nmax_pe = 128\nmax_examples = 2\nstride = 50\n'
             '[task_options]\nsource = "python_heldout"\nppl_lengths = [32, 64, 126]\n', {"python_heldout": 2}),
    "needle": ('task = "needle"\ntimes = 1\n[task_options]\nlengths = [256]\ndepths = 4\nextra_new_tokens = 2\n',
               {"needle": 4}),
    "passkey": ('task = "passkey_retreival"\ntimes = 2\nn_garbage = 300\n[task_options]\nextra_new_tokens = 2\n',
                {"passkey": 2}),
}


def write_cfg(tmp_path: Path, model: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'model = "{model}"\nmethod = "original"\nexp_name = "{name}"\n'
                    f'results_dir = "{tmp_path / "results"}"\n' + body)
    return path


@pytest.mark.parametrize("task", sorted(CASES))
def test_run_then_eval(task, tmp_path, tiny_model_dir, capsys):
    body, counts = CASES[task]
    cfg = write_cfg(tmp_path, tiny_model_dir, task, body)
    assert run_main(["--cfg", str(cfg), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    for subset, n in counts.items():
        assert f"  {subset}: {n} examples tokens min/median/max=" in plan
    assert run_main(["--cfg", str(cfg)]) == 0
    assert eval_main(["--all", "--results-dir", str(tmp_path / "results")]) == 0
    exp = ExperimentDir(tmp_path / "results", task)
    doc = json.loads(exp.scores_path.read_text())
    assert set(doc["subsets"]) == set(counts)
    for subset, n in counts.items():
        metrics = doc["subsets"][subset]
        assert metrics["n_scored"] == n and metrics["n_errors"] == 0 and metrics["complete"]
        assert isinstance(metrics["score"], (int, float))
        recs = list(iter_jsonl(exp.predictions_path(subset)))
        assert all(r["prompt_len"] > 0 for r in recs)


def test_longbench_smoke_mode(tmp_path, tiny_model_dir):
    cfg = write_cfg(tmp_path, tiny_model_dir, "smoke", f'task = "longbench"\nmax_pe = 256\ntest = true\n'
                    f'data_dir = "{FIXTURES / "longbench"}"\n[task_options]\nmax_new_tokens = 2\n')
    assert run_main(["--cfg", str(cfg)]) == 0
    exp = ExperimentDir(tmp_path / "results", "smoke")
    assert list(exp.prediction_files()) == ["narrativeqa"]
    assert len(list(iter_jsonl(exp.predictions_path("narrativeqa")))) == 1
