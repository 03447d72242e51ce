"""Sweeps through submitit: one job-array task per (config, shard); preemption/time-out -> stop cleanly + requeue.

Each task runs `python -m harness.cli.run --cfg C --shard I/N` as a child process (log in `<exp>/logs/`). On
submitit's time-out/preemption signal (USR2) the task asks the child to stop after its current example (SIGUSR1),
waits for it, and hands submitit a fresh copy of itself to requeue; the requeued task resumes from the files.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.cluster.launch import INTERRUPTED, log_tail
from harness.cluster.slurm import SlurmOptions, slurm_options
from harness.core.errors import HarnessError
from harness.stages.resolve import load_plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepTask:
    """One array task: a config file, its overrides, one shard; where its experiment lives."""

    cfg_path: str
    overrides: tuple[str, ...]
    shard: tuple[int, int]
    exp_dir: str
    workdir: str
    gpus: int = 1
    device_map_auto: bool = False
    signal_grace_s: float = 90.0

    @property
    def label(self) -> str:
        return f"{Path(self.exp_dir).name} shard {self.shard[0]}/{self.shard[1]}"

    def command(self, python: str = sys.executable) -> list[str]:
        cmd = [python, "-m", "harness.cli.run", "--cfg", self.cfg_path, "--shard", f"{self.shard[0]}/{self.shard[1]}"]
        for item in self.overrides:
            cmd += ["--set", item]
        if self.device_map_auto:
            cmd += ["--set", "device_map=auto"]
        return cmd


def _ignore_usr2() -> None:  # runs in the child before exec: an ignored signal stays ignored across exec
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class ShardJob:
    """The callable submitit runs (checkpointable: submitit calls `checkpoint` on USR2, then requeues)."""

    def __init__(self, task: SweepTask):
        self.task = task
        self._proc: subprocess.Popen | None = None
        self._done = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return {"task": self.task}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["task"])  # type: ignore[misc]

    def _log_path(self) -> Path:
        try:
            import submitit

            job = submitit.JobEnvironment().job_id  # "<array>_<task>" under SLURM, the pid-based id locally
        except RuntimeError:  # not started by submitit
            job = os.environ.get("SLURM_JOB_ID", "direct")
        i, n = self.task.shard
        return Path(self.task.workdir, self.task.exp_dir, "logs", f"sweep-{job}.shard-{i}-of-{n}.log")

    def __call__(self) -> dict[str, Any]:
        task = self.task
        log_path = self._log_path()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "GALI_SHARDS"}
        env.setdefault("TQDM_MININTERVAL", "30")
        with log_path.open("a", encoding="utf-8") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {task.label}: {' '.join(task.command())}\n")
            fh.flush()
            self._proc = subprocess.Popen(task.command(), cwd=task.workdir, env=env, stdout=fh,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=_ignore_usr2)
        print(f"{task.label}: pid {self._proc.pid}, log {log_path}", flush=True)
        threading.Thread(target=self._reap, daemon=True).start()
        while not self._done.is_set():  # not proc.wait(): keeps the main thread free for submitit's handler
            time.sleep(0.5)
        rc = self._proc.returncode
        result = {"exp_dir": task.exp_dir, "shard": list(task.shard), "returncode": rc, "log": str(log_path)}
        if rc in (0, 1, INTERRUPTED):
            result["status"] = {0: "done", 1: "done with example errors", INTERRUPTED: "stopped early"}[rc]
            return result

        raise RuntimeError(f"{task.label}: gali-run exited with status {rc}; log {log_path}:\n{log_tail(log_path)}")

    def _reap(self) -> None:
        assert self._proc is not None
        self._proc.wait()
        self._done.set()

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Time-out or preemption: let the run finish its current example, then requeue a fresh copy."""
        import submitit

        if self._proc is not None and not self._done.is_set():
            print(f"{self.task.label}: stop signal: finishing the current example, then requeue", flush=True)
            self._proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + self.task.signal_grace_s
            while not self._done.is_set() and time.monotonic() < deadline:
                time.sleep(0.5)
        return submitit.helpers.DelayedSubmission(ShardJob(self.task))


@dataclass
class Sweep:
    """Everything a sweep submits, grouped so that each group is one job array with one set of SLURM options."""

    name: str
    folder: Path
    groups: list[tuple[SlurmOptions, list[SweepTask], list[str]]] = field(default_factory=list)  # opts, tasks, cfgs

    @property
    def tasks(self) -> list[SweepTask]:
        return [t for _, tasks, _ in self.groups for t in tasks]


