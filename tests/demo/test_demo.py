"""`gali-demo run` end to end on the bundled lab model: every method once (module fixture), the ordering it must
show, and README's demo table equal to what the demo computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli.demo import main as demo_main
from harness.demo.demos import demo_configs, generated_block, replace_generated_block, run_demo, tables_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def lab_demo(tmp_path_factory):
    return run_demo("lab", str(tmp_path_factory.mktemp("demo") / "demo"))


def test_lab_demo_configs_cover_the_methods():
    methods = {p.stem.split("-", 2)[2] for p in demo_configs("lab")}
    assert {"original", "gali", "selfextend", "chunkllama", "ntk", "dynamic_ntk", "yarn"} <= methods


def test_lab_demo_shows_original_breaking_and_gali_repairing(lab_demo):
    ppl = lab_demo.tables["ppl"]
    assert list(ppl.index)[:2] == ["original", "gali"]
    assert list(ppl.columns) == ["256", "512", "1024", "2048"]
    # inside the window GALI is the original model; at 8x the window original is clearly worse
    assert abs(ppl.loc["gali", "256"] - ppl.loc["original", "256"]) < 1e-2
    assert ppl.loc["original", "2048"] > 1.15 * ppl.loc["original", "256"]
    for method in ("gali", "selfextend", "chunkllama", "yarn"):
        assert ppl.loc[method, "2048"] < 0.9 * ppl.loc["original", "2048"], method
    assert lab_demo.workbook.is_file() and lab_demo.figures and all(f.is_file() for f in lab_demo.figures)


def test_readme_demo_table_is_what_the_demo_computes(lab_demo):
    # README's table is written by `make readme-tables`; rerun it when a change moves the numbers
    assert generated_block(README.read_text(encoding="utf-8"), "demo-lab") == tables_markdown(lab_demo, False)


def test_replace_generated_block_round_trip():
    text = "a\n<!-- generated:t (note) -->\nold\n<!-- /generated:t -->\nb\n"
    new = replace_generated_block(text, "t", "| x |\n")
    assert new == "a\n<!-- generated:t (note) -->\n| x |\n<!-- /generated:t -->\nb\n"
    assert generated_block(new, "t") == "| x |"


def test_demo_cli_resumes_and_prints_the_table(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert demo_main(["run", "--results-dir", out, "--methods", "original"]) == 0
    first = capsys.readouterr().out
    assert demo_main(["run", "--results-dir", out, "--methods", "original"]) == 0  # resumes: nothing left to run
    second = capsys.readouterr().out
    assert "| original |" in first and "figure:" in first
    table = [line for line in first.splitlines() if line.startswith("| original |")]
    assert table == [line for line in second.splitlines() if line.startswith("| original |")]
