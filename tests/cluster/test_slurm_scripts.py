"""The sbatch templates: syntax, signal forwarding + self-requeue (with a fake `scontrol` and a fake run), the sweep
task layout, and gali-sweep's dry-run sbatch line (which must match what the template does)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import sweep as sweep_cli
from harness.cluster.slurm import experiment_dir, slurm_options, time_minutes
from harness.core.errors import ConfigError
from tests.cluster.conftest import REPO

SCRIPTS = REPO / "scripts" / "slurm"

FAKE_RUN = """import os, signal, sys, time
stop = []
signal.signal(signal.SIGUSR1, lambda *a: stop.append("USR1"))
signal.signal(signal.SIGTERM, lambda *a: stop.append("TERM"))
with open(os.environ["FAKE_OUT"], "a") as fh:
    fh.write("argv " + " ".join(sys.argv[1:]) + "\\n")
for _ in range(600):
    if stop:
        with open(os.environ["FAKE_OUT"], "a") as fh:
            fh.write("stopped " + stop[0] + "\\n")
        sys.exit(143)
    time.sleep(0.05)
sys.exit(0)
"""


@pytest.mark.parametrize("name", ["common.sh", "run_one.sbatch", "array.sbatch", "sweep.sbatch", "eval.sbatch"])
def test_scripts_parse(name):
    subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True)


@pytest.mark.parametrize("name", ["run_one.sbatch", "array.sbatch", "sweep.sbatch"])
def test_run_scripts_requeue_and_forward_signals(name):
    text = (SCRIPTS / name).read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@" in text and "#SBATCH --open-mode=append" in text
    assert "gali_run " in text


@pytest.fixture
def fake_env(tmp_path, child_env):
    """A 'python' that runs FAKE_RUN for `-m harness.cli.run` (real python otherwise) and a recording scontrol."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "fake_run.py").write_text(FAKE_RUN)
    py = bin_dir / "python"
    py.write_text(f'#!/bin/bash\nif [ "$1 $2" = "-m harness.cli.run" ]; then shift 2; '
                  f'exec {sys.executable} {tmp_path / "fake_run.py"} "$@"; fi\nexec {sys.executable} "$@"\n')
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/bash\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    py.chmod(0o755)
    scontrol.chmod(0o755)
    env = dict(child_env, GALI_PYTHON=str(py), GALI_HOME=str(REPO), FAKE_OUT=str(tmp_path / "fake.out"),
               PATH=f"{bin_dir}{os.pathsep}{child_env['PATH']}", SLURM_JOB_ID="4242")
    return env


