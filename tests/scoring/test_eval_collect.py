"""gali-eval / gali-collect on hand-written result directories (config.json + provenance.json + predictions JSONL).

Every expected number below is computed by hand from the fixture records (see the comments next to them).
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from PIL import Image

from harness.cli.collect import main as collect_main
from harness.cli.evaluate import main as eval_main
from harness.core.results import ExperimentDir, JsonlAppender, find_experiments
from harness.stages.collect import collect, comparison_table, merge_orders
from harness.stages.evaluate import evaluate_experiment
from harness.stages.plots import draw
from harness.tasks import TASKS
from harness.tasks.figures.needle import needle_grid
from harness.tasks.scoring.perplexity import ppl_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# needle: pass/fail of trials T0, T1 per (length, depth %); prompt lengths per nominal length
NEEDLE_PASS = {(1024, 50): [1, 1], (1024, 100): [1, 1], (2048, 50): [1, 0], (2048, 100): [1, 1],
               (4096, 50): [0, 0], (4096, 100): [1, 0]}
NEEDLE_PLEN = {1024: 1000, 2048: 2010, 4096: 4100}


def write_exp(root: Path, name: str, cfg: dict, records: dict[str, list[dict]], window: int | None = 2000) -> Path:
    """An experiment directory as gali-run leaves it."""
    d = root / name
    (d / "predictions").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"exp_name": name, "results_dir": str(root), "seed": 42, **cfg}))
    if window is not None:
        (d / "provenance.json").write_text(json.dumps({"original_window": window, "seed": 42}))
    for subset, recs in records.items():
        (d / "predictions" / f"{subset}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def needle_record(length: int, depth: int, trial: int, passed: bool) -> dict:
    return {"id": f"L{length}-D{depth}-T{trial}", "subset": "needle", "seed": 1, "prediction": "x",
            "prompt_len": NEEDLE_PLEN[length], "passed": passed, "references": ["1"],
            "meta": {"length": length, "depth": float(depth), "trial": trial}}


def needle_cfg(method: str = "original", **extra) -> dict:
    return {"task": "needle", "model": "org/model-a", "method": method, "max_pe": 4096, "times": 2,
            "task_options": {"lengths": [1024, 2048, 4096], "depths": 2}, **extra}


def needle_exp(root: Path, name: str = "model-a-32k-to-64k", keep=None, **kw) -> Path:
    recs = [needle_record(length, depth, t, bool(p)) for (length, depth), ps in NEEDLE_PASS.items()
            for t, p in enumerate(ps) if keep is None or keep(length, depth, t)]
    return write_exp(root, name, needle_cfg(**kw.pop("cfg", {})), {"needle": recs}, **kw)


def longbench_exp(root: Path, name: str, method: str, with_count: bool = True) -> Path:
    def rec(i, pred, answers, plen, subset):
        return {"id": f"{subset}-{i}", "subset": subset, "prediction": pred, "answers": answers, "all_classes": None,
                "length": 100, "truncated": False, "prompt_len": plen, "meta": {"index": i}}

    records = {"qasper": [rec(0, "dog", ["cat"], 1000, "qasper"),  # F1 0
                          rec(1, "the cat sat", ["cat sat"], 3000, "qasper")]}  # F1 1 ("the" is dropped)
    if with_count:
        records["passage_count"] = [rec(0, "There are 3 paragraphs", ["3"], 100, "passage_count"),  # 1/1
                                    rec(1, "2 or 3", ["3"], 2500, "passage_count")]  # 1/2
    params = {"factor": 2.0} if method != "original" else {}
    cfg = {"task": "longbench", "model": "org/model-a", "method": method, "max_pe": 4096, "max_examples": 2,
           "data_dir": str(root.parent / "no-data"), "subsets": list(records), "params": params}
    return write_exp(root, name, cfg, records, window=2048)


def leval_exp(root: Path) -> Path:
    def rec(i, subset, gt, pred, plen):
        return {"id": f"{subset}-{i}", "subset": subset, "prediction": pred, "gt": gt, "evaluation": "exam",
                "prompt_len": plen, "meta": {"doc": 0, "q": i}}

    records = {"gsm100": [rec(0, "gsm100", "The answer is 42", "The answer is 42", 100),  # 1
                          rec(1, "gsm100", "The answer is 8", "The answer is 7", 3000),  # 0
                          rec(2, "gsm100", "The answer is 5", "so The answer is 5", 3000)],  # 1
               "coursera": [rec(0, "coursera", "AB", "AB", 100), rec(1, "coursera", "C", "B", 100)]}  # 1, 0
    cfg = {"task": "leval", "model": "org/model-a", "method": "original", "max_pe": 4096,
           "data_dir": str(root.parent / "no-data")}
    return write_exp(root, "leval-orig", cfg, records, window=2048)


def pg19_exp(root: Path, name: str, method: str, nlls: list[list[float]]) -> Path:
    docs = root.parent / "docs"
    docs.mkdir(exist_ok=True)
    for i in range(2):
        (docs / f"d{i}.txt").write_text("some text " * 10)
    recs = []
    for i, nll in enumerate(nlls):
        rel = f"nll/text_files/d{i}.npz"
        recs.append({"id": f"d{i}", "subset": "text_files", "prediction": None, "prompt_len": len(nll) + 1,
                     "n_scored": len(nll), "nll_file": rel, "meta": {"index": i}})
    cfg = {"task": "pg19", "model": "org/model-a", "method": method, "max_pe": 8,
           "params": {"factor": 2.0} if method != "original" else {},
           "task_options": {"text_files": [str(docs / "*.txt")], "ppl_lengths": [2, 4]}}
    d = write_exp(root, name, cfg, {"text_files": recs}, window=5)
    for i, nll in enumerate(nlls):
        (d / "nll" / "text_files").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(d / "nll" / "text_files" / f"d{i}.npz", nll=np.array(nll, dtype=np.float32))
    return d


LN2, LN4 = math.log(2), math.log(4)


# ----------------------------------------------------------------------------------------------------------- eval
def test_needle_eval_hand_checked(tmp_path):
    needle_exp(tmp_path)
    doc = evaluate_experiment(ExperimentDir(tmp_path, "model-a-32k-to-64k"))
    m = doc["subsets"]["needle"]
    assert m["score"] == pytest.approx(100 * 8 / 12, abs=0.01)  # 8 of 12 trials pass
    assert m["by_length"] == {"1024": 100.0, "2048": 75.0, "4096": 25.0}
    assert m["cells"]["2048|50"] == 50.0 and m["cells"]["4096|50"] == 0.0 and m["cells"]["1024|100"] == 100.0
    assert (m["n_scored"], m["n_errors"], m["n_expected"], m["complete"]) == (12, 0, 12, True)
    # windows come from provenance/config, not from the "32k-to-64k" in the name
    assert doc["windows"]["original_window"] == 2000 and doc["windows"]["target_window"] == 4096
    assert doc["windows"]["original_window_source"] == "provenance.json"
    beyond = m["beyond_original"]  # prompt_len >= 2000: the 2048 and 4096 trials, 3 + 1 of 8 pass
    assert (beyond["threshold"], beyond["n_scored"], beyond["n_of"], beyond["score"]) == (2000, 8, 12, 50.0)
    assert beyond["by_length"] == {"2048": 75.0, "4096": 25.0}
    target = m["beyond_target"]  # prompt_len >= 4096: the 4096 trials, 1 of 4 passes
    assert (target["threshold"], target["n_scored"], target["score"]) == (4096, 4, 25.0)
    assert doc["length_subsets"]["beyond_original"] == {"threshold": 2000, "n_scored": 8,
                                                       "summary": {"average": 50.0}}


def test_window_fallbacks(tmp_path):
    # no provenance.json: a shard's provenance, else config.json's ori_max_position_embeddings, else none
    needle_exp(tmp_path, "a", window=None, cfg={"ori_max_position_embeddings": 4000})
    doc = evaluate_experiment(ExperimentDir(tmp_path, "a"))
    assert doc["windows"]["original_window"] == 4000
    assert doc["subsets"]["needle"]["beyond_original"]["score"] == 25.0  # only the 4100-token trials
    (tmp_path / "a" / "provenance.shard-1-of-2.json").write_text(json.dumps({"original_window": 1000}))
    doc = evaluate_experiment(ExperimentDir(tmp_path, "a"))
    assert doc["windows"]["original_window"] == 1000 and doc["windows"]["original_window_source"].startswith("prov")
    assert doc["subsets"]["needle"]["beyond_original"]["n_scored"] == 12
    needle_exp(tmp_path, "b", window=None, cfg={"max_pe": 8192})
    doc = evaluate_experiment(ExperimentDir(tmp_path, "b"))
    assert doc["windows"]["original_window"] is None and "beyond_original" not in doc["subsets"]["needle"]
    empty = doc["subsets"]["needle"]["beyond_target"]  # nothing reaches 8192 tokens
    assert (empty["score"], empty["n_scored"]) == (None, 0) and doc["length_subsets"]["beyond_target"]["n_scored"] == 0


def test_partial_predictions_scored_and_flagged(tmp_path):
    d = needle_exp(tmp_path, keep=lambda length, depth, t: length == 2048)  # 4 of 12 trials, 3 pass
    with (d / "predictions" / "needle.jsonl").open("a") as fh:
        error = {"id": "L4096-D50-T0", "subset": "needle", "error": "RuntimeError: OOM", "meta": {}}
        fh.write(json.dumps(error) + "\n")
    doc = evaluate_experiment(ExperimentDir(tmp_path, d.name))
    m = doc["subsets"]["needle"]
    assert (m["score"], m["n_scored"], m["n_errors"], m["n_expected"]) == (75.0, 4, 1, 12)
    assert m["complete"] is False and doc["complete"] is False


def test_eval_is_idempotent(tmp_path):
    needle_exp(tmp_path)
    assert eval_main(["--all", "--results-dir", str(tmp_path)]) == 0
    first = (tmp_path / "model-a-32k-to-64k" / "scores.json").read_bytes()
    assert eval_main(["--exp", "model-a-*", "--results-dir", str(tmp_path)]) == 0
    assert (tmp_path / "model-a-32k-to-64k" / "scores.json").read_bytes() == first


def test_torn_last_line_is_ignored(tmp_path):
    d = needle_exp(tmp_path)
    with (d / "predictions" / "needle.jsonl").open("a") as fh:
        fh.write('{"id": "L9999-D50-T0", "subset": "needle", "prompt_len": 9')  # crash mid-write
    doc = evaluate_experiment(ExperimentDir(tmp_path, d.name))
    assert doc["subsets"]["needle"]["n_scored"] == 12 and doc["subsets"]["needle"]["by_length"]["4096"] == 25.0


def test_eval_while_a_run_appends(tmp_path):
    """A writer appends records in two flushed halves (so readers do see torn lines) while gali-eval scores."""
    d = needle_exp(tmp_path, keep=lambda *a: False)
    path = d / "predictions" / "needle.jsonl"
    records = [needle_record(length, depth, t, bool(p)) for (length, depth), ps in NEEDLE_PASS.items()
               for t, p in enumerate(ps)] * 25  # 300 lines, later lines repeat ids (latest record wins)
    done = threading.Event()

    def writer() -> None:
        try:
            with JsonlAppender(path) as out:
                for r in records:
                    line = (json.dumps(r) + "\n").encode()
                    os.write(out.fd, line[: len(line) // 2])
                    os.write(out.fd, line[len(line) // 2:])
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    counts = []
    while not done.is_set():
        counts.append(evaluate_experiment(ExperimentDir(tmp_path, d.name))["subsets"]["needle"]["n_scored"])
    thread.join()
    final = evaluate_experiment(ExperimentDir(tmp_path, d.name))["subsets"]["needle"]
    assert counts == sorted(counts) and all(c <= 12 for c in counts)
    assert final["n_scored"] == 12 and final["score"] == pytest.approx(100 * 8 / 12, abs=0.01)


def test_longbench_leval_pg19_eval(tmp_path):
    res = tmp_path / "res"
    longbench_exp(res, "lb-orig", "original")
    leval_exp(res)
    pg19_exp(res, "pg-orig", "original", [[LN2] * 6, [LN4] * 3])
    assert eval_main(["--all", "--results-dir", str(res)]) == 0
    lb = json.loads((res / "lb-orig" / "scores.json").read_text())
    assert list(lb["subsets"]) == ["qasper", "passage_count"]  # the task's dataset order, not alphabetical
    assert lb["subsets"]["qasper"]["score"] == 50.0 and lb["subsets"]["passage_count"]["score"] == 75.0
    assert lb["summary"]["average"] == 62.5 and lb["complete"]  # max_examples = 2 caps the expected 200
    assert lb["subsets"]["qasper"]["beyond_original"]["score"] == 100.0  # prompt_len >= 2048: the correct one
    assert lb["subsets"]["passage_count"]["beyond_original"]["score"] == 50.0
    assert lb["length_subsets"]["beyond_original"]["summary"]["average"] == 75.0
    le = json.loads((res / "leval-orig" / "scores.json").read_text())
    assert le["subsets"]["gsm100"]["score"] == pytest.approx(66.6667)  # 2 of 3
    assert le["subsets"]["coursera"]["score"] == 50.0
    assert le["subsets"]["gsm100"]["beyond_original"]["score"] == 50.0  # rows 1 and 2
    assert le["subsets"]["coursera"]["beyond_original"]["n_scored"] == 0
    pg = json.loads((res / "pg-orig" / "scores.json").read_text())["subsets"]["text_files"]
    # L=2: both documents, exp((2 ln2 + 2 ln4) / 4) = sqrt(8); L=4: only the 6-token document, PPL 2
    assert pg["ppl"]["2"]["ppl_token_weighted"] == pytest.approx(math.sqrt(8), rel=1e-5)
    assert pg["ppl"]["2"]["ppl_mean_of_docs"] == pytest.approx(3.0, rel=1e-5)
    assert pg["score"] == pytest.approx(2.0, rel=1e-4) and pg["complete"]
    assert pg["beyond_original"]["n_scored"] == 1  # prompt_len 7 >= 5 > 4
    assert pg["beyond_original"]["ppl"]["2"]["ppl_token_weighted"] == pytest.approx(2.0, rel=1e-5)
    assert pg["beyond_target"]["n_scored"] == 0  # no document reaches max_pe = 8 tokens


# -------------------------------------------------------------------------------------------------------- collect
def build_results(root: Path) -> None:
    needle_exp(root, "needle-orig")
    needle_exp(root, "needle-ntk", keep=lambda length, depth, t: length == 2048, cfg={"method": "ntk",
                                                                                      "params": {"factor": 2.0}})
    longbench_exp(root, "lb-orig", "original")
    longbench_exp(root, "lb-ntk", "ntk", with_count=False)
    leval_exp(root)
    pg19_exp(root, "pg-orig", "original", [[LN2] * 6, [LN4] * 3])
    pg19_exp(root, "pg-ntk", "ntk", [[LN2] * 6, [LN2] * 3])
    assert eval_main(["--all", "--results-dir", str(root)]) == 0


def sheet_rows(ws) -> list[dict]:
    rows = list(ws.iter_rows(values_only=True))
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def test_collect_workbook_tables_and_figures(tmp_path, capsys):
    res = tmp_path / "res"
    build_results(res)
    out = tmp_path / "out" / "all.xlsx"
    assert collect_main(["--all", "--results-dir", str(res), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["comparison", "by_length", "leval", "longbench", "needle", "pg19", "leval_beyond_orig",
                             "longbench_beyond_orig", "needle_beyond_orig", "needle_beyond_target", "pg19_beyond_orig"]
    needle = sheet_rows(wb["needle"])
    assert [r["experiment"] for r in needle] == ["needle-ntk", "needle-orig"]  # sorted by model, method, name
    ntk, orig = needle
    assert (orig["needle"], orig["acc@1024"], orig["acc@4096"], orig["complete"]) == (pytest.approx(66.67), 100, 25,
                                                                                      True)
    assert (ntk["needle"], ntk["complete"], ntk["incomplete"], ntk["n_scored"]) == (75, False, "needle 4/12", 4)
    assert ntk["p:factor"] == 2.0 and orig["p:factor"] is None
    assert orig["original_window"] == 2000 and orig["target"] == 4096
    assert orig["average_beyond_orig"] == 50 and orig["n_beyond_orig"] == 8
    lb = {r["experiment"]: r for r in sheet_rows(wb["longbench"])}
    header = [c.value for c in wb["longbench"][1]]
    assert header.index("qasper") < header.index("passage_count") < header.index("average")
    assert (lb["lb-orig"]["average"], lb["lb-orig"]["complete"]) == (62.5, True)
    assert lb["lb-ntk"]["complete"] is False and lb["lb-ntk"]["incomplete"] == "missing passage_count"
    assert lb["lb-ntk"]["passage_count"] is None and lb["lb-ntk"]["average"] == 50
    pg = {r["experiment"]: r for r in sheet_rows(wb["pg19"])}
    assert pg["pg-orig"]["ppl@2"] == pytest.approx(math.sqrt(8), abs=1e-4) and pg["pg-ntk"]["ppl@2"] == pytest.approx(2)
    le = sheet_rows(wb["leval"])[0]
    assert le["average"] == pytest.approx((66.6667 + 50) / 2, abs=0.01)
    # the same tables as CSV and markdown, plus the beyond-window tables and the comparison table
    with (out.parent / "needle.csv").open() as fh:
        assert [r["experiment"] for r in csv.DictReader(fh)] == ["needle-ntk", "needle-orig"]
    with (out.parent / "longbench_beyond_orig.csv").open() as fh:
        rows = {r["experiment"]: r for r in csv.DictReader(fh)}
    assert float(rows["lb-orig"]["average"]) == 75.0 and rows["lb-orig"]["threshold"] == "2048"
    assert "| needle-orig |" in printed and "| lb-ntk |" in printed and "comparison" in printed
    # beyond-window tables exist where some record reaches the threshold (nothing reaches 4096 but needle's 4100)
    assert sorted(p.stem for p in out.parent.glob("*_beyond_*.csv")) == [
        "leval_beyond_orig", "longbench_beyond_orig", "needle_beyond_orig", "needle_beyond_target", "pg19_beyond_orig"]
    # sheets, beyond, comparison (method x length), comparison (all experiments) first
    assert (out.parent / "summary.md").read_text().count("\n## ") == 4 + 5 + 1 + 1 - 1
    figures = sorted(p.name for p in (out.parent / "figures").iterdir())
    assert figures == ["leval_model-a.png", "longbench_model-a.png", "needle_length_model-a.png",
                       "needle_methods_model-a.png", "needle_needle-ntk.png", "needle_needle-orig.png",
                       "pg19_ppl_model-a.png"]
    for name in figures:
        path = out.parent / "figures" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150


def test_collect_is_stable_and_globs(tmp_path):
    res = tmp_path / "res"
    build_results(res)
    out = tmp_path / "s" / "summary.xlsx"
    collect(find_experiments(res), out, plots=False)
    first = {p.name: p.read_bytes() for p in out.parent.glob("*.csv")}
    collect(list(reversed(find_experiments(res))), out, plots=False)
    assert {p.name: p.read_bytes() for p in out.parent.glob("*.csv")} == first
    result = collect(find_experiments(res, ["needle-*", "pg-orig"]), tmp_path / "g" / "x.xlsx", plots=False)
    assert sorted(result["tables"]) == ["needle", "pg19"] and len(result["tables"]["needle"]) == 2
    assert not (tmp_path / "g" / "figures").exists()


def test_comparison_table_and_helpers():
    docs = [{"task": "pg19", "model": "m", "method": "ntk", "exp_name": "p2",
             "subsets": {"s": {"ppl": {"1024": {"ppl_token_weighted": 9.5}, "2048": {"ppl_token_weighted": None}}}}},
            {"task": "needle", "model": "m", "method": "gali", "exp_name": "n1",
             "subsets": {"needle": {"by_length": {"2048": 50.0, "1024": 100.0}}}},
            {"task": "pg19", "model": "m", "method": "gali", "exp_name": "p1",
             "subsets": {"s": {"ppl": {"1024": 7.25, "2048": float("nan")}}}}]
    df = comparison_table(docs)
    assert list(df.columns) == ["model", "method", "experiment", "metric", 1024, 2048]
    assert list(zip(df["method"], df["metric"])) == [("gali", "needle_acc"), ("gali", "ppl"), ("ntk", "ppl")]
    assert df.iloc[0][2048] == 50.0 and df.iloc[1][1024] == 7.25 and df.iloc[2][1024] == 9.5
    assert math.isnan(df.iloc[1][2048]) and math.isnan(df.iloc[2][2048])
    assert comparison_table([]).empty
    assert merge_orders([["a", "c"], ["a", "b", "c"], ["d"]]) == ["d", "a", "b", "c"]
    assert ppl_curve({"2048": 3.0, "1024": {"ppl_mean_of_docs": 5.0}, "x": 1.0, "4096": None, "8192": "7"}) == [
        (1024, 5.0), (2048, 3.0)]
    lengths, depths, grid = needle_grid({"subsets": {"needle": {"cells": {"2048|50": 0.0, "1024|50": 100.0,
                                                                          "1024|100": None, "bad": 1}}}})
    assert (lengths, depths, grid) == ([1024.0, 2048.0], [50.0, 100.0], [[100.0, 0.0], [None, None]])


def test_plotters_tolerate_empty_documents(tmp_path):
    empty = {"exp_name": "e", "model": "m", "method": "x", "subsets": {}, "summary": {}}
    for task in TASKS.names():
        assert draw(task, [{**empty, "task": task}], tmp_path / task) == []


def test_no_results_clear_message(tmp_path, capsys):
    assert collect_main(["--all", "--results-dir", str(tmp_path / "none")]) == 2
    assert "found no experiment" in capsys.readouterr().err
    needle_exp(tmp_path)  # an experiment that was never evaluated
    assert collect_main(["--all", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has been evaluated" in err and "gali-eval --all" in err and "Traceback" not in err
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 2


def test_stale_scores_warned(tmp_path, caplog):
    d = needle_exp(tmp_path)
    evaluate_experiment(ExperimentDir(tmp_path, d.name))
    pred = d / "predictions" / "needle.jsonl"
    stamp = (d / "scores.json").stat().st_mtime + 5
    os.utime(pred, (stamp, stamp))
    collect(find_experiments(tmp_path), tmp_path / "s" / "s.xlsx", plots=False)
    assert "predictions changed after scoring" in caplog.text


def test_figures_are_redrawn_only_when_their_data_change(tmp_path):
    doc = {"exp_name": "e", "model": "m", "method": "gali", "windows": {"original_window": 1500},
           "subsets": {"needle": {"score": 50.0, "cells": {"1024|50": 100.0, "2048|50": 0.0}}}}
    path, _length_plot = draw("needle", [doc], tmp_path)
    with Image.open(path) as im:
        first_sig = im.text["gali-signature"]
    os.utime(path, (1, 1))  # an old file: rewriting it would change the mtime
    assert draw("needle", [doc], tmp_path)[0] == path and path.stat().st_mtime == 1
    doc["subsets"]["needle"]["cells"]["2048|50"] = 100.0
    assert draw("needle", [doc], tmp_path)[0] == path and path.stat().st_mtime > 1
    with Image.open(path) as im:
        assert im.text["gali-signature"] != first_sig


# ------------------------------------------------------------------------------------------- broken files (class 9)
BROKEN_LINES = ['{"id": "L1024-D50-T0", "subset": "needle", "prompt_len"', "[1, 2, 3]", "42", '"just a string"',
                '{"subset": "needle", "meta": {}}', '{"id": 5, "meta": {}}', '{"id": "L1024-D50-T9", "meta": "x"}',
                '{"id": "x", "meta": [1]}']


@pytest.mark.parametrize("bad", BROKEN_LINES)
def test_eval_skips_broken_lines_and_scores_the_rest(tmp_path, caplog, bad):
    clean = evaluate_experiment(ExperimentDir(tmp_path, needle_exp(tmp_path, "clean").name))
    d = needle_exp(tmp_path, "broken")
    pred = d / "predictions" / "needle.jsonl"
    lines = pred.read_text().splitlines()
    pred.write_text("\n".join([*lines[:5], bad, *lines[5:]]) + "\n")
    before = pred.read_bytes()
    doc = evaluate_experiment(ExperimentDir(tmp_path, "broken"))
    assert doc["subsets"]["needle"]["n_scored"] == 12
    assert doc["subsets"]["needle"]["score"] == clean["subsets"]["needle"]["score"]
    assert "broken line" in caplog.text and str(pred) in caplog.text
    assert pred.read_bytes() == before  # scoring never rewrites predictions


@pytest.mark.parametrize("config_text", ["[1, 2]", "{not json", '{"task": "needle"}', ""])
def test_eval_all_names_a_broken_experiment_and_scores_the_others(tmp_path, capsys, caplog, config_text):
    needle_exp(tmp_path, "a-good")
    bad = needle_exp(tmp_path, "b-bad")
    (bad / "config.json").write_text(config_text)
    assert eval_main(["--all", "--results-dir", str(tmp_path)]) == 2
    assert (tmp_path / "a-good" / "scores.json").is_file() and not (bad / "scores.json").exists()
    assert "b-bad: not scored" in caplog.text and "Traceback" not in capsys.readouterr().err


BROKEN_SCORES = [[], "a string", 3, {"subsets": [1, 2]}, {"task": "needle", "subsets": {"needle": "x"}},
                 {"task": "needle", "subsets": {"needle": {"n_scored": "many", "score": 1}}},
                 {"task": "needle", "subsets": {"needle": {"score": {"nested": 1}}}},
                 {"task": "needle", "summary": [1], "subsets": {}}, {"task": "needle", "params": "factor=2"},
                 {"task": "needle", "length_subsets": {"beyond_original": 7}, "subsets": {}},
                 {"task": "needle", "subsets": {}, "speed": [1, 2]}]


@pytest.mark.parametrize("doc", BROKEN_SCORES, ids=[str(i) for i in range(len(BROKEN_SCORES))])
def test_collect_skips_and_names_a_broken_scores_file(tmp_path, caplog, doc):
    good = needle_exp(tmp_path, "good")
    evaluate_experiment(ExperimentDir(tmp_path, good.name))
    bad = needle_exp(tmp_path, "bad")
    (bad / "scores.json").write_text(json.dumps(doc))
    result = collect(find_experiments(tmp_path), tmp_path / "out" / "s.xlsx", plots=False)
    assert list(result["tables"]["needle"]["experiment"]) == ["good"]
    assert "bad: broken" in caplog.text and str(bad / "scores.json") in caplog.text
    assert (tmp_path / "out" / "s.xlsx").is_file()


@pytest.mark.parametrize("where", ["parent-is-file", "out-is-dir"])
def test_collect_unwritable_out_is_one_line(tmp_path, capsys, where):
    evaluate_experiment(ExperimentDir(tmp_path, needle_exp(tmp_path).name))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / "s.xlsx" if where == "parent-is-file" else tmp_path / "dir.xlsx"
    if where == "out-is-dir":
        out.mkdir()
    assert collect_main(["--all", "--results-dir", str(tmp_path), "--out", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err
