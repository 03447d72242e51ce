"""Faults around a run: corrupt predictions, two runs at once, changed data, full disk, late errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import ConfigError, DataError, HarnessError
from harness.core.locking import experiment_lock
from harness.core.results import ExperimentDir, JsonlAppender, repair_jsonl, scan_jsonl, write_json
from harness.stages.resolve import load_plan
from harness.stages.run import prepare_dir, run_experiment

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def needle_toml(tmp_path: Path, model: Path, results: Path, name: str = "exp", extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'task = "needle"\nmodel = "{model}"\nmethod = "original"\nexp_name = "{name}"\ntimes = 1\n'
                    f'results_dir = "{results}"\n{extra}[task_options]\nlengths = [48]\ndepths = 4\nfit = "reference"\n'
                    "extra_new_tokens = 2\n")
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    """A finished 4-example needle experiment (copied by each test that damages it)."""
    root = tmp_path_factory.mktemp("finished")
    cfg = needle_toml(root, tiny_model_dir, root / "results")
    run_experiment(load_plan(cfg))
    return root, cfg


def copy_of(finished, tmp_path: Path) -> tuple[Path, Path, Path]:
    root, cfg = finished
    shutil.copytree(root / "results", tmp_path / "results")
    text = cfg.read_text().replace(str(root / "results"), str(tmp_path / "results"))
    (tmp_path / "exp.toml").write_text(text)
    pred = ExperimentDir(tmp_path / "results", "exp").predictions_path("needle")
    return tmp_path / "exp.toml", pred, tmp_path / "results" / "exp"


# ------------------------------------------------------------------------------------- 5. corrupted predictions
BAD_LINES = {
    "garbage": "{not json at all",
    "no-id": '{"subset": "needle", "meta": {}}',
    "array": '["L48-D25-T0", "needle"]',
    "id-not-string": '{"id": 7, "meta": {}}',
    "bad-meta": '{"id": "L48-D50-T0", "subset": "needle", "prediction": "x", "meta": [1]}',
    "binary": "\udcff\udcfe".encode("utf-8", "surrogateescape").decode("latin-1"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_repair_moves_bad_lines_aside_and_keeps_every_good_row(tmp_path, kind):
    good = [{"id": f"e{i}", "meta": {"i": i}, "prediction": str(i)} for i in range(4)]
    path = tmp_path / "p.jsonl"
    lines = [json.dumps(r) for r in good]
    lines.insert(2, BAD_LINES[kind])
    path.write_text("\n".join(lines) + "\n" + '{"id": "torn", "me')
    assert repair_jsonl(path) == 1
    assert rows(path) == good
    assert (tmp_path / "p.jsonl.bad").read_text() == BAD_LINES[kind] + "\n"
    assert scan_jsonl(path) == (good, [])


@pytest.mark.parametrize("kinds", [["garbage"], ["no-id", "array"], ["bad-meta", "garbage", "id-not-string"]])
def test_rerun_after_corruption_redoes_only_the_damaged_examples(finished, tmp_path, kinds):
    cfg, pred, _ = copy_of(finished, tmp_path)
    before = {r["id"]: r for r in rows(pred)}
    lines = pred.read_text().splitlines()
    lost = json.loads(lines[1])["id"]
    lines[1] = BAD_LINES[kinds[0]]  # a good row overwritten in the middle: that example must run again
    lines[2:2] = [BAD_LINES[k] for k in kinds[1:]]
    pred.write_text("\n".join(lines) + "\n")
    summary = run_experiment(load_plan(cfg))
    assert summary.done == 1 and summary.skipped == 3
    after = rows(pred)
    assert sorted(r["id"] for r in after) == sorted(before)  # nothing lost, nothing twice
    for r in after:
        assert r["prediction"] == before[r["id"]]["prediction"], r["id"]
    assert len(pred.with_name(pred.name + ".bad").read_text().splitlines()) == len(kinds)
    assert lost in {r["id"] for r in after}


@pytest.mark.parametrize("kind", ["garbage", "array", "bad-meta"])
def test_rerun_quarantines_extra_bad_lines_even_with_nothing_to_do(finished, tmp_path, kind):
    cfg, pred, _ = copy_of(finished, tmp_path)
    good = pred.read_text()
    pred.write_text(good + BAD_LINES[kind] + "\n")
    assert run_experiment(load_plan(cfg)).done == 0
    assert pred.read_text() == good and pred.with_name("needle.jsonl.bad").read_text() == BAD_LINES[kind] + "\n"


# ---------------------------------------------------------------------------------------------- 6. locking
@pytest.mark.parametrize("first,second", [((0, 1), (0, 1)), ((0, 2), (0, 2)), ((0, 1), (1, 2)), ((1, 3), (0, 1))])
def test_second_holder_is_refused_naming_the_first(tmp_path, first, second):
    with experiment_lock(tmp_path, first):
        with pytest.raises(HarnessError) as err:
            with experiment_lock(tmp_path, second):
                pass
    message = str(err.value)
    assert f"pid {os.getpid()} on " in message and str(tmp_path) in message
    with experiment_lock(tmp_path, second):  # released: free again
        pass


def test_shards_of_one_experiment_run_together(tmp_path):
    with experiment_lock(tmp_path, (0, 3)), experiment_lock(tmp_path, (1, 3)), experiment_lock(tmp_path, (2, 3)):
        pass


HOLD = """
import sys, time
from pathlib import Path
from harness.core.locking import experiment_lock
with experiment_lock(Path(sys.argv[1]), (int(sys.argv[2]), int(sys.argv[3]))):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("wait,locked", [("2", True), ("0", False), ("x", None)])
def test_lock_wait_takes_a_lock_released_meanwhile(tmp_path, monkeypatch, wait, locked):
    proc = subprocess.Popen([sys.executable, "-c", HOLD.replace("time.sleep(60)", "time.sleep(0.5)"), str(tmp_path),
                             "0", "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        monkeypatch.setenv("GALI_LOCK_WAIT", wait)
        if locked:
            with experiment_lock(tmp_path):  # the holder exits after 0.5 s, within the wait
                pass
        else:
            with pytest.raises(HarnessError, match="in use by another run" if locked is False else "GALI_LOCK_WAIT"):
                with experiment_lock(tmp_path):
                    pass
    finally:
        proc.wait()


@pytest.mark.parametrize("shard", [(0, 1), (1, 2)])
def test_lock_of_a_killed_process_is_taken_over(tmp_path, caplog, shard):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(shard[0]), str(shard[1])],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(HarnessError, match=f"pid {proc.pid} on"):
            with experiment_lock(tmp_path, shard):
                pass
    finally:
        proc.kill()
        proc.wait()
    caplog.set_level("INFO")
    with experiment_lock(tmp_path, shard):
        pass
    assert f"pid {proc.pid}" in caplog.text  # the stale holder is named when its lock is taken over


def test_run_refused_while_another_run_holds_the_experiment(finished, tmp_path):
    cfg, pred, exp_dir = copy_of(finished, tmp_path)
    pred.write_text("".join(line + "\n" for line in pred.read_text().splitlines()[:2]))
    with experiment_lock(exp_dir):
        with pytest.raises(HarnessError, match="in use by another run"):
            run_experiment(load_plan(cfg))
    assert len(rows(pred)) == 2


# ----------------------------------------------------------------------------------------- 7. data identity
def longbench_toml(tmp_path: Path, model: Path, data_dir: Path) -> Path:
    path = tmp_path / "lb.toml"
    path.write_text(f'task = "longbench"\nmodel = "{model}"\nmethod = "original"\nexp_name = "lb"\nmax_pe = 256\n'
                    f'results_dir = "{tmp_path / "results"}"\ndata_dir = "{data_dir}"\nmax_examples = 1\n'
                    'subsets = ["qasper", "trec"]\n[task_options]\nmax_new_tokens = 2\n')
    return path


@pytest.mark.parametrize("change", ["other-content", "one-row-edited"])
def test_resume_with_other_data_is_refused_same_content_elsewhere_resumes(tmp_path, tiny_model_dir, change):
    first = tmp_path / "data1"
    first.mkdir()
    for name in ("qasper", "trec"):
        shutil.copy(FIXTURES / "longbench" / f"{name}.jsonl", first)
    run_experiment(load_plan(longbench_toml(tmp_path, tiny_model_dir, first)))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    assert run_experiment(load_plan(longbench_toml(tmp_path, tiny_model_dir, copy))).done == 0
    other = tmp_path / "data2"
    shutil.copytree(first, other)
    qasper = other / "qasper.jsonl"
    if change == "other-content":
        shutil.copy(FIXTURES / "longbench" / "multifieldqa_en.jsonl", qasper)
    else:
        lines = qasper.read_text().splitlines()
        row = json.loads(lines[-1])
        row["input"] += " (edited)"
        qasper.write_text("\n".join([*lines[:-1], json.dumps(row)]) + "\n")
    refusal = r"changed: data of 'qasper' \(was .*copy/qasper.jsonl, now .*data2/qasper.jsonl"
    with pytest.raises(HarnessError, match=refusal):
        run_experiment(load_plan(longbench_toml(tmp_path, tiny_model_dir, other)))


# ------------------------------------------------------------------------------------------------ 8. disk full
def failing_writer(after: int, err: int = errno.ENOSPC):
    """An os.write that writes `after` bytes of the next record, then fails like a full disk."""
    calls = {"n": 0}

    def write(fd: int, data) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return os.write(fd, bytes(data))  # the first record goes through
        if after:
            os.write(fd, bytes(data[:after]))
        raise OSError(err, os.strerror(err))

    return write


@pytest.mark.parametrize("after,err,fragment", [(0, errno.ENOSPC, "no space left on device while writing"),
                                                (7, errno.ENOSPC, "no space left on device while writing"),
                                                (30, errno.EDQUOT, "disk quota exceeded while writing"),
                                                (3, errno.EIO, "failed (Input/output error)")])
def test_full_disk_stops_with_one_line_and_a_valid_file(tmp_path, after, err, fragment):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "old", "meta": {}}\n')
    out = JsonlAppender(path, write=failing_writer(after, err))
    out.append({"id": "a", "meta": {}})
    with pytest.raises(HarnessError) as exc:
        out.append({"id": "b", "meta": {}, "prediction": "x" * 100})
    out.close()
    assert fragment in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)
    assert [r["id"] for r in rows(path)] == ["old", "a"]  # the partial line is cut
    assert path.read_bytes().endswith(b"\n")