def _run_script(script, args, env, cwd, sig=None):
    """Run a template with bash; optionally send `sig` to the batch shell once the fake run has started."""
    proc = subprocess.Popen(["bash", str(SCRIPTS / script), *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if sig is not None:
        out = Path(env["FAKE_OUT"])
        deadline = time.monotonic() + 60
        while not (out.exists() and "argv" in out.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(0.2)  # the batch shell is now in `wait`
        proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=90)
    return proc.returncode, stdout


def test_usr1_is_forwarded_and_the_job_requeues_itself(write_cfg, fake_env, tmp_path):
    cfg = write_cfg("one")
    rc, out = _run_script("run_one.sbatch", [str(cfg), "--set", "seed=5"], fake_env, tmp_path, signal.SIGUSR1)
    assert rc == 143
    fake = (tmp_path / "fake.out").read_text()
    assert f"argv --cfg {cfg} --shard 0/1 --set seed=5" in fake and "stopped USR1" in fake
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    log = tmp_path / "results" / "one" / "logs" / "slurm-4242.log"  # the job log lives in the experiment dir
    assert "requeued job 4242" in log.read_text()
    assert str(log) in out


def test_term_is_forwarded_without_self_requeue(write_cfg, fake_env, tmp_path):
    cfg = write_cfg("term")
    rc, _ = _run_script("run_one.sbatch", [str(cfg)], fake_env, tmp_path, signal.SIGTERM)
    assert rc == 143
    assert "stopped TERM" in (tmp_path / "fake.out").read_text()
    assert not (tmp_path / "scontrol.log").exists()  # scancel must not come back; preemption requeues by itself


def test_restart_drops_overwrite_and_respects_max_requeues(write_cfg, fake_env, tmp_path):
    cfg = write_cfg("again")
    env = dict(fake_env, SLURM_RESTART_COUNT="3", GALI_MAX_REQUEUES="3")
    rc, _ = _run_script("run_one.sbatch", [str(cfg), "--overwrite"], env, tmp_path, signal.SIGUSR1)
    assert rc == 143
    assert f"argv --cfg {cfg} --shard 0/1\n" in (tmp_path / "fake.out").read_text()  # no --overwrite on a restart
    assert not (tmp_path / "scontrol.log").exists()  # restarted 3 times already: not requeued again
    assert "GALI_MAX_REQUEUES=3" in (tmp_path / "results" / "again" / "logs" / "slurm-4242.log").read_text()


def test_array_script_leaves_the_shard_to_gali_run(write_cfg, fake_env, tmp_path):
    cfg = write_cfg("arr")
    env = dict(fake_env, SLURM_ARRAY_JOB_ID="100", SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_COUNT="4")
    rc, _ = _run_script("array.sbatch", [str(cfg)], env, tmp_path, signal.SIGUSR1)
    assert rc == 143
    assert f"argv --cfg {cfg}\n" in (tmp_path / "fake.out").read_text()  # shard comes from the array variables
    assert (tmp_path / "results" / "arr" / "logs" / "slurm-100_2.log").exists()


def test_sweep_script_maps_array_tasks_to_config_and_shard(write_cfg, fake_env, tmp_path):
    a, b = write_cfg("a"), write_cfg("b")
    (tmp_path / "list.txt").write_text(f"# configs\n{a}\n\n{b}  \n")
    rc, out = _run_script("sweep.sbatch", ["--shards", "2", f"@{tmp_path / 'list.txt'}"], fake_env, tmp_path)
    assert rc == 0
    assert "= 4 task(s); submit with --array=0-3" in out
    assert f"task 2: {b} shard 0/2" in out and f"task 1: {a} shard 1/2" in out
    # array ids starting at 1: task id 4 is the 4th task -> config b, shard 1/2
    env = dict(fake_env, SLURM_ARRAY_JOB_ID="7", SLURM_ARRAY_TASK_ID="4", SLURM_ARRAY_TASK_MIN="1")
    rc, _ = _run_script("sweep.sbatch", ["--shards", "2", str(tmp_path / "*.toml"), "--", "--set", "seed=9"], env,
                        tmp_path, signal.SIGUSR1)
    assert rc == 143
    assert f"argv --cfg {b} --shard 1/2 --set seed=9" in (tmp_path / "fake.out").read_text()
    assert (tmp_path / "results" / "b" / "logs" / "slurm-7_4.log").exists()


def test_slurm_table_validation(tmp_path):
    assert time_minutes(90) == 90 and time_minutes("04:00:00") == 240 and time_minutes("1-02:30:00") == 1590
    assert time_minutes("30:30") == 31 and time_minutes("2-0") == 2880
    opts = slurm_options({"partition": "gpu", "time": "02:00:00", "shards": 4}, overrides={"shards": 2, "qos": None})
    assert (opts.partition, opts.minutes, opts.shards, opts.qos) == ("gpu", 120, 2, None)
    with pytest.raises(ConfigError, match=r"x\.toml: config key 'slurm.partiton': unknown key \(did you mean "
                                          r"'partition'\?\)"):
        slurm_options({"partiton": "gpu"}, source="x.toml")
    with pytest.raises(ConfigError, match=r"^command-line options .*'slurm.time'"):  # a bad flag is not the file's
        slurm_options({"time": 60}, source="x.toml", overrides={"time": "4h"})
    for table, key in [({"time": "4h"}, "slurm.time"), ({"mem": "lots"}, "slurm.mem"), ({"gpus": -1}, "slurm.gpus"),
                       ({"shards": 0}, "slurm.shards"), ({"gpus": "two"}, "slurm.gpus"),
                       ({"time": 2, "signal_delay_s": 300}, "slurm.signal_delay_s"),
                       ({"additional": {"array": "0-3"}}, "slurm.additional.array")]:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            slurm_options(table)


def test_experiment_dir_helper(write_cfg, tmp_path):
    cfg = write_cfg("helper")
    assert experiment_dir(str(cfg)) == tmp_path / "results" / "helper"
    assert experiment_dir(str(cfg), ["exp_name=other"]) == tmp_path / "results" / "other"


def test_sweep_dry_run_renders_the_sbatch_line(write_cfg, tmp_path, capsys, monkeypatch):
    a = write_cfg("a", extra='[slurm]\npartition = "gpu"\ntime = "02:00:00"\nmem = "64G"\n')
    b = write_cfg("b", extra='[slurm]\npartition = "gpu"\ntime = "02:00:00"\nmem = "64G"\n')
    monkeypatch.chdir(tmp_path)
    assert sweep_cli.main(["--cfg", str(tmp_path / "*.toml"), "--shards", "2", "--array-parallelism", "3",
                           "--set", "seed=3", "--name", "s1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "results" / "_sweeps").exists()  # nothing submitted
    lines = [line for line in out.splitlines() if line.startswith("sbatch ")]
    assert len(lines) == 1
    argv = shlex.split(lines[0])
    folder = tmp_path / "results" / "_sweeps" / "s1"
    assert argv[:2] == ["sbatch", "--job-name=gali"]
    for flag in ("--time=120", "--partition=gpu", "--mem=64G", "--gpus-per-node=1", "--array=0-3%3", "--requeue",
                 "--open-mode=append", "--signal=B:USR1@120", f"--output={folder}/slurm-%A_%a.out"):
        assert flag in argv
    script = argv.index("scripts/slurm/sweep.sbatch")
    assert argv[script + 1:] == ["--shards", "2", str(a), str(b), "--", "--set", "seed=3"]
    for k, (cfg, shard) in enumerate([(a, 0), (a, 1), (b, 0), (b, 1)]):
        assert f"task {k}: " in out and f"--cfg {cfg} --shard {shard}/2 --set seed=3" in out

    # the template, given the same arguments, lays the tasks out the same way
    rc = subprocess.run(["bash", str(SCRIPTS / "sweep.sbatch"), *argv[script + 1:]], capture_output=True, text=True,
                        env=dict(os.environ, GALI_HOME=str(REPO), GALI_PYTHON=sys.executable))
    assert rc.returncode == 0 and f"task 3: {b} shard 1/2" in rc.stdout and "--array=0-3" in rc.stdout


def test_sweep_rejects_two_configs_writing_one_experiment(write_cfg, tmp_path, capsys):
    a = write_cfg("a")
    b = tmp_path / "b.toml"
    b.write_text(a.read_text())  # same exp_name "a"
    assert sweep_cli.main(["--cfg", str(a), str(b), "--dry-run"]) == 2
    assert "both write" in capsys.readouterr().err
