"""gali-check: the declared invariants (generic ones replaced in place, own ones appended), the runner, the
layer rule for method packages, and the CLI on a tiny model."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness.methods
from harness.cli import check as cli
from harness.methods.base import Method
from harness.methods.invariants import CheckContext, CheckResult, invariant, not_applicable
from harness.stages import check
from harness.stages.check import invariants_for

TOML = """
model = "{model}"
task = "needle"
method = "{method}"
exp_name = "x"
max_pe = 192
times = 1
min_k = 1
max_k = 1
gap = 1
{extra}
"""


def write_cfg(tmp_path, model, method="gali", extra="[params]\nlocal_window = 8\nchunk_coe = 64\n"):
    path = tmp_path / "x.toml"
    path.write_text(TOML.format(model=model, method=method, extra=extra))
    return str(path)


def test_gali_check_passes_on_tiny_model(tiny_model_dir, tmp_path, capsys):
    code = cli.main(["--cfg", write_cfg(tmp_path, tiny_model_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("finite", "equals_original_within_window", "decode_within_window", "decode_beyond_window",
                 "memory_linear", "gali_positions", "gali_prefix_equals_original"):
        assert f"{name} " in out
    assert "FAIL" not in out and "0 failed" in out
    assert "noise off for this check" in out  # the default gaussian noise is switched off for the decode check


def test_config_error_exits_2(tiny_model_dir, tmp_path, capsys):
    # README default local_window = 128 is not below the tiny model's window of 64
    code = cli.main(["--cfg", write_cfg(tmp_path, tiny_model_dir, extra="")])
    assert code == 2
    assert "params.local_window" in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path, capsys):
    assert cli.main(["--cfg", str(tmp_path / "nope.toml")]) == 2


def test_failed_check_exits_1(tiny_model_dir, tmp_path, monkeypatch, capsys):
    meta = {"model": "m", "method": "gali", "window": 64, "long_len": 192, "dtype": "float32", "device": "cpu"}
    monkeypatch.setattr(cli, "run_checks", lambda cfg, max_len=None, model_config=None: ([CheckResult("a", "pass"),
                                                                      CheckResult("b", "fail", "boom")], meta))
    assert cli.main(["--cfg", write_cfg(tmp_path, tiny_model_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "boom" in out and "1 passed, 1 failed" in out


class _Declaring(Method):
    """Not registered: declares a replacement of a generic invariant, a not-applicable one and an extra one."""

    invariants = (
        invariant("decode_beyond_window")(lambda ctx: CheckResult("whatever", "pass")),
        not_applicable("equals_original", "by design"),
        invariant("extra")(lambda ctx: CheckResult("extra", "pass")),
    )


def test_declared_invariants_replace_generic_ones_in_place():
    generic = [g.name for g in check.GENERIC]
    got = invariants_for(_Declaring)
    assert [i.name for i in got] == generic + ["extra"]
    own = {i.name: i for i in _Declaring.invariants}
    assert got[generic.index("decode_beyond_window")].fn is own["decode_beyond_window"].fn
    replaced = got[generic.index("equals_original")]
    assert replaced.fn is own["equals_original"].fn and replaced.preflight  # keeps the generic one's flag
    assert [i.name for i in got if i.preflight] == ["chunked_prefill_equals_one_shot", "equals_original",
                                                   "cached_decode_equals_recomputation"]
    assert invariants_for(Method) == list(check.GENERIC)


def _ctx() -> CheckContext:
    return CheckContext(None, None, None, None, "cpu", [], 0)  # type: ignore[arg-type]


def test_run_invariants_names_rows_catches_crashes_and_reaches_the_default(monkeypatch):
    def boom(ctx):
        raise RuntimeError("kaput")

    generic = invariant("decode_beyond_window")(lambda ctx: CheckResult("decode_beyond_window", "pass", "generic"))
    monkeypatch.setattr(check, "GENERIC", (generic,))
    todo = [invariant("a")(lambda ctx: CheckResult("misnamed", "pass")), invariant("b")(boom),
            invariant("decode_beyond_window")(lambda ctx: ctx.default("decode_beyond_window")),
            not_applicable("c", "by design")]
    got = check.run_invariants(_ctx(), todo)
    assert [(r.name, r.status) for r in got] == [("a", "pass"), ("b", "fail"), ("decode_beyond_window", "pass"),
                                                 ("c", "skip")]
    assert got[1].detail == "RuntimeError: kaput" and got[2].detail == "generic" and got[3].detail == "by design"
    with pytest.raises(RuntimeError):
        check.run_invariants(_ctx(), todo[1:2], catch=False)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return out | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_methods_import_no_stage_and_checks_import_no_other_method():
    """The invariant contract lives in the methods layer: no method module imports harness.stages, and a method's
    checks.py imports no other method package (shared routines live in harness.methods.invariants / common)."""
    root = Path(harness.methods.__file__).parent
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").exists()} - {"common"}
    bad = []
    for path in root.rglob("*.py"):
        for mod in _imports(path):
            parts = mod.split(".")
            other = parts[2] if len(parts) > 2 and parts[:2] == ["harness", "methods"] else None
            if mod.startswith("harness.stages") or (path.name == "checks.py" and other in packages
                                                     and other != path.parent.name):
                bad.append(f"{path.relative_to(root)} imports {mod}")
    assert not bad, bad
    assert len(list(root.glob("*/checks.py"))) >= 10


def test_consistent_length():
    class Fixed:
        def prefill_chunks(self, n, stride=None):
            return [n] if n <= 16 else [16] + [8] * ((n - 16) // 8) + ([(n - 16) % 8] if (n - 16) % 8 else [])

    assert check.consistent_length(Fixed(), 17, 40) == 33  # 16 + 8 + 8 + 1
    assert check.consistent_length(SimpleNamespace(prefill_chunks=lambda n: [n]), 17, 40) is None


def test_table_format():
    text = check.format_table([CheckResult("finite", "pass", "ok"), CheckResult("x", "skip", "why")])
    assert "finite" in text and "PASS" in text and "SKIP" in text
    assert check.summary_line([CheckResult("a", "pass"), CheckResult("b", "skip")]) == "1 passed, 0 failed, 1 skipped"


@pytest.mark.parametrize("method", ["ntk"])
def test_other_methods_run(tiny_model_dir, tmp_path, capsys, method):
    code = cli.main(["--cfg", write_cfg(tmp_path, tiny_model_dir, method=method, extra=""), "--max-len", "128"])
    out = capsys.readouterr().out
    assert code == 0, out
    if method == "ntk":
        assert "SKIP" in out  # ntk changes in-window behaviour by design
