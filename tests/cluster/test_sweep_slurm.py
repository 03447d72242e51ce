"""gali-sweep's SLURM path without a cluster: fake `sbatch`/`srun`/`scontrol` on PATH record what submitit submits;
then one array task is run the way SLURM would (`python -m submitit.core._submit` with the SLURM variables) and
sent submitit's time-out signal (USR2): it stops after the current example and requeues itself."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from harness.cli import sweep as sweep_cli
from harness.core.results import iter_jsonl


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'cp "$1" {tmp_path}/submitted.sbatch\necho "Submitted batch job 12345"\n',
        "srun": "exit 0\n",
        "scontrol": f'echo "$@" >> {tmp_path}/scontrol.log\n',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


@pytest.mark.slow
def test_submit_then_run_a_task_as_slurm_would(write_cfg, fake_slurm, tmp_path, monkeypatch, capsys, child_env):
    a = write_cfg("sl-a", times=1, depths=2, new_tokens=1)
    b = write_cfg("sl-b", times=6, depths=4, new_tokens=2, extra='[slurm]\ncpus = 4\nmem = "32G"\n')
    monkeypatch.chdir(tmp_path)
    rc = sweep_cli.main(["--cfg", str(a), str(b), "--shards", "2", "--partition", "gpu", "--time", "01:00:00",
                         "--array-parallelism", "2", "--name", "s", "--set", "seed=11"])
    out = capsys.readouterr().out
    assert rc == 0
    # two configs with different [slurm] tables -> two job arrays of two tasks each
    assert out.count("submitted 12345_") == 4
    sbatch = (tmp_path / "submitted.sbatch").read_text()  # the last array (config b)
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --time=60", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@120", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=32G",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --open-mode=append"):
        assert line in sbatch
    manifest = json.loads((tmp_path / "results" / "_sweeps" / "s" / "sweep.json").read_text())
    assert [(m["exp_dir"].rsplit("/", 1)[1], m["shard"]) for m in manifest] == [
        ("sl-a", [0, 2]), ("sl-a", [1, 2]), ("sl-b", [0, 2]), ("sl-b", [1, 2])]

    # run array task 12345_0 of the second array (config b, shard 0/2) as srun would, then time it out
    folder = tmp_path / "results" / "_sweeps" / "s"
    env = dict(child_env, PATH=os.environ["PATH"], SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="12350",
               SLURM_ARRAY_JOB_ID="12345", SLURM_ARRAY_TASK_ID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_JOB_NODELIST="node1")
    job_dir = folder / "12345_0"
    pickles = sorted(job_dir.glob("*_submitted.pkl"))
    assert len(pickles) == 1
    submitted = pickle.loads(pickles[0].read_bytes())
    stamp = pickles[0].stat().st_mtime_ns
    task = submitted.function.task
    assert task.exp_dir.endswith("sl-b") and task.shard == (0, 2) and task.overrides == ("seed=11",)
    pred = tmp_path / "results" / "sl-b" / "predictions" / "needle.shard-0-of-2.jsonl"
    proc = subprocess.Popen([sys.executable, "-u", "-m", "submitit.core._submit", str(folder / "%j")], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (pred.exists() and pred.read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR2)
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "12345_0"], log
    text = pred.read_text()
    ids = [r["id"] for r in iter_jsonl(pred)]
    assert text.endswith("\n") and len(ids) == len(set(ids)) >= 1
    run_log = (tmp_path / "results" / "sl-b" / "logs" / "sweep-12345_0.shard-0-of-2.log").read_text()
    assert "interrupted: rerun to resume" in run_log  # the run stopped through its own handler, not killed
    assert pickles[0].stat().st_mtime_ns > stamp  # submitit dumped our checkpoint for the requeued job...
    assert pickle.loads(pickles[0].read_bytes()).function.task == task  # ...which reruns the same task (resumes)
