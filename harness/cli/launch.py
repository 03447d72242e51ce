"""`gali-launch`: run an experiment on several GPUs of one node (one shard per GPU, separate processes), then score.

Examples:
  gali-launch --cfg configs/x.toml --gpus 0,1,2,3      # 4 shards, one per GPU
  gali-launch --cfg configs/x.toml --gpus 0+1,2+3      # 2 shards, each model split over 2 GPUs (device_map=auto)
  gali-launch --cfg configs/x.toml --gpus cpu,cpu      # 2 CPU processes (testing)
Logs: <results_dir>/<exp_name>/logs/launch.shard-I-of-N.log. Rerun the same command to resume after a stop.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli._common import log
from harness.cli._flags import add_common_flags, run_command
from harness.cluster.launch import launch, parse_gpus
from harness.core.config import expand_config_paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", required=True, help="TOML config file(s) or glob(s); run one after another")
    p.add_argument("--gpus", required=True,
                   help="comma-separated devices, one shard each: GPU index, GPU group like 0+1, 'cpu'; or 'all'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (as in gali-run); repeatable")
    p.add_argument("--overwrite", action="store_true", help="discard existing predictions of the experiment first")
    p.add_argument("--no-eval", action="store_true", help="do not run gali-eval after the shards finish")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work on parsed arguments."""
    groups = parse_gpus(args.gpus)
    status = 0
    for path in expand_config_paths(args.cfg):
        result = launch(path, groups, args.overrides, overwrite=args.overwrite, evaluate=not args.no_eval)
        if result.scores is not None:
            parts = []
            for subset, m in result.scores["subsets"].items():
                flag = "" if m["complete"] else f" (partial {m['n_scored']}/{m['n_expected']})"
                parts.append(f"{subset}={m.get('score')}{flag}")
            log.info("%s: %s", result.exp_name, ", ".join(parts))
        if result.interrupted:
            log.warning("stopped early: rerun the same command to resume")
            return 143
        if result.failed:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
