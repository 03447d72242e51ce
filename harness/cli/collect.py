"""`gali-collect`: gather scores of many experiments into a workbook, CSV/markdown tables and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli._common import guarded, log, setup_logging
from harness.errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gali-collect", description=__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--exp", nargs="+", help="experiment name(s) or glob(s)")
    g.add_argument("--all", action="store_true", help="every experiment under the results dir")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--out", default=None, help="workbook path (default: <results-dir>/summary/summary.xlsx)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from harness.collect import collect, to_markdown  # noqa: PLC0415
        from harness.results import find_experiments  # noqa: PLC0415

        exps = find_experiments(args.results_dir, None if args.all else args.exp)
        out = Path(args.out) if args.out else Path(args.results_dir) / "summary" / "summary.xlsx"
        result = collect(exps, out, plots=not args.no_plots) if exps else {"tables": {}}
        if not result["tables"]:
            raise HarnessError(f"{args.results_dir}: no evaluated experiments found. Fix: run gali-run, then "
                               "gali-eval --all, then gali-collect --all")
        for task, df in result["tables"].items():
            print(f"\n## {task}\n{to_markdown(df)}")
        print(f"\nworkbook: {out}")
        for fig in result.get("figures", []):
            print(f"figure: {fig}")
        log.info("collected %d experiments", sum(len(df) for df in result["tables"].values()))
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
