"""The method x task matrix, scoped overrides, `extends`, `[matrix]`, and the resolved config.toml round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli.run import main as run_main
from harness.core.config import deep_merge
from harness.core.errors import HarnessError
from harness.core.results import ExperimentDir
from harness.core.tomlio import dumps, write_config_toml
from harness.stages.matrix import Axes, load_experiments, split_overrides
from harness.stages.resolve import load_plan

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

NEEDLE = ["needle:times=1", "needle:task_options.lengths=[256,512]", "needle:task_options.depths=2"]


def test_matrix_expands_one_experiment_per_cell():
    axes = Axes(model=["gali:lab"], task=["needle", "pg19"], method=["original", "gali", "repro_se"], max_pe=[1024])
    cfgs = [p.cfg for p in load_experiments([], [*NEEDLE, "pg19:task_options.source=python_heldout",
                                                 "gali:params.chunk_coe=64", "max_examples=2"], axes)]
    assert [c.exp_name for c in cfgs] == [
        "lab-needle-1k-original", "lab-needle-1k-gali", "lab-needle-1k-repro_se",
        "lab-pg19-1k-original", "lab-pg19-1k-gali", "lab-pg19-1k-repro_se"]
    assert [c.method for c in cfgs[:3]] == ["original", "gali", "selfextend"]  # aliases resolved
    assert all(c.max_pe == 1024 and c.max_examples == 2 for c in cfgs)
    by_name = {c.exp_name: c for c in cfgs}
    # scoped overrides reach only their cells; unset parameters take the method's suggestion for M=256, 1024
    assert by_name["lab-needle-1k-gali"].params["chunk_coe"] == 64
    assert by_name["lab-needle-1k-repro_se"].params["window_size"] == 64
    assert by_name["lab-needle-1k-original"].times == 1 and by_name["lab-pg19-1k-original"].times is None
    assert by_name["lab-pg19-1k-gali"].task_options["source"] == "python_heldout"


def test_matrix_default_params_and_errors():
    axes = Axes(model=["gali:lab"], task=["pg19"], method=["gali"], max_pe=[1024])
    [cfg] = [p.cfg for p in load_experiments([], [], axes, suggested=False)]
    assert cfg.params["chunk_coe"] == 3000  # the method's own default
    with pytest.raises(HarnessError, match="names no task or method of this matrix"):
        load_experiments([], ["selfextend:params.group_size=4"], axes)
    with pytest.raises(HarnessError, match="needs a method"):
        load_experiments([], [], Axes(model=["gali:lab"], task=["pg19"]))
    assert split_overrides(["a=1", "gali:params.x=y:z", "model=gali:lab"]) == (
        ["a=1", "model=gali:lab"], {"gali": ["params.x=y:z"]})


def test_matrix_over_a_config_file_and_extends(tmp_path):
    (tmp_path / "base.toml").write_text('model = "gali:lab"\ntask = "pg19"\nmax_pe = 512\nprompt_format = "raw"\n'
                                        '[task_options]\nsource = "python_heldout"\nppl_lengths = [256]\n')
    (tmp_path / "exp.toml").write_text('extends = "base.toml"\nmethod = "ntk"\nexp_name = "ppl"\n'
                                       "[task_options]\nppl_lengths = [256, 500]\n")
    cfg = load_plan(tmp_path / "exp.toml").cfg
    assert (cfg.task, cfg.method, cfg.max_pe, cfg.task_options["ppl_lengths"]) == ("pg19", "ntk", 512, [256, 500])
    assert cfg.task_options["source"] == "python_heldout"  # merged from the base table
    cfgs = [p.cfg for p in load_experiments([str(tmp_path / "exp.toml")], [], Axes(method=["original", "yarn"]))]
    assert [c.exp_name for c in cfgs] == ["ppl-original", "ppl-yarn"]
    # a [matrix] table in the file does the same, with a scoped table
    (tmp_path / "m.toml").write_text('extends = "base.toml"\n[matrix]\nmethod = ["original", "linear"]\n'
                                     "[matrix.linear]\nfactor = 3.0\n")
    cfgs = [p.cfg for p in load_experiments([str(tmp_path / "m.toml")])]
    assert [(c.exp_name, c.params.get("factor")) for c in cfgs] == [("m-original", None), ("m-linear", 3.0)]
    (tmp_path / "loop.toml").write_text('extends = "loop.toml"\n')
    with pytest.raises(HarnessError, match="loops"):
        load_plan(tmp_path / "loop.toml")
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_resolved_toml_round_trip(tmp_path):
    [plan] = load_experiments([], [*NEEDLE, "seed=7", 'system_prompt="say \\"hi\\"\\n"'],
                              Axes(model=["gali:lab"], task=["needle"], method=["gali"], max_pe=[1024]))
    cfg = plan.cfg
    exp = ExperimentDir(tmp_path, cfg.exp_name)
    exp.path.mkdir()
    path = write_config_toml(exp, cfg)
    again = load_plan(path).cfg
    assert again.fingerprint() == cfg.fingerprint() and again.exp_name == cfg.exp_name
    text = dumps({"a": 1.5, "b": [1, 2], "t": {"x": "y", "u": {"v": True}}, "n": None})
    assert tomllib.loads(text) == {"a": 1.5, "b": [1, 2], "t": {"x": "y", "u": {"v": True}}}


def test_cli_matrix_dry_run_and_flags(capsys):
    args = ["--model", "gali:lab", "--task", "needle", "--method", "original,ntk", "--max-pe", "1024",
            "--limit", "3", "--results-dir", "somewhere", "--dry-run", "--default-params",
            *[x for s in NEEDLE for x in ("--set", s)]]
    assert run_main(args) == 0
    out = capsys.readouterr().out
    assert out.count("# plan: task=needle") == 2 and '"max_examples": 3' in out and '"results_dir": "somewhere"' in out
    assert "# factor = 4.0 (max_pe / M)" in out and '"factor": 4.0' in out  # the number, not null
    assert "# window M = 256 (llama model config)" in out
    assert not Path("somewhere").exists()
    assert run_main(["--limit", "0", "--model", "gali:lab", "--task", "needle", "--method", "gali"]) == 2
    assert "--limit 0" in capsys.readouterr().err


def test_matrix_file_outside_gali_run_says_so(tmp_path):
    (tmp_path / "m.toml").write_text('model = "gali:lab"\ntask = "pg19"\n[matrix]\nmethod = ["original", "gali"]\n')
    with pytest.raises(HarnessError, match="matrix of several experiments"):
        load_plan(tmp_path / "m.toml")  # what gali-check / gali-launch / gali-sweep read


def test_dry_run_shows_chunkllama_sizes(capsys):
    assert run_main(["--model", "gali:lab", "--task", "pg19", "--method", "chunkllama", "--max-pe", "1024",
                     "--default-params", "--set", "task_options.source=python_heldout", "--dry-run", "-q"]) == 0
    out = capsys.readouterr().out
    assert "# chunk_size = 192 (default for M)" in out and "# local_window = 16 (default for M)" in out  # 3M/4, M/16
