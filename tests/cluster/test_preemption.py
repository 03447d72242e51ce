"""SIGTERM mid-run (what SLURM sends on preemption or scancel): clean exit 143, only whole lines on disk; the rerun
finishes the rest without duplicates. Also the launcher's signal forwarding and the sweep task's checkpoint."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness.cli import run as run_cli
from harness.cluster.launch import Shard, run_shards
from harness.cluster.sweep import ShardJob, SweepTask

FAKE_RUN = ("import signal, sys, time\n"
            "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(143))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")


def _wait_lines(path, n, proc, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.1)
    raise AssertionError("no progress before the timeout")


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_rerun_completes(write_cfg, tmp_path, child_env):
    cfg = write_cfg("pre", times=6, depths=4, new_tokens=2)  # 24 examples
    pred = tmp_path / "results" / "pre" / "predictions" / "needle.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli.run", "--cfg", str(cfg)], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_lines(pred, 2, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out[-2000:]
    assert "rerun to resume" in out
    text = pred.read_text()
    assert text.endswith("\n")  # nothing half-written
    first = [json.loads(line) for line in text.splitlines()]
    assert 2 <= len(first) < 24
    prov = json.loads((tmp_path / "results" / "pre" / "provenance.json").read_text())
    assert prov["interrupted"] is True and prov["examples_run"] == len(first)

    assert run_cli.main(["--cfg", str(cfg)]) == 0
    text2 = pred.read_text()
    assert text2.startswith(text)  # the finished lines were kept as they were
    ids = [json.loads(line)["id"] for line in text2.splitlines()]
    assert len(ids) == len(set(ids)) == 24


def _fake_shards(tmp_path, n):
    return [Shard(i, n, "cpu", tmp_path / f"fake-{i}.log", [sys.executable, "-c", FAKE_RUN], env={
        "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}) for i in range(n)]


def test_launcher_forwards_sigterm_to_every_shard(tmp_path):
    shards = _fake_shards(tmp_path, 2)

    def send_when_ready():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(s.log_path.exists() and "\nready\n" in s.log_path.read_text() for s in shards):
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Thread(target=send_when_ready, daemon=True)
    timer.start()
    t0 = time.monotonic()
    run_shards(shards, poll_s=0.05)
    assert [s.rc for s in shards] == [143, 143]  # SIGUSR1 forwarded: each child exited through its handler
    assert time.monotonic() - t0 < 60  # ended by the signal, not by the children's sleep
    assert signal.getsignal(signal.SIGTERM) is before  # the launcher's handler is gone again


def test_sweep_task_checkpoint_stops_child_and_requeues_a_fresh_copy(tmp_path, monkeypatch):
    task = SweepTask(cfg_path="x.toml", overrides=(), shard=(1, 2), exp_dir=str(tmp_path / "exp"),
                     workdir=str(tmp_path), signal_grace_s=30)
    monkeypatch.setattr(SweepTask, "command", lambda self, python=sys.executable: [sys.executable, "-c", FAKE_RUN])
    job = ShardJob(task)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(job()), daemon=True)
    worker.start()
    log = tmp_path / "exp" / "logs" / "sweep-direct.shard-1-of-2.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and "\nready\n" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    delayed = job.checkpoint()
    worker.join(30)
    assert result["returncode"] == 143 and result["status"] == "stopped early"
    fresh = delayed.function
    assert isinstance(fresh, ShardJob) and fresh is not job and fresh.task == task
    assert pickle.loads(pickle.dumps(fresh)).task == task  # what submitit dumps for the requeued job