@pytest.mark.parametrize("after", [0, 11])
def test_run_on_a_full_disk_stops_with_one_line_then_resumes(finished, tmp_path, capsys, monkeypatch, after):
    from harness.cli.run import main as run_main

    cfg, pred, _ = copy_of(finished, tmp_path)
    all_ids = sorted(r["id"] for r in rows(pred))
    pred.write_text("".join(line + "\n" for line in pred.read_text().splitlines()[:1]))
    monkeypatch.setattr(JsonlAppender, "default_write", staticmethod(failing_writer(after)))
    assert run_main(["--cfg", str(cfg), "--skip-preflight"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: no space left on device while writing {pred}. Fix: free some space, then rerun (finished examples "
        "are kept)"] and "Traceback" not in err
    assert len(rows(pred)) == 2 and pred.read_bytes().endswith(b"\n")  # one more record, no partial line
    monkeypatch.undo()
    assert run_main(["--cfg", str(cfg), "--skip-preflight"]) == 0
    assert sorted(r["id"] for r in rows(pred)) == all_ids


@pytest.mark.parametrize("err,fragment", [(errno.ENOSPC, "no space left on device while writing /x/y"),
                                          (errno.EDQUOT, "disk quota exceeded while writing /x/y"),
                                          (errno.EACCES, "/x/y: Permission denied"),
                                          (errno.EISDIR, "/x/y: Is a directory")])
def test_any_uncaught_os_error_is_one_line(capsys, err, fragment):
    from harness.cli._common import guarded

    def body() -> int:
        raise OSError(err, os.strerror(err), "/x/y")

    assert guarded(body) == 2
    out = capsys.readouterr().err
    assert out.startswith("error: ") and fragment in out and out.count("\n") == 1


def test_running_out_of_memory_is_one_line(capsys):
    from harness.cli._common import guarded

    def body() -> int:
        raise MemoryError

    assert guarded(body) == 2
    out = capsys.readouterr().err
    assert out.startswith("error: out of memory") and out.count("\n") == 1


def test_full_disk_on_json_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "scores.json"
    write_json(path, {"v": 1})

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(HarnessError, match="no space left on device while writing"):
        write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


# ------------------------------------------------------------------------------------- 11. late errors, refusals
@pytest.mark.parametrize("line,error", [
    ('subsets = ["needle", "nope"]\n', ConfigError),
    ('prompt_format = "reference"\n', ConfigError),
    ('device = "cuda:7"\n', ConfigError),
])
def test_errors_found_before_anything_is_written(tmp_path, tiny_model_dir, line, error):
    cfg = needle_toml(tmp_path, tiny_model_dir, tmp_path / "results", extra=line)
    with pytest.raises(error):
        run_experiment(load_plan(cfg))
    assert not (tmp_path / "results").exists()


def test_missing_data_is_found_before_anything_is_written(tmp_path, tiny_model_dir):
    with pytest.raises(DataError):
        run_experiment(load_plan(longbench_toml(tmp_path, tiny_model_dir, tmp_path / "empty")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="qasper.jsonl not found"):
        run_experiment(load_plan(longbench_toml(tmp_path, tiny_model_dir, tmp_path / "empty")))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("override,key", [("params.factor=3", "params.factor"), ("seed=7", "seed"),
                                          ("task_options.depths=8", "task_options.depths")])
def test_refusal_names_dotted_keys_and_the_real_path(tmp_path, tiny_model_dir, override, key):
    results = tmp_path / "elsewhere" / "res"
    path = needle_toml(tmp_path, tiny_model_dir, results)
    common = ["method=ntk", "params.factor=2"]
    base, changed = load_plan(path, common).cfg, load_plan(path, [*common, override]).cfg
    exp = ExperimentDir(results, "exp")
    prepare_dir(exp, base, overwrite=False)
    prepare_dir(exp, changed, overwrite=False)  # no predictions yet: the experiment takes the new config
    assert exp.read_config() == json.loads(json.dumps(changed.to_dict()))
    exp.predictions_path("needle").parent.mkdir(parents=True)
    exp.predictions_path("needle").write_text('{"id": "L48-D25-T0", "meta": {}}\n')
    with pytest.raises(HarnessError) as err:
        prepare_dir(exp, base, overwrite=False)
    assert f"(changed: {key})" in str(err.value) and str(exp.path) in str(err.value)
