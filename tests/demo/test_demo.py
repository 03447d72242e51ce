"""`gali-demo run` end to end on the bundled lab model (two of its methods, to keep the suite fast)."""

from __future__ import annotations

from harness.cli.demo import main as demo_main
from harness.demo import demo_configs, run_demo


def test_lab_demo_configs_cover_the_methods():
    methods = {p.stem.split("-", 2)[2] for p in demo_configs("lab")}
    assert {"original", "gali", "selfextend", "chunkllama", "ntk", "dynamic_ntk", "yarn"} <= methods


def test_lab_demo_shows_original_breaking_and_gali_repairing(tmp_path):
    result = run_demo("lab", str(tmp_path / "demo"), methods=["original", "gali"])
    ppl = result.tables["ppl"]
    assert list(ppl.index) == ["original", "gali"]
    assert list(ppl.columns) == ["256", "512", "1024", "2048"]
    # inside the window GALI is the original model; at 8x the window original is clearly worse
    # (measured: 42.7 both at 256; 57.1 vs 42.6 at 2048)
    assert abs(ppl.loc["gali", "256"] - ppl.loc["original", "256"]) < 1e-2
    assert ppl.loc["original", "2048"] > 1.15 * ppl.loc["original", "256"]
    assert ppl.loc["gali", "2048"] < 0.9 * ppl.loc["original", "2048"]
    assert result.workbook.is_file() and result.figures and all(f.is_file() for f in result.figures)


def test_demo_cli_resumes_and_prints_the_table(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert demo_main(["run", "--results-dir", out, "--methods", "original"]) == 0
    first = capsys.readouterr().out
    assert demo_main(["run", "--results-dir", out, "--methods", "original"]) == 0  # resumes: nothing left to run
    second = capsys.readouterr().out
    assert "| original |" in first and "figure:" in first
    table = [line for line in first.splitlines() if line.startswith("| original |")]
    assert table == [line for line in second.splitlines() if line.startswith("| original |")]