def plan_sweep(cfg_paths: list[str], overrides: list[str], flags: dict[str, Any], name: str | None = None,
               sweep_root: str | None = None) -> Sweep:
    """Load and validate every config (before anything is submitted) and lay out the array tasks."""
    workdir = os.getcwd()
    groups: dict[tuple, tuple[SlurmOptions, list[SweepTask], list[str]]] = {}
    owners: dict[str, str] = {}
    results_dirs = set()
    for path in cfg_paths:
        cfg = load_plan(path, overrides).cfg
        opts = slurm_options(cfg.slurm, cfg.source, flags)
        exp_dir = str(Path(cfg.results_dir) / cfg.exp_name)
        if exp_dir in owners:
            raise HarnessError(f"{path} and {owners[exp_dir]} both write {exp_dir} (same results_dir and exp_name). "
                               "Fix: give each config its own exp_name")
        owners[exp_dir] = path
        results_dirs.add(cfg.results_dir)
        key = tuple(sorted((k, repr(v)) for k, v in asdict(opts).items()))
        group = groups.setdefault(key, (opts, [], []))
        group[2].append(path)
        for i in range(opts.shards):
            group[1].append(SweepTask(
                cfg_path=str(Path(path).resolve()), overrides=tuple(overrides), shard=(i, opts.shards),
                exp_dir=exp_dir, workdir=workdir, gpus=opts.gpus, device_map_auto=opts.gpus > 1 and not cfg.device_map,
                signal_grace_s=max(10.0, opts.signal_delay_s - 20.0)))
    name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    root = Path(sweep_root) if sweep_root else Path(sorted(results_dirs)[0] if results_dirs else "results")
    return Sweep(name, root / "_sweeps" / name, list(groups.values()))


def make_executor(kind: str, folder: Path, opts: SlurmOptions) -> Any:
    """A submitit executor with `opts` applied ('slurm' or 'local')."""
    import submitit

    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder / "%j"), max_num_timeout=opts.max_requeues)
        ex.update_parameters(timeout_min=opts.minutes, gpus_per_node=opts.gpus, signal_delay_s=opts.signal_delay_s)
        return ex
    try:
        ex = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=opts.max_requeues)
    except RuntimeError as exc:
        raise HarnessError(f"cannot submit to SLURM ({exc}). Fix: run gali-sweep on a SLURM login node, or use "
                           "--executor local / --dry-run") from None
    params: dict[str, Any] = {
        "job_name": opts.job_name, "time": opts.minutes, "signal_delay_s": opts.signal_delay_s,
        "array_parallelism": opts.array_parallelism, "stderr_to_stdout": True,
        "additional_parameters": {"requeue": True, **opts.additional},
    }
    for key in ("partition", "account", "qos", "constraint", "exclude", "mem"):
        if getattr(opts, key) is not None:
            params[key] = getattr(opts, key)
    if opts.cpus:
        params["cpus_per_task"] = opts.cpus
    if opts.gpus:
        params["gpus_per_node"] = opts.gpus
    if opts.setup:
        params["setup"] = list(opts.setup)
    ex.update_parameters(**params)
    return ex


def submit(sweep: Sweep, kind: str = "slurm") -> list[Any]:
    """Submit every group as one job array; returns the submitit jobs (in task order)."""
    jobs: list[Any] = []
    for opts, tasks, _ in sweep.groups:
        ex = make_executor(kind, sweep.folder, opts)
        with ex.batch():
            group_jobs = [ex.submit(ShardJob(t)) for t in tasks]
        jobs.extend(group_jobs)
    placeholder = sweep.folder / "%j"  # submitit creates the folder pattern itself; only the job folders matter
    if placeholder.is_dir() and not any(placeholder.iterdir()):
        placeholder.rmdir()
    return jobs


def wait(jobs: list[Any], tasks: list[SweepTask]) -> list[tuple[SweepTask, Any, str | None]]:
    """Block until every job ends; (task, result, error) per job: the job's result dict, or None and the error."""
    out: list[tuple[SweepTask, Any, str | None]] = []
    for job, task in zip(jobs, tasks):
        try:
            out.append((task, job.result(), None))
        except Exception as exc:
            out.append((task, None, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__))
    return out
