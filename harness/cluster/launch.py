"""One node, several GPUs: run one `gali-run` shard per device group as separate processes, then score.

`--gpus 0,1,2,3` runs shards 0/4..3/4 with CUDA_VISIBLE_DEVICES=0, 1, 2, 3. A group `0+1` gives one shard two
GPUs and loads the model with `device_map="auto"` (layers split over the group: model parallel, for models that
do not fit one GPU). `cpu` runs a shard on the CPU (`--gpus cpu,cpu`: two CPU processes, used by the tests).
Each process logs to `<exp>/logs/launch.shard-I-of-N.log`. SIGTERM/SIGUSR1/Ctrl-C are forwarded to the shards as
SIGUSR1 (stop after the current example, keep what is written); a second Ctrl-C kills them. Rerunning resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cluster.progress import ShardProgress, shard_totals
from harness.core.config import ExperimentConfig
from harness.core.errors import HarnessError
from harness.core.locking import experiment_lock
from harness.core.results import ExperimentDir
from harness.stages.evaluate import evaluate_experiment
from harness.stages.resolve import load_plan
from harness.stages.run import prepare_dir, prepare_parent, select_work
from harness.stages.run_checks import check_results_dir

log = logging.getLogger(__name__)

#: exit status of gali-run when it stopped early on a signal (rerun to resume)
INTERRUPTED = 143


def parse_gpus(text: str) -> list[str]:
    """'0,1,2,3' -> ['0','1','2','3']; '0+1,2+3' -> ['0,1','2,3'] (one shard per group); 'cpu,cpu'; 'all'.

    Indexes count the GPUs visible to this process: with CUDA_VISIBLE_DEVICES=4,5 set, '1' is GPU 5.
    """
    text = text.strip()
    if text == "all":
        text = ",".join(str(i) for i in range(_visible_gpu_count())) or _no_gpus()
    visible = [x.strip() for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    groups = []
    for item in text.split(","):
        item = item.strip()
        if item == "cpu":
            groups.append("cpu")
            continue
        ids = [x.strip() for x in item.split("+")]
        if not ids or not all(x.isdigit() for x in ids):
            raise HarnessError(f"--gpus {text!r}: '{item}' is not a GPU index, an index group like 0+1, or 'cpu'. "
                               "Fix: e.g. --gpus 0,1,2,3 (one shard per GPU) or --gpus 0+1,2+3 (two GPUs per shard)")
        if visible:  # indexes count the GPUs this process sees (e.g. inside a SLURM allocation)
            if any(int(x) >= len(visible) for x in ids):
                raise HarnessError(f"--gpus {text!r}: only {len(visible)} GPU(s) visible (CUDA_VISIBLE_DEVICES="
                                   f"{','.join(visible)}). Fix: use indexes 0..{len(visible) - 1}")
            ids = [visible[int(x)] for x in ids]
        groups.append(",".join(ids))
    if not groups:
        raise HarnessError("--gpus is empty. Fix: e.g. --gpus 0,1")
    return groups


def _visible_gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([x for x in visible.split(",") if x.strip()])
    import torch

    return torch.cuda.device_count()


def _no_gpus() -> str:
    raise HarnessError("--gpus all: no GPU is visible. Fix: list devices explicitly, or --gpus cpu for a CPU run")


@dataclass
class Shard:
    """One child process: shard `index` of `count` on `devices`."""

    index: int
    count: int
    devices: str
    log_path: Path
    cmd: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    rc: int | None = None

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class LaunchResult:
    exp_name: str
    exp_dir: Path
    shards: list[Shard] = field(default_factory=list)
    scores: dict[str, Any] | None = None

    @property
    def interrupted(self) -> bool:
        return any(s.rc == INTERRUPTED for s in self.shards)

    @property
    def failed(self) -> list[Shard]:
        return [s for s in self.shards if s.rc not in (0, INTERRUPTED)]


def shard_commands(cfg_path: str, cfg: ExperimentConfig, groups: list[str], overrides: list[str], log_dir: Path,
                   python: str = sys.executable) -> list[Shard]:
    """The child processes for one config: command line, environment and log file of each shard."""
    n = len(groups)
    threads = str(max(1, (os.cpu_count() or 1) // n))
    shards = []
    for i, devices in enumerate(groups):
        cmd = [python, "-m", "harness.cli.run", "--cfg", cfg_path, "--shard", f"{i}/{n}"]
        for item in overrides:
            cmd += ["--set", item]
        # the shard is given by --shard: no array / GALI_SHARDS variable may contradict it (gali-run refuses that)
        env = {k: v for k, v in os.environ.items() if k != "GALI_SHARDS" and not k.startswith("SLURM_ARRAY_")}
        env.setdefault("OMP_NUM_THREADS", threads)
        env.setdefault("TQDM_MININTERVAL", "30")  # progress lines in a log file, not a redraw per token
        if devices == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
            cmd += ["--set", "device=cpu"]
        else:
            env["CUDA_VISIBLE_DEVICES"] = devices
            if cfg.device.startswith("cuda:"):  # only the listed GPUs are visible: they are cuda:0..
                cmd += ["--set", "device=cuda"]
            if "," in devices and not cfg.device_map:
                cmd += ["--set", "device_map=auto"]
        shards.append(Shard(i, n, devices, log_dir / f"launch.shard-{i}-of-{n}.log", cmd, env))
    return shards


def _check_model_parallel(groups: list[str]) -> None:
    if any("," in g for g in groups):
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise HarnessError("a GPU group (e.g. 0+1) loads the model with device_map='auto', which needs the "
                               "accelerate package. Fix: pip install accelerate") from None


class _Forwarder:
    """Signal handler for the launcher: the first signal asks every shard to stop after its current example."""

    def __init__(self, shards: list[Shard]):
        self.shards = shards
        self.count = 0
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _Forwarder:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            self.old[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        kill = signum == signal.SIGINT and self.count > 1
        log.warning("signal %d: %s", signum, "killing the shards" if kill else
                    "asking the shards to stop after their current example (Ctrl-C again to kill)")
        for s in self.shards:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.send_signal(signal.SIGKILL if kill else signal.SIGUSR1)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)


def run_shards(shards: list[Shard], poll_s: float = 0.5, on_poll: Any = None) -> None:
    """Start every shard process, forward stop signals to them, wait for all; fills each `rc`. `on_poll()` is called
    while waiting (per-shard progress)."""
    with _Forwarder(shards):
        for s in shards:
            s.log_path.parent.mkdir(parents=True, exist_ok=True)
            with s.log_path.open("a", encoding="utf-8") as fh:
                fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} gali-launch shard {s.label} "
                         f"CUDA_VISIBLE_DEVICES={s.env['CUDA_VISIBLE_DEVICES']!r}: {' '.join(s.cmd)}\n")
                fh.flush()
                # own session: a terminal Ctrl-C reaches only the launcher, which stops the shards gracefully
                s.proc = subprocess.Popen(s.cmd, env=s.env, stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
            log.info("shard %s on %s: pid %d, log %s", s.label, s.devices, s.proc.pid, s.log_path)
        while any(s.proc.poll() is None for s in shards if s.proc is not None):
            time.sleep(poll_s)
            if on_poll is not None:
                on_poll()
    for s in shards:
        s.rc = s.proc.returncode if s.proc is not None else None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log (carriage-return redraws collapsed)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # keep the \r of progress redraws
    except OSError:
        return ""
    rows = [row.rsplit("\r", 1)[-1] for row in text.replace("\r\n", "\n").rstrip("\n").split("\n")]
    return "\n".join(rows[-lines:])


def report(result: LaunchResult) -> None:
    """Log one line per shard; the tail of the log of every failed shard."""
    for s in result.shards:
        if s.rc == 0:
            log.info("%s shard %s: done", result.exp_name, s.label)
        elif s.rc == INTERRUPTED:
            log.warning("%s shard %s: stopped early (rerun the same command to resume)", result.exp_name, s.label)
        elif s.rc == 1:
            log.warning("%s shard %s: finished, some examples failed (rerun to retry them; see %s)",
                        result.exp_name, s.label, s.log_path)
        else:
            log.error("%s shard %s (devices %s) FAILED with exit status %s; log %s:\n%s", result.exp_name, s.label,
                      s.devices, s.rc, s.log_path, log_tail(s.log_path))


def launch(cfg_path: str, groups: list[str], overrides: list[str] | None = None, overwrite: bool = False,
           evaluate: bool = True) -> LaunchResult:
    """Run one config as len(groups) shards in parallel, wait, report, then score what exists."""
    overrides = list(overrides or [])
    plan = load_plan(cfg_path, overrides)
    cfg = plan.cfg
    _check_model_parallel(groups)
    check_results_dir(cfg)
    select_work(plan.build_task(), cfg, (0, 1))  # subsets and data, checked before anything is written
    exp = ExperimentDir(cfg.results_dir, cfg.exp_name)
    # once, here: checks a resumed dir ran the same config (or wipes it), so the shards need no --overwrite;
    # under the experiment's lock, so a second launcher (or a running gali-run) is refused
    prepare_parent(exp)
    with experiment_lock(exp.path, what="gali-launch"):
        prepare_dir(exp, cfg, overwrite)
    result = LaunchResult(cfg.exp_name, exp.path)
    result.shards = shard_commands(cfg_path, cfg, groups, overrides, exp.path / "logs")
    log.info("%s: %d shard(s) on %s", cfg.exp_name, len(groups), " | ".join(groups))

    progress = ShardProgress(exp, groups, shard_totals(plan, len(groups)))
    try:
        run_shards(result.shards, on_poll=progress.update)
    finally:
        progress.close()
    report(result)
    if evaluate and exp.prediction_files():
        try:
            result.scores = evaluate_experiment(exp)
        except HarnessError as exc:
            log.error("%s: scoring failed: %s", cfg.exp_name, exc)
    return result
