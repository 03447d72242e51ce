"""A new user's workflow end to end on the bundled lab model: one matrix command (original + gali + selfextend on
needle and pg19, tiny sizes), gali-eval, gali-collect -> formatted workbook and figures; the audit trail (samples,
provenance), the rerunnable config.toml, and warnings kept out of the terminal."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

import openpyxl
import pytest

from harness.cli.collect import main as collect_main
from harness.cli.evaluate import main as eval_main
from harness.cli.run import main as run_main
from harness.core import provenance
from harness.core.results import iter_jsonl
from harness.core.runlog import run_log
from harness.methods.base import METHODS
from harness.model.loading import BUNDLED_MODELS
from harness.stages.samples import FULL_TEXT_MAX_TOKENS, HEAD_TAIL_TOKENS, ids_sha256, prompt_sample
from harness.tasks.data_identity import DATA_FILES

MATRIX = ["--model", "gali:lab", "--task", "needle,pg19", "--method", "original,gali,selfextend", "--max-pe", "512",
          "--set", "needle:times=1", "--set", "needle:task_options.lengths=[256,512]", "--set",
          "needle:task_options.depths=2", "--set", "needle:task_options.extra_new_tokens=2", "--set",
          "pg19:task_options.source=python_heldout", "--set", "pg19:task_options.ppl_lengths=[256,510]",
          "--set", "pg19:max_examples=1", "-q"]
EXPS = [f"lab-{t}-512-{m}" for t in ("needle", "pg19") for m in ("original", "gali", "selfextend")]


@pytest.mark.slow
def test_matrix_eval_collect_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GALI_CACHE", str(tmp_path / "cache"))  # the weight-hash cache
    res = tmp_path / "results"
    assert run_main([*MATRIX, "--results-dir", str(res)]) == 0
    assert sorted(p.name for p in res.iterdir()) == sorted(EXPS)
    assert eval_main(["--all", "--results-dir", str(res), "-q"]) == 0
    assert collect_main(["--all", "--results-dir", str(res), "-q"]) == 0
    capsys.readouterr()
    summary = res / "summary"
    wb = openpyxl.load_workbook(summary / "summary.xlsx")
    assert wb.sheetnames[:4] == ["comparison", "by_length", "needle", "pg19"]
    rows = list(wb["comparison"].iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    assert [(r[header.index("task")], r[header.index("method")]) for r in body] == [
        ("needle", "gali"), ("needle", "original"), ("needle", "selfextend"),
        ("pg19", "gali"), ("pg19", "original"), ("pg19", "selfextend")]
    gali_pg = body[3]
    suggested = METHODS.get("gali").suggested_params(256, 512)["chunk_coe"]  # matrix cells take the suggestion
    assert gali_pg[header.index("p:chunk_coe")] == suggested and gali_pg[header.index("score")] > 1  # a perplexity
    assert body[0][header.index("median_prefill_s")] > 0 and body[0][header.index("peak_mem_mb")] is not None
    assert wb["comparison"].freeze_panes and wb["comparison"].auto_filter.ref
    figures = sorted(p.name for p in (summary / "figures").iterdir())
    assert figures == sorted([*(f"needle_{e}.png" for e in EXPS[:3]), "needle_length_gali_lab.png",
                              "needle_methods_gali_lab.png", "pg19_ppl_gali_lab.png"])

    exp = res / "lab-needle-512-gali"
    # the audit trail: prompts in the records, provenance, results.json
    rec = next(iter_jsonl(exp / "predictions" / "needle.jsonl"))
    [sample] = rec["samples"]
    assert sample["call"] == "generate" and sample["n_tokens"] == rec["prompt_len"]
    assert "The pass key is" in sample["text"] and len(sample["ids_sha256"]) == 64
    prov = json.loads((exp / "provenance.json").read_text())
    assert prov["command"] and prov["cwd"]  # the command line of this process (pytest here)
    assert set(prov["git"]) == {"commit", "dirty"} and "torch" in prov["packages"] and prov["cpu"]
    weights = BUNDLED_MODELS["gali:lab"] / "model.safetensors"
    assert prov["model_identity"]["weights_sha256"] == {
        "model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    results = json.loads((exp / "results.json").read_text())
    assert results["schema_version"] == 1 and results["method"] == "gali" and results["speed"]["n"] == 4
    # the saved config.toml reruns the same experiment: nothing left to do, nothing refused
    before = (exp / "predictions" / "needle.jsonl").read_bytes()
    assert run_main(["--cfg", str(exp / "config.toml"), "-q"]) == 0
    assert (exp / "predictions" / "needle.jsonl").read_bytes() == before
    assert (exp / "logs" / "run.log").is_file()


def test_prompt_sample_long_prompts_keep_hash_and_ends():
    class Tok:
        def decode(self, ids):
            return " ".join(map(str, ids))

    short = prompt_sample([1, 2, 3], Tok(), "generate")
    assert short == {"call": "generate", "n_tokens": 3, "ids_sha256": ids_sha256([1, 2, 3]), "text": "1 2 3"}
    ids = list(range(FULL_TEXT_MAX_TOKENS + 10))
    long = prompt_sample(ids, Tok(), "token_nll")
    assert "text" not in long and long["n_tokens"] == len(ids)
    assert long["head"].split()[0] == "0" and len(long["head"].split()) == HEAD_TAIL_TOKENS
    assert long["tail"].split()[-1] == str(ids[-1])
    assert ids_sha256([1, 2]) == hashlib.sha256(b"\x01" + b"\0" * 7 + b"\x02" + b"\0" * 7).hexdigest()


def test_warnings_go_to_the_run_log_once(tmp_path, capsys):
    logging.getLogger().addHandler(handler := logging.StreamHandler())
    try:
        with run_log(tmp_path / "logs" / "run.log") as path:
            for _ in range(3):
                warnings.warn("a noisy third-party warning", FutureWarning, stacklevel=1)
            logging.getLogger("harness.test").warning("harness message")
    finally:
        logging.getLogger().removeHandler(handler)
    text = Path(path).read_text()
    assert text.count("FutureWarning: a noisy third-party warning") == 1 and "harness message" in text
    assert "noisy" not in capsys.readouterr().err


def test_data_files_are_hashed_with_their_source():
    from harness.tasks import datasets as data
    from tests.tasks.conftest import FIXTURES

    data.load_longbench("qasper", data_dir=str(FIXTURES / "longbench"))
    entry = next(e for e in provenance.data_identity(DATA_FILES) if e["path"].endswith("qasper.jsonl"))
    path = Path(entry["path"])
    assert entry["source"] == "data_dir" and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance.lock_packages()  # the lock file's or the project's dependencies


def test_file_hashes_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("GALI_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    assert provenance.file_sha256(f) == hashlib.sha256(b"weights").hexdigest()
    cache = provenance.hash_cache_path()
    [key] = json.loads(cache.read_text())
    cache.write_text(json.dumps({key: "from-cache"}))
    assert provenance.file_sha256(f) == "from-cache"  # not hashed again
    f.write_bytes(b"other weights")  # size (and mtime) change: hashed again
    assert provenance.file_sha256(f) == hashlib.sha256(b"other weights").hexdigest()
