"""Per-experiment speed/memory summary, the versioned results.json, and the formatted workbook."""

from __future__ import annotations

import json

import openpyxl
import pytest

from harness.cli.collect import main as collect_main
from harness.core.results import ExperimentDir
from harness.stages.evaluate import evaluate_experiment
from harness.stages.summary import RESULTS_SCHEMA, RESULTS_SCHEMA_VERSION, speed_summary
from tests.scoring.test_eval_collect import build_results, needle_exp, sheet_rows


def test_speed_summary_hand_checked():
    records = [{"prefill_s": 0.1, "decode_tok_s": 10.0, "peak_mem_mb": 100.0, "seconds": 1.0, "prompt_len": 10},
               {"prefill_s": 0.3, "decode_tok_s": None, "peak_mem_mb": 300.0, "seconds": 2.0, "prompt_len": 30},
               {"prefill_s": 0.2, "decode_tok_s": 30.0, "peak_mem_mb": 200.0, "seconds": 4.0, "prompt_len": 20}]
    assert speed_summary(records) == {"n": 3, "median_prefill_s": 0.2, "median_decode_tok_s": 20.0,
                                      "peak_mem_mb": 300.0, "median_seconds": 2.0, "total_seconds": 7.0,
                                      "median_prompt_len": 20.0}
    assert speed_summary([{"prompt_len": 5}])["median_prefill_s"] is None


def test_results_json_is_versioned_and_complete(tmp_path):
    d = needle_exp(tmp_path)
    lines = (d / "predictions" / "needle.jsonl").read_text().splitlines()
    timed = [json.dumps({**json.loads(x), "prefill_s": 0.5 + i, "peak_mem_mb": 10.0 * i}) for i, x in enumerate(lines)]
    (d / "predictions" / "needle.jsonl").write_text("\n".join(timed) + "\n")
    scores = evaluate_experiment(ExperimentDir(tmp_path, d.name))
    doc = json.loads((d / "results.json").read_text())
    assert (doc["schema"], doc["schema_version"]) == (RESULTS_SCHEMA, RESULTS_SCHEMA_VERSION) == (
        "gali-harness/results", 1)
    assert doc["experiment"] == d.name and doc["task"] == "needle" and doc["original_window"] == 2000
    assert doc["datasets"]["needle"]["score"] == scores["subsets"]["needle"]["score"]
    assert doc["headline"] == scores["summary"] and doc["config"] == json.loads((d / "config.json").read_text())
    n = len(lines)  # 12 records: prefill 0.5 .. 11.5 -> median 6.0; peak 110
    assert doc["speed"]["n"] == n and doc["speed"]["median_prefill_s"] == pytest.approx(6.0)
    assert doc["speed"]["peak_mem_mb"] == 110.0 and doc["provenance"]["original_window"] == 2000


def test_workbook_is_formatted(tmp_path):
    res = tmp_path / "res"
    build_results(res)
    out = tmp_path / "out" / "summary.xlsx"
    assert collect_main(["--all", "--results-dir", str(res), "--out", str(out), "--no-plots"]) == 0
    wb = openpyxl.load_workbook(out)
    ws = wb["comparison"]
    header = [c.value for c in ws[1]]
    assert header[:6] == ["task", "model", "target", "original_window", "method", "p:factor"]
    assert header[-1] == "experiment" and {"score", "metric", "median_prefill_s", "peak_mem_mb"} <= set(header)
    rows = sheet_rows(ws)
    assert [(r["task"], r["method"]) for r in rows] == [
        ("leval", "original"), ("longbench", "ntk"), ("longbench", "original"), ("needle", "ntk"),
        ("needle", "original"), ("pg19", "ntk"), ("pg19", "original")]
    pg = {r["method"]: r for r in rows if r["task"] == "pg19"}
    assert pg["ntk"]["p:factor"] == 2.0 and pg["original"]["p:factor"] is None
    assert pg["original"]["metric"].startswith("perplexity at 4 tokens")
    assert pg["original"]["score"] == pytest.approx(2.0)  # PPL at 4 tokens: only d0 (ln 2 per token) reaches 4
    for sheet in wb.worksheets:
        assert all(c.font.bold for c in sheet[1]) and sheet.freeze_panes is not None
        assert sheet.freeze_panes.endswith("2") and sheet.auto_filter.ref.startswith("A1:")
        for j, cell in enumerate(sheet[1], 1):
            letter = openpyxl.utils.get_column_letter(j)
            assert sheet.column_dimensions[letter].width >= min(len(str(cell.value)), 48)
    assert wb["comparison"].freeze_panes == "F2"  # header and the identity columns up to the method stay visible
    assert (out.parent / "comparison_experiments.csv").is_file()
