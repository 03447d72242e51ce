"""`gali-check`: check a method's invariants on the configured model at small lengths (pass/fail table).

Exit status: 0 all checks passed (or skipped), 1 a check failed, 2 a configuration error.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli._common import guarded, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="TOML experiment config (model, method, [params], max_pe)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for tables: params.chunk_coe=64); repeatable")
    p.add_argument("--max-len", type=int, default=None,
                   help="cap on the longest checked length (default: max_pe, or 2x the window)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from harness.check import format_table, run_checks, summary_line  # noqa: PLC0415
        from harness.config import load_config  # noqa: PLC0415
        from harness.errors import HarnessError  # noqa: PLC0415
        from harness.models import load_model_config, model_info  # noqa: PLC0415
        from harness.resolve import resolve  # noqa: PLC0415

        if args.max_len is not None and args.max_len < 2:
            raise HarnessError(f"--max-len {args.max_len}: must be at least 2")
        cfg = load_config(args.cfg, args.overrides)
        resolve(cfg, window=model_info(load_model_config(cfg)).original_window, peek=False)
        results, meta = run_checks(cfg, args.max_len)
        print(f"gali-check: method '{meta['method']}' on {meta['model']} (window M={meta['window']}, "
              f"long length {meta['long_len']}, {meta['dtype']} on {meta['device']})")
        print(format_table(results))
        print(summary_line(results))
        return 1 if any(r.failed for r in results) else 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
