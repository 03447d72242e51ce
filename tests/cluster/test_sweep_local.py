"""gali-sweep end to end with submitit's local executor: 2 configs, one task each, wait, score."""

from __future__ import annotations

import json

import pytest

from harness.cli import sweep as sweep_cli
from harness.core.results import iter_jsonl


@pytest.mark.slow
def test_two_config_sweep_with_local_executor(write_cfg, tmp_path, monkeypatch, capsys):
    a = write_cfg("sw-a", times=1, depths=2, new_tokens=2)
    b = write_cfg("sw-b", times=1, depths=2, new_tokens=2, extra="seed = 7")
    monkeypatch.chdir(tmp_path)
    rc = sweep_cli.main(["--cfg", str(a), str(b), "--executor", "local", "--gpus", "0", "--time", "20",
                         "--name", "t", "--wait"])
    out = capsys.readouterr().out
    assert rc == 0, out
    folder = tmp_path / "results" / "_sweeps" / "t"
    manifest = json.loads((folder / "sweep.json").read_text())
    assert [(m["exp_dir"], m["shard"]) for m in manifest] == [(str(tmp_path / "results" / n), [0, 1])
                                                              for n in ("sw-a", "sw-b")]
    for m in manifest:
        assert f"submitted {m['job_id']}: {m['exp_dir']} shard 0/1" in out
        assert (folder / m["job_id"]).is_dir()  # submitit's own per-job folder (pickles, its logs)
    for name, seed in (("sw-a", 42), ("sw-b", 7)):
        exp = tmp_path / "results" / name
        recs = list(iter_jsonl(exp / "predictions" / "needle.jsonl"))
        assert sorted(r["id"] for r in recs) == ["L64-D100-T0", "L64-D50-T0"]
        assert json.loads((exp / "config.json").read_text())["seed"] == seed
        assert json.loads((exp / "scores.json").read_text())["complete"]
        logs = list((exp / "logs").glob("sweep-*.shard-0-of-1.log"))
        assert len(logs) == 1 and "--shard 0/1" in logs[0].read_text()
