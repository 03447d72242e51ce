"""`gali-check`: check a method's invariants on the configured model at small lengths (pass/fail table).

Exit status: 0 all checks passed (or skipped), 1 a check failed, 2 a configuration error.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli._flags import add_common_flags, run_command
from harness.core.config import expand_config_paths
from harness.core.errors import HarnessError
from harness.stages.check import format_table, run_checks, summary_line
from harness.stages.resolve import load_plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", required=True,
                   help="TOML experiment config(s) or glob(s) (model, method, [params], max_pe); checked in turn")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for tables: params.chunk_coe=64); repeatable")
    p.add_argument("--max-len", type=int, default=None,
                   help="cap on the longest checked length (default: max_pe, or 2x the window)")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work on parsed arguments."""
    if args.max_len is not None and args.max_len < 2:
        raise HarnessError(f"--max-len {args.max_len}: must be at least 2")
    status = 0
    for path in expand_config_paths(args.cfg):
        plan = load_plan(path, args.overrides, access="load")  # resolved with the model's window M
        results, meta = run_checks(plan.cfg, args.max_len, plan.model_config)
        print(f"gali-check: {path}: method '{meta['method']}' on {meta['model']} (window M={meta['window']}, "
              f"long length {meta['long_len']}, {meta['dtype']} on {meta['device']})")
        print(format_table(results))
        print(summary_line(results))
        status = 1 if any(r.failed for r in results) else status
    return status


if __name__ == "__main__":
    sys.exit(main())
