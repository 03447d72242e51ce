"""`gali-collect`: gather scores of many experiments into a workbook, CSV/markdown tables and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli._common import add_experiment_args, log, selected_experiments
from harness.cli._flags import add_common_flags, run_command
from harness.core.errors import HarnessError
from harness.stages.collect import collect
from harness.stages.tracking import track_all


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-collect", description=__doc__)
    add_experiment_args(p)
    p.add_argument("--out", default=None, help="workbook path (default: <results-dir>/summary/summary.xlsx)")
    p.add_argument("--no-plots", action="store_true", help="tables only (no PNG figures)")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work on parsed arguments."""
    exps = selected_experiments(args)
    out = Path(args.out) if args.out else Path(args.results_dir) / "summary" / "summary.xlsx"
    if out.suffix.lower() != ".xlsx":
        raise HarnessError(f"--out {out}: the workbook must be an .xlsx file. Fix: e.g. --out summary/all.xlsx")
    result = collect(exps, out, plots=not args.no_plots)
    if not result["tables"]:
        raise HarnessError(f"{args.results_dir}: none of the {len(exps)} experiment(s) has been evaluated. Fix: "
                           "run gali-eval --all, then gali-collect --all")
    print(result["markdown"])
    print(f"workbook: {out}")
    print(f"tables:   {out.parent}/<sheet>.csv, <sheet>.md, summary.md")
    for fig in result["figures"]:
        print(f"figure:   {fig}")

    for run_id in track_all(exps, result["figures"]):  # experiments with a [tracking] table (optional extra)
        print(f"tracked:  run {run_id}")
    n = sum(len(df) for sheet, df in result["tables"].items() if "_beyond_" not in sheet)
    log.info("collected %d experiment(s) from %s", n, args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
