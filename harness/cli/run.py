"""`gali-run`: run experiments from TOML configs or a method x task matrix (predictions are appended per example;
reruns resume).

Examples:
  gali-run --cfg configs/demo/lab/ppl-1-gali.toml --dry-run
  gali-run --model gali:lab --task needle,pg19 --method original,gali,selfextend --max-pe 1024 --limit 2 --dry-run
  gali-run --cfg base.toml --method gali,selfextend --set gali:params.chunk_coe=64
  gali-run --list methods

Exit status: 0 done; 1 some examples ended as error records (rerun to retry them); 2 a configuration, data or
model-loading error; 3 the preflight found the method mis-wired on this model (nothing was predicted);
143 stopped by a signal (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys

from harness.cli._common import guarded, log, parse_shard
from harness.cli._flags import add_common_flags, configure_logging, list_text
from harness.core.config import expand_config_paths
from harness.core.errors import HarnessError
from harness.core.results import ExperimentDir
from harness.core.runlog import run_log
from harness.stages.dryrun import dry_run
from harness.stages.matrix import Axes, load_experiments, parse_int_list, split_list
from harness.stages.resolve import RunPlan
from harness.stages.run import run_experiment
from harness.stages.run_checks import check_runtime
from harness.stages.tracking import tracking_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", default=[], help="TOML config file(s) or glob(s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="[NAME:]KEY=VALUE",
                   help="override a config key (dotted for tables: params.chunk_coe=1000); NAME: limits it to the "
                        "matrix cells of that task or method (gali:params.chunk_coe=64); repeatable")
    m = p.add_argument_group("matrix (one experiment per combination; see docs/matrix.md)")
    m.add_argument("--model", help="model(s), comma-separated: hub id, local directory or gali:lab")
    m.add_argument("--task", help="task(s), comma-separated, e.g. needle,pg19")
    m.add_argument("--method", help="method(s), comma-separated, e.g. original,gali,selfextend")
    m.add_argument("--max-pe", help="target length(s), comma-separated, e.g. 16384")
    m.add_argument("--default-params", action="store_true",
                   help="matrix cells keep each method's own defaults instead of its suggested parameters")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N examples per subset (max_examples)")
    p.add_argument("--results-dir", default=None, help="where experiment directories go (results_dir)")
    p.add_argument("--list", choices=["methods", "tasks", "models"], help="list methods (with parameters and "
                   "defaults), tasks (with options) or models, then exit")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan; load no weights")
    p.add_argument("--overwrite", action="store_true", help="discard existing predictions of the experiment")
    p.add_argument("--skip-preflight", action="store_true",
                   help="do not check the method's wiring on the loaded model before the first example "
                        "(the preflight; a failure exits with code 3)")
    p.add_argument("--shard", action="append", default=None,
                   help="run shard I of N (I/N); default from SLURM array variables")
    add_common_flags(p)
    return p


def load_all(args: argparse.Namespace) -> list[RunPlan]:
    """The experiments named by --cfg and/or the matrix flags, with --limit / --results-dir applied, resolved once
    (a dry run reads the model's config where it is on this machine, a run also where it can be fetched)."""
    if args.limit is not None and args.limit <= 0:
        raise HarnessError(f"--limit {args.limit}: must be a positive number of examples")
    overrides = list(args.overrides)
    if args.limit is not None:
        overrides.append(f"max_examples={args.limit}")
    if args.results_dir is not None:
        overrides.append(f"results_dir={json.dumps(str(args.results_dir))}")
    axes = Axes(model=split_list(args.model), task=split_list(args.task), method=split_list(args.method),
                max_pe=parse_int_list(args.max_pe, "--max-pe"))
    paths = expand_config_paths(args.cfg) if args.cfg else []
    plans = load_experiments(paths, overrides, axes, suggested=not args.default_params,
                             access="local" if args.dry_run else "peek")
    for plan in plans:
        tracking_options(plan.cfg.tracking, plan.cfg.source)  # a bad [tracking] table fails now, not after the run
    return plans


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    if args.list:
        try:
            print(list_text(args.list))
        except BrokenPipeError:  # `gali-run --list methods | head`
            sys.stdout = None  # type: ignore[assignment]
        return 0

    def body() -> int:
        shard = parse_shard(args.shard)
        plans = load_all(args)
        if len(plans) > 1:
            log.info("%d experiments: %s", len(plans), ", ".join(p.cfg.exp_name for p in plans))
        status = 0
        for plan in plans:
            cfg = plan.cfg
            if args.dry_run:
                print(dry_run(plan, shard))
                continue
            check_runtime(cfg)  # device and a writable results_dir, before the run log is created there
            logfile = ExperimentDir(cfg.results_dir, cfg.exp_name).path / "logs" / (
                "run.log" if shard[1] <= 1 else f"run.shard-{shard[0]}-of-{shard[1]}.log")
            with run_log(logfile):
                summary = run_experiment(plan, overwrite=args.overwrite, shard=shard,
                                         preflight=not args.skip_preflight)
            log.info("%s: %d run, %d errors, %d already done, %.1fs%s -> %s (log %s)", cfg.exp_name, summary.done,
                     summary.errors, summary.skipped, summary.seconds,
                     " (interrupted: rerun to resume)" if summary.interrupted else "", summary.exp_dir, logfile)
            if summary.interrupted:
                return 143
            status = 1 if summary.errors else status
        return status

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
