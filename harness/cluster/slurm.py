"""SLURM settings: the `[slurm]` config table (validated here), sbatch command lines, and a tiny helper CLI.

`python -m harness.cluster.slurm exp-dir --cfg X.toml [--set k=v ...]` prints `<results_dir>/<exp_name>` without loading
any model; the batch scripts in scripts/slurm/ use it to write their logs under the experiment directory.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harness.core import params as P
from harness.core.config import from_dict, parse_overrides, read_toml, set_dotted
from harness.core.errors import ConfigError, HarnessError
from harness.core.results import ExperimentDir

#: the sbatch template that runs one (config, shard) per array task
SWEEP_SCRIPT = "scripts/slurm/sweep.sbatch"

_TIME_RE = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")
_MEM_RE = re.compile(r"^\d+(?:\.\d+)?[KMGT]?B?$", re.IGNORECASE)


@dataclass
class SlurmOptions:
    """The `[slurm]` table of a config (gali-sweep flags override it). Times are sbatch times or minutes."""

    partition: str | None = None
    time: int | str = 240  # minutes, or "HH:MM:SS" / "D-HH:MM:SS" as sbatch --time takes
    gpus: int = 1  # GPUs per task; > 1 loads the model with device_map="auto" (model parallel)
    cpus: int | None = None  # --cpus-per-task
    mem: str | None = None  # e.g. "64G"
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    array_parallelism: int = 32  # array tasks running at once (--array=...%K)
    shards: int = 1  # shards per config (array tasks per config)
    signal_delay_s: int = 120  # stop signal this long before the time limit (> one example's run time)
    max_requeues: int = 20  # requeues after time-outs (preemptions are not counted)
    job_name: str = "gali"
    setup: list[str] = field(default_factory=list)  # shell lines run first (module load, source venv)
    additional: dict = field(default_factory=dict)  # further sbatch options, e.g. {mail-type = "FAIL"}

    @property
    def minutes(self) -> int:
        return time_minutes(self.time)


def time_minutes(value: int | str, key: str = "slurm.time") -> int:
    """sbatch --time formats ('MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS') or int minutes -> minutes."""
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(key, f"must be positive, got {value}", "give minutes (240) or 'HH:MM:SS' ('04:00:00')")
        return value
    m = _TIME_RE.match(value.strip())
    if not m:
        raise ConfigError(key, f"cannot read time {value!r}", "use minutes (240), 'HH:MM:SS' or 'D-HH:MM:SS'")
    d, b, c = (int(x) if x else None for x in m.group("d", "b", "c"))
    a = int(m.group("a"))  # the one number every format has
    if d is not None:  # D-HH[:MM[:SS]]
        total = d * 1440 + a * 60 + (b or 0) + (1 if c else 0)
    elif c is not None and b is not None:  # HH:MM:SS
        total = a * 60 + b + (1 if c else 0)
    elif b is not None:  # MM:SS
        total = a + (1 if b else 0)
    else:
        total = a
    if total <= 0:
        raise ConfigError(key, f"time {value!r} is zero", "give a positive time limit")
    return total


def slurm_options(table: dict[str, Any] | None = None, source: str | None = None,
                  overrides: dict[str, Any] | None = None) -> SlurmOptions:
    """Validate a `[slurm]` table, then apply flag overrides (None values are ignored)."""
    try:
        opts = P.build(SlurmOptions, dict(table or {}), prefix="slurm.")
        _check(opts)
    except ConfigError as exc:
        raise exc.with_source(source) if source else exc from None
    set_ = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(set_) - {f.name for f in fields(SlurmOptions)}
    if unknown:
        raise HarnessError(f"internal: unknown slurm override(s) {sorted(unknown)}")
    if set_:
        opts = replace(opts, **set_)
        try:
            _check(opts)
        except ConfigError as exc:
            raise exc.with_source("command-line options (over the [slurm] table)") from None
    return opts


def _check(o: SlurmOptions) -> None:
    time_minutes(o.time)
    for key in ("array_parallelism", "shards", "max_requeues", "signal_delay_s"):
        if getattr(o, key) < (0 if key == "max_requeues" else 1):
            raise ConfigError(f"slurm.{key}", f"must be positive, got {getattr(o, key)}", f"set slurm.{key} >= 1")
    if o.gpus < 0:
        raise ConfigError("slurm.gpus", f"must be >= 0, got {o.gpus}", "GPUs per task, e.g. 1 (0 = CPU only)")
    if o.cpus is not None and o.cpus < 1:
        raise ConfigError("slurm.cpus", f"must be >= 1, got {o.cpus}", "e.g. cpus = 8")
    if o.mem is not None and not _MEM_RE.match(o.mem):
        raise ConfigError("slurm.mem", f"cannot read memory {o.mem!r}", "use an sbatch size such as \"64G\"")
    if o.signal_delay_s >= o.minutes * 60:
        raise ConfigError("slurm.signal_delay_s", f"{o.signal_delay_s}s is not shorter than the time limit",
                          "use a signal delay of a few minutes, well below slurm.time")
    if not all(isinstance(x, str) for x in o.setup):
        raise ConfigError("slurm.setup", "must be a list of shell lines", "e.g. setup = [\"module load cuda\"]")
    for key in o.additional:
        if key.replace("_", "-") in ("array", "output", "error", "signal", "requeue", "open-mode"):
            raise ConfigError(f"slurm.additional.{key}", "is set by gali-sweep itself",
                              "remove it (use shards/array_parallelism/signal_delay_s instead)")


def sbatch_options(o: SlurmOptions) -> list[str]:
    """Resource flags shared by every way of submitting (template line and submitit), as sbatch arguments."""
    out = [f"--job-name={o.job_name}", f"--time={o.minutes}"]
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"),
                      ("constraint", "constraint"), ("exclude", "exclude"), ("mem", "mem")):
        value = getattr(o, key)
        if value is not None:
            out.append(f"--{flag}={value}")
    if o.cpus:
        out.append(f"--cpus-per-task={o.cpus}")
    if o.gpus:
        out.append(f"--gpus-per-node={o.gpus}")
    for key, value in sorted(o.additional.items()):
        out.append(f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    return out


def sweep_sbatch_command(o: SlurmOptions, configs: list[str], log_dir: Path, overrides: list[str],
                         script: str = SWEEP_SCRIPT) -> list[str]:
    """The sbatch line running `configs` x `o.shards` with scripts/slurm/sweep.sbatch (one array task each)."""
    n = len(configs) * o.shards
    cmd = ["sbatch", *sbatch_options(o), f"--array=0-{n - 1}%{min(n, o.array_parallelism)}", "--requeue",
           "--open-mode=append", f"--signal=B:USR1@{o.signal_delay_s}", f"--output={log_dir}/slurm-%A_%a.out",
           f"--export=ALL,GALI_MAX_REQUEUES={o.max_requeues}", script, "--shards", str(o.shards), *configs]
    if overrides:
        cmd.append("--")
        for item in overrides:
            cmd += ["--set", item]
    return cmd


def render(cmd: list[str]) -> str:
    return " ".join(shlex.quote(x) for x in cmd)


def experiment_dir(cfg_path: str, overrides: list[str] | None = None) -> Path:
    """<results_dir>/<exp_name> of a config with overrides, without resolving the method or touching the model."""
    data = read_toml(cfg_path)
    for key, value in parse_overrides(overrides):
        set_dotted(data, key, value)
    cfg = from_dict(data, source=str(cfg_path), exp_name_default=Path(cfg_path).stem)

    return ExperimentDir(cfg.results_dir, cfg.exp_name).path


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.cluster.slurm exp-dir --cfg X [--set k=v]...` (other gali-run flags are ignored)."""
    p = argparse.ArgumentParser(prog="python -m harness.cluster.slurm")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("exp-dir", help="print <results_dir>/<exp_name> of a config")
    e.add_argument("--cfg", required=True)
    e.add_argument("--set", dest="overrides", action="append", default=[])
    args, _ = p.parse_known_args(argv)
    try:
        print(experiment_dir(args.cfg, args.overrides))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
