"""gali-launch: one shard per device as separate processes (`--gpus cpu,cpu` here), logs per shard, then scoring."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from harness.cli import launch as launch_cli
from harness.cluster.launch import INTERRUPTED, LaunchResult, Shard, parse_gpus, report, shard_commands
from harness.core.errors import HarnessError
from harness.core.results import iter_jsonl
from harness.core.seeding import in_shard


def test_parse_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_gpus("0,1,2,3") == ["0", "1", "2", "3"]
    assert parse_gpus("0+1, 2+3") == ["0,1", "2,3"]
    assert parse_gpus("cpu,cpu") == ["cpu", "cpu"]
    for bad in ("", "gpu0", "0,,1", "0+x"):
        with pytest.raises(HarnessError, match="Fix"):
            parse_gpus(bad)
    # inside an allocation that sees GPUs 4,6,7: indexes count the visible GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert parse_gpus("0,2") == ["4", "7"] and parse_gpus("1+2") == ["6,7"] and parse_gpus("all") == ["4", "6", "7"]
    with pytest.raises(HarnessError, match="only 3 GPU"):
        parse_gpus("3")


def test_shard_commands_pin_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("GALI_SHARDS", "9")  # must not leak into the children (they get explicit --shard)
    cfg = SimpleNamespace(device="cuda:3", device_map=None)
    shards = shard_commands("x.toml", cfg, ["0", "1,2", "cpu"], ["seed=1"], tmp_path, python="py")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in shards] == ["0", "1,2", ""]
    assert all("GALI_SHARDS" not in s.env for s in shards)
    assert shards[0].cmd == ["py", "-m", "harness.cli.run", "--cfg", "x.toml", "--shard", "0/3", "--set", "seed=1",
                             "--set", "device=cuda"]  # cuda:3 is not visible inside the shard: its GPU is cuda:0
    assert shards[1].cmd[-4:] == ["--set", "device=cuda", "--set", "device_map=auto"]  # a group: model parallel
    assert shards[2].cmd[-2:] == ["--set", "device=cpu"]
    assert [s.log_path.name for s in shards] == [f"launch.shard-{i}-of-3.log" for i in range(3)]


def test_report_shows_the_failing_shards_log(tmp_path, caplog):
    log = tmp_path / "s1.log"
    log.write_text("loading\nprogress 10%\rprogress 50%\nerror: config key 'x': boom\n")
    res = LaunchResult("e", tmp_path, [Shard(0, 2, "0", tmp_path / "s0.log", [], {}, rc=INTERRUPTED),
                                       Shard(1, 2, "1", log, [], {}, rc=2)])
    with caplog.at_level(logging.INFO, logger="harness.cluster.launch"):
        report(res)
    assert res.interrupted and [s.index for s in res.failed] == [1]
    text = caplog.text
    assert "shard 0/2: stopped early" in text
    assert "shard 1/2 (devices 1) FAILED with exit status 2" in text and "boom" in text
    assert "progress 50%" in text and "progress 10%" not in text  # carriage-return redraws collapsed


@pytest.mark.slow
def test_launch_two_cpu_processes_end_to_end(write_cfg, tmp_path):
    cfg = write_cfg("launched", times=2, depths=2, new_tokens=2)  # 4 examples
    assert launch_cli.main(["--cfg", str(cfg), "--gpus", "cpu,cpu"]) == 0
    exp = tmp_path / "results" / "launched"
    ids = {}
    for i in range(2):
        path = exp / "predictions" / f"needle.shard-{i}-of-2.jsonl"
        ids[i] = [r["id"] for r in iter_jsonl(path)] if path.exists() else []
        assert all(in_shard(x, (i, 2)) for x in ids[i])
        log = (exp / "logs" / f"launch.shard-{i}-of-2.log").read_text()
        assert f"--shard {i}/2" in log and "CUDA_VISIBLE_DEVICES=''" in log
    assert sorted(ids[0] + ids[1]) == sorted(f"L64-D{d}-T{t}" for d in (50, 100) for t in range(2))
    scores = json.loads((exp / "scores.json").read_text())  # gali-eval ran after the shards
    assert scores["complete"] and scores["subsets"]["needle"]["n_scored"] == 4


def test_shard_progress_counts_finished_examples(tmp_path):
    from harness.cluster.progress import ShardProgress
    from harness.core.results import ExperimentDir

    exp = ExperimentDir(tmp_path, "e")
    exp.predictions_dir.mkdir(parents=True)
    (exp.predictions_dir / "a.shard-0-of-2.jsonl").write_text(
        '{"id": "1"}\n{"id": "2", "error": "x"}\n{"id": "3"}\n{"id": "3"}\n')  # 2 finished, 1 error, 1 repeat
    (exp.predictions_dir / "b.shard-0-of-2.jsonl").write_text('{"id": "4"}\n')
    (exp.predictions_dir / "a.shard-1-of-2.jsonl").write_text('{"id": "5"}\n{"id": "6"')  # torn last line
    progress = ShardProgress(exp, ["0", "1"], [5, None])
    assert progress.done == [3, 1] and [(b.n, b.total) for b in progress.bars] == [(3, 5), (1, None)]
    assert [b.desc for b in progress.bars] == ["shard 0/2 [0]", "shard 1/2 [1]"]
    (exp.predictions_dir / "a.shard-1-of-2.jsonl").write_text('{"id": "5"}\n{"id": "6"}\n')
    progress.update(force=True)
    assert progress.done[1] == 2 and progress.bars[1].n == 2
    progress.close()
