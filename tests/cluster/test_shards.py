"""Sharding: shard I/N from SLURM array variables; N shards together equal the unsharded run; gali-eval merges
shard files, flags missing/unfinished shards and overlaps, and never counts an id twice."""

from __future__ import annotations

import json

import pytest

from harness.cli import evaluate as eval_cli
from harness.cli import run as run_cli
from harness.cli._common import _shard_from_env, parse_shard
from harness.core.errors import HarnessError
from harness.core.results import iter_jsonl
from harness.core.seeding import in_shard


def test_parse_shard_explicit_and_defaults():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "1-4", "a/b", "-1/3"):
        with pytest.raises(HarnessError):
            parse_shard(bad)
    assert _shard_from_env({}) == (0, 1)


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "3"}, (3, 4)),
    # --array=1-8: ids start at 1 -> task 1 is shard 0, task 8 is shard 7
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "8"}, (0, 8)),
    ({"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "8"}, (7, 8)),
    # --array=10-16:2 -> ids 10,12,14,16 are shards 0..3
    ({"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10",
      "SLURM_ARRAY_TASK_MAX": "16", "SLURM_ARRAY_TASK_STEP": "2"}, (2, 4)),
    # GALI_SHARDS overrides: explicit I/N, or N with the array id (sweep arrays: task t -> shard t % N)
    ({"GALI_SHARDS": "1/3", "SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "9"}, (1, 3)),
    ({"GALI_SHARDS": "3", "SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "9"}, (1, 3)),
    ({"GALI_SHARDS": "3", "SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "2"}, (2, 3)),
])
def test_shard_from_slurm_array_env(env, expected):
    assert _shard_from_env(env) == expected


@pytest.mark.parametrize("env", [
    {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
     "SLURM_ARRAY_TASK_MAX": "9"},  # --array=1,5,9: not a regular range
    {"SLURM_ARRAY_TASK_ID": "2"},  # no count
    {"GALI_SHARDS": "4"},  # N without an array id
    {"GALI_SHARDS": "x"},
])
def test_shard_env_errors_are_clear(env):
    with pytest.raises(HarnessError, match="Fix|expected"):
        _shard_from_env(env)


def test_parse_shard_reads_os_environ(monkeypatch):
    monkeypatch.delenv("GALI_SHARDS", raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert parse_shard(None) == (1, 2)
    assert parse_shard("0/1") == (0, 1)  # an explicit --shard wins


def _records(path):
    return {r["id"]: r for r in iter_jsonl(path)}


def test_union_of_shards_equals_unsharded_run(write_cfg, tmp_path, monkeypatch):
    for key in ("SLURM_ARRAY_TASK_ID", "GALI_SHARDS"):
        monkeypatch.delenv(key, raising=False)
    cfg = write_cfg("full", times=2, depths=4, new_tokens=2)  # 1 length x 4 depths x 2 trials = 8 examples
    assert run_cli.main(["--cfg", str(cfg)]) == 0
    n = 3
    for i in range(n):
        assert run_cli.main(["--cfg", str(cfg), "--set", "exp_name=sharded", "--shard", f"{i}/{n}"]) == 0
    res = tmp_path / "results"
    full = _records(res / "full" / "predictions" / "needle.jsonl")
    assert len(full) == 8
    shard_files = {i: res / "sharded" / "predictions" / f"needle.shard-{i}-of-{n}.jsonl" for i in range(n)}
    parts = {i: _records(p) for i, p in shard_files.items() if p.exists()}
    # disjoint, each id in the shard its hash assigns, together exactly the unsharded ids
    ids = [x for recs in parts.values() for x in recs]
    assert len(ids) == len(set(ids)) == 8 and set(ids) == set(full)
    for i, recs in parts.items():
        assert all(in_shard(x, (i, n)) for x in recs)
    merged = {x: r for recs in parts.values() for x, r in recs.items()}
    for x, r in full.items():  # same seed and same greedy output per id, whatever the split
        assert (merged[x]["seed"], merged[x]["prediction"], merged[x]["passed"]) == (r["seed"], r["prediction"],
                                                                                      r["passed"])
    # each shard wrote its own provenance file
    for i in parts:
        prov = json.loads((res / "sharded" / f"provenance.shard-{i}-of-{n}.json").read_text())
        assert prov["shard"] == [i, n] and prov["interrupted"] is False
    assert not (res / "sharded" / "provenance.json").exists()

    assert eval_cli.main(["--exp", "full", "sharded", "--results-dir", str(res)]) == 0
    s_full = json.loads((res / "full" / "scores.json").read_text())
    s_sh = json.loads((res / "sharded" / "scores.json").read_text())
    m = s_sh["subsets"]["needle"]
    assert m["n_scored"] == 8 and m["score"] == s_full["subsets"]["needle"]["score"]
    assert s_sh["complete"] and m["shards"]["problems"] == [] and m["shards"]["overlapping_ids"] == 0
    assert "shards" not in s_full["subsets"]["needle"]

    # a missing shard file is named, and the subset is no longer complete
    victim = max(parts, key=lambda i: len(parts[i]))
    text = shard_files[victim].read_text()
    shard_files[victim].unlink()
    assert eval_cli.main(["--exp", "sharded", "--results-dir", str(res)]) == 0
    m = json.loads((res / "sharded" / "scores.json").read_text())["subsets"]["needle"]
    assert m["shards"][f"of_{n}"]["missing"] == [victim] and not m["complete"]
    assert m["n_scored"] == 8 - len(parts[victim])
    assert any(f"{victim}/{n}" in p for p in m["shards"]["problems"])

    # a half-finished shard is "partial"; a record duplicated into another shard is flagged, counted once
    lines = text.splitlines(keepends=True)
    shard_files[victim].write_text("".join(lines[:-1]))
    other = next(i for i in parts if i != victim)
    with shard_files[other].open("a") as fh:
        fh.write(lines[0])
    assert eval_cli.main(["--exp", "sharded", "--results-dir", str(res)]) == 0
    m = json.loads((res / "sharded" / "scores.json").read_text())["subsets"]["needle"]
    sh = m["shards"]
    assert sh[f"of_{n}"]["partial"] == [victim] and sh[f"of_{n}"]["missing"] == []
    assert sh[f"of_{n}"]["progress"][str(victim)] == [len(parts[victim]) - 1, len(parts[victim])]
    assert sh["overlapping_ids"] == 1 and sh["misplaced_ids"] == 1
    assert m["n_scored"] == 7 and not m["complete"]  # 8 - the cut line; the duplicated id is counted once


def test_sharded_overwrite_only_touches_its_own_shard(write_cfg, tmp_path):
    cfg = write_cfg("ow", times=1, depths=3, new_tokens=1)
    for i in range(2):
        assert run_cli.main(["--cfg", str(cfg), "--shard", f"{i}/2"]) == 0
    pred = tmp_path / "results" / "ow" / "predictions"
    before = {p.name: p.read_text() for p in pred.glob("*.jsonl")}
    assert run_cli.main(["--cfg", str(cfg), "--shard", "0/2", "--overwrite"]) == 0
    after = {p.name: p.read_text() for p in pred.glob("*.jsonl")}
    assert set(after) == set(before)
    if "needle.shard-1-of-2.jsonl" in before:  # the other shard's file is untouched (same bytes)
        assert after["needle.shard-1-of-2.jsonl"] == before["needle.shard-1-of-2.jsonl"]
