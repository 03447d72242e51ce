"""`gali-sweep`: submit configs x shards as SLURM job arrays through submitit (requeued on time-out/preemption).

Examples:
  gali-sweep --cfg 'configs/longbench/*.toml' --shards 4 --partition gpu --time 04:00:00 --dry-run
  gali-sweep --cfg configs/a.toml configs/b.toml --shards 2 --partition gpu --array-parallelism 8
  gali-sweep --cfg configs/a.toml configs/b.toml --executor local --gpus 0 --wait     # no SLURM: local processes
SLURM settings come from flags, else from each config's [slurm] table (keys: see docs/cluster.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.cli._common import log
from harness.cli._flags import add_common_flags, run_command
from harness.cluster.slurm import render, sweep_sbatch_command
from harness.cluster.sweep import plan_sweep, submit, wait
from harness.core.config import expand_config_paths
from harness.core.results import ExperimentDir
from harness.stages.evaluate import evaluate_experiment


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", required=True, help="TOML config files or globs (quote globs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every config (as in gali-run); repeatable")
    p.add_argument("--executor", choices=["slurm", "local"], default="slurm",
                   help="slurm (sbatch job arrays) or local (processes on this machine, for tests/small runs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the array tasks and the equivalent sbatch lines; submit nothing")
    p.add_argument("--wait", action="store_true", help="wait for every task, then score the experiments")
    p.add_argument("--name", help="sweep name (folder <results_dir>/_sweeps/<name>); default sweep-<date>-<time>")
    p.add_argument("--sweep-dir", help="parent of _sweeps/ (default: the first config's results_dir)")
    s = p.add_argument_group("SLURM options (override the configs' [slurm] tables)")
    s.add_argument("--shards", type=int, help="array tasks per config (default 1)")
    s.add_argument("--partition")
    s.add_argument("--time", help="time limit per task: minutes or HH:MM:SS (default 240 minutes)")
    s.add_argument("--gpus", type=int, help="GPUs per task (default 1; >1 splits the model, device_map=auto)")
    s.add_argument("--cpus", type=int, help="CPUs per task")
    s.add_argument("--mem", help="memory per task, e.g. 64G")
    s.add_argument("--account")
    s.add_argument("--qos")
    s.add_argument("--constraint")
    s.add_argument("--array-parallelism", type=int, help="array tasks running at once (default 32)")
    s.add_argument("--signal-delay", dest="signal_delay_s", type=int,
                   help="seconds before the time limit at which a task stops and requeues (default 120)")
    s.add_argument("--max-requeues", type=int, help="requeues after time-outs (default 20)")
    s.add_argument("--job-name")
    add_common_flags(p)
    return p


FLAG_KEYS = ("shards", "partition", "time", "gpus", "cpus", "mem", "account", "qos", "constraint",
             "array_parallelism", "signal_delay_s", "max_requeues", "job_name")


def _flags(args: argparse.Namespace) -> dict:
    flags = {k: getattr(args, k) for k in FLAG_KEYS}
    if flags["time"] is not None and flags["time"].isdigit():
        flags["time"] = int(flags["time"])
    return flags


def print_plan(sweep, executor: str, overrides: list[str]) -> None:
    n_cfg = sum(len(cfgs) for _, _, cfgs in sweep.groups)
    print(f"# sweep {sweep.name}: {n_cfg} config(s), {len(sweep.tasks)} task(s), executor {executor}, "
          f"{len(sweep.groups)} job array(s); submitit folder {sweep.folder}")
    for g, (opts, tasks, cfgs) in enumerate(sweep.groups):
        print(f"# array {g}: {len(cfgs)} config(s) x {opts.shards} shard(s), {opts.gpus} GPU(s)/task, "
              f"time {opts.minutes} min")
        for k, t in enumerate(tasks):
            print(f"#   task {k}: {t.exp_dir} shard {t.shard[0]}/{t.shard[1]}: "
                  f"{render(t.command('python'))}")
        if executor == "slurm":
            print("# equivalent submission with the batch template (same array, resources, signal and requeue):")
            print(render(["mkdir", "-p", str(sweep.folder)]))
            print(render(sweep_sbatch_command(opts, cfgs, sweep.folder, overrides)))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work on parsed arguments."""
    sweep = plan_sweep(expand_config_paths(args.cfg), args.overrides, _flags(args), args.name, args.sweep_dir)
    print_plan(sweep, args.executor, args.overrides)
    if args.dry_run:
        return 0
    sweep.folder.mkdir(parents=True, exist_ok=True)
    jobs = submit(sweep, args.executor)
    manifest = [{"job_id": str(j.job_id), "exp_dir": t.exp_dir, "shard": list(t.shard), "cfg": t.cfg_path,
                 "overrides": list(t.overrides)} for j, t in zip(jobs, sweep.tasks)]
    (sweep.folder / "sweep.json").write_text(json.dumps(manifest, indent=2))
    for row in manifest:
        print(f"submitted {row['job_id']}: {row['exp_dir']} shard {row['shard'][0]}/{row['shard'][1]}")
    exps = sorted({t.exp_dir for t in sweep.tasks})
    if not args.wait:
        names = " ".join(Path(e).name for e in exps)
        print(f"# when the jobs are done: gali-eval --exp {names} --results-dir {Path(exps[0]).parent}")
        return 0
    status = 0
    for task, result, error in wait(jobs, sweep.tasks):
        if error is not None:
            log.error("%s: failed: %s", task.label, error)
            status = 1
        else:
            log.info("%s: %s", task.label, result["status"])
            status = status or int(result["returncode"] != 0)

    for exp_dir in exps:
        path = Path(exp_dir)
        exp = ExperimentDir(path.parent, path.name)
        if not exp.prediction_files():
            continue
        doc = evaluate_experiment(exp)
        scores = ", ".join(f"{s}={m.get('score')}" + ("" if m["complete"] else " (partial)")
                           for s, m in doc["subsets"].items())
        log.info("%s: %s", path.name, scores)
        status = status or int(not doc["complete"])
    return status


if __name__ == "__main__":
    sys.exit(main())
