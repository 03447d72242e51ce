"""gali-check: the invariant registry and the CLI on a tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.cli import check as cli
from harness.stages import check
from harness.stages.check import CheckResult, invariants_for

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
    monkeypatch.setattr(check, "run_checks", lambda cfg, max_len=None: ([CheckResult("a", "pass"),
                                                                        CheckResult("b", "fail", "boom")], meta))
    assert cli.main(["--cfg", write_cfg(tmp_path, tiny_model_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "boom" in out and "1 passed, 1 failed" in out


def test_registry_overrides_and_extras(monkeypatch):
    monkeypatch.setattr(check, "_GENERIC", {})
    monkeypatch.setattr(check, "_SPECIFIC", {})

    @check.invariant("a")
    def a(ctx):
        return CheckResult("a", "pass")

    @check.invariant("b")
    def b(ctx):
        return CheckResult("b", "pass")

    @check.invariant("b", methods=("m1",))
    def b1(ctx):
        return CheckResult("b", "fail")

    @check.invariant("extra", methods=("m1",))
    def extra(ctx):
        return CheckResult("extra", "pass")

    check.not_applicable("a", ["m2"], "by design")
    assert invariants_for("other") == [("a", a), ("b", b)]
    assert invariants_for("m1") == [("a", a), ("b", b1), ("extra", extra)]
    name, fn = invariants_for("m2")[0]
    assert name == "a" and fn(None) == CheckResult("a", "skip", "by design")


def test_method_hook_results():
    class M:
        def check_invariants(self, ctx):
            yield CheckResult("x", "pass")
            yield ("y", False, "bad")
            yield ("z", None, "n/a")

    got = check._hook_results(SimpleNamespace(method=M()))
    assert [(r.name, r.status) for r in got] == [("x", "pass"), ("y", "fail"), ("z", "skip")]


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
