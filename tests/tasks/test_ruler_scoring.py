"""RULER scoring on hand-made cases, the task's score/summary, and gali-run -> gali-eval -> gali-collect offline."""

from __future__ import annotations

import json

from harness.cli.collect import main as collect_main
from harness.cli.evaluate import main as eval_main
from harness.cli.run import main as run_main
from harness.tasks._ruler_spec import RULER_TASKS
from harness.tasks.scoring import ruler as S
from tests.tasks.conftest import FIXTURES, make_task


def test_string_match_all_and_part():
    preds = ["The numbers are 123 and 456.", "only 123", "NOTHING here"]
    refs = [["123", "456"], ["123", "456"], ["nothing"]]
    # all: (2/2 + 1/2 + 1/1) / 3 = 83.333...; part: (1 + 1 + 1) / 3
    assert S.string_match_all(preds, refs) == 83.33 and S.string_match_part(preds, refs) == 100.0
    assert S.string_match_all(["abc"], [["ABC", "d"]]) == 50.0  # case-insensitive
    assert S.string_match_part(["x"], [["y", "z"]]) == 0.0
    assert S.postprocess("  a\tb\x01c \n") == "a\nb\nc"  # control characters become newlines, then strip


def test_effective_length_stays_above_threshold():
    assert S.effective_length({"4096": 90.0, "8192": 86.0, "16384": 80.0, "32768": 95.0}, 85.6) == 8192
    assert S.effective_length({"4096": 85.0, "8192": 99.0}, 85.6) is None
    assert S.effective_length({"8192": 85.6, "4096": 100.0}, 85.6) == 8192  # sorted numerically, >= counts


def test_score_and_summary_by_length():
    def rec(length, pred, outputs, tokens):
        return {"meta": {"length": length}, "prediction": pred, "outputs": outputs, "prompt_len": tokens}

    niah = [rec(1024, "7654321", ["7654321"], 1000), rec(1024, "no", ["7654321"], 990),
            rec(2048, "1 and 2", ["1", "2", "3", "4"], 2000)]
    out = S.score_task(niah, "all")
    assert out["by_length"] == {"1024": 50.0, "2048": 50.0} and out["score"] == 50.0
    assert out["tokens_by_length"] == {"1024": 995.0, "2048": 2000.0} and out["n_by_length"] == {"1024": 2, "2048": 1}
    qa = S.score_task([rec(1024, "Paris.", ["paris", "Lyon"], 1000), rec(2048, "", ["x"], 2000)], "part")
    assert qa["by_length"] == {"1024": 100.0, "2048": 0.0} and qa["nulls"] == 1
    summary = S.summarize({"niah_single_1": out, "qa_1": qa}, 85.6)
    assert summary["by_length"] == {"1024": 75.0, "2048": 25.0} and summary["average"] == 50.0
    assert summary["effective_length"] is None
    task = make_task(task="ruler", max_pe=4096, task_options={"lengths": [1024, 2048], "threshold": 70.0})
    assert task.score("qa_1", [rec(1024, "Paris", ["paris"], 1)])["score"] == 100.0  # qa uses string_match_part
    assert task.score("niah_multivalue", [rec(1024, "a", ["a", "b"], 1)])["score"] == 50.0  # niah: match_all
    assert task.summarize({"niah_single_1": out, "qa_1": qa})["effective_length"] == 1024


def test_run_eval_collect_offline(tmp_path, tiny_model_dir, capsys):
    results = tmp_path / "results"
    cfg = tmp_path / "ruler.toml"
    essay = [str(p) for p in sorted((FIXTURES / "pg19").glob("*.txt"))]
    cfg.write_text(f'task = "ruler"\nmodel = "{tiny_model_dir}"\nmethod = "original"\nexp_name = "r"\n'
                   f'max_pe = 2048\nresults_dir = "{results}"\ndata_dir = "{FIXTURES / "ruler"}"\n'
                   f'prompt_format = "raw"\n[task_options]\nlengths = [1536, 2048]\nnum_samples = 1\n'
                   f'max_new_tokens = 2\nhaystack_files = {json.dumps(essay)}\n')
    assert run_main(["--cfg", str(cfg), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    for task in RULER_TASKS:
        budget = 2  # task_options.max_new_tokens
        line = next(x for x in plan.splitlines() if x.startswith(f"  {task}: 2 examples tokens min/median/max="))
        assert int(line.split("=")[1].split("/")[2].split()[0]) <= 2048 - budget and line.endswith("max_new_tokens=2")
    assert run_main(["--cfg", str(cfg)]) == 0
    assert eval_main(["--all", "--results-dir", str(results)]) == 0
    doc = json.loads((results / "r" / "scores.json").read_text())
    assert list(doc["subsets"]) == RULER_TASKS
    for metrics in doc["subsets"].values():
        assert metrics["complete"] and metrics["n_scored"] == 2 and set(metrics["by_length"]) == {"1536", "2048"}
        assert all(1300 < t <= 2046 for t in metrics["tokens_by_length"].values())  # fitted: prompt + 2 <= length
    assert set(doc["summary"]["by_length"]) == {"1536", "2048"} and "effective_length" in doc["summary"]
    assert collect_main(["--all", "--results-dir", str(results), "--no-plots"]) == 0
    table = (results / "summary" / "ruler_by_length.md").read_text().splitlines()
    assert table[0] == "| experiment | model | method | task | 1536 | 2048 | average |"
    assert len(table) == 2 + 13 + 1  # header, rule, 13 tasks, the average row
    main = (results / "summary" / "ruler.md").read_text().splitlines()[0]
    assert "| acc@1536 | acc@2048 |" in main and "| effective_length |" in main


def test_ruler_curve_figure(tmp_path):
    from harness.stages.plots import draw

    docs = [{"exp_name": f"e-{m}", "model": "m", "method": m, "windows": {"original_window": 4096},
             "summary": {"by_length": {"4096": 90.0, "8192": v}, "threshold": 85.6}} for m, v in (("a", 50.0),
                                                                                                    ("b", 88.0))]
    paths = draw("ruler", docs, tmp_path)
    assert [p.name for p in paths] == ["ruler_m.png"] and paths[0].stat().st_size > 0
    mtime = paths[0].stat().st_mtime_ns
    assert draw("ruler", docs, tmp_path) == paths and paths[0].stat().st_mtime_ns == mtime  # unchanged data
