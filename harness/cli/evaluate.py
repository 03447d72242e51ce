"""`gali-eval`: score the predictions of one or all experiments (writes results/<exp>/scores.json)."""

from __future__ import annotations

import argparse
import sys

from harness.cli._common import guarded, log, setup_logging
from harness.errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gali-eval", description=__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--exp", nargs="+", help="experiment name(s) or glob(s) under the results dir")
    g.add_argument("--all", action="store_true", help="every experiment under the results dir")
    p.add_argument("--results-dir", default="results")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from harness.evaluate import evaluate_experiment  # noqa: PLC0415
        from harness.results import find_experiments  # noqa: PLC0415

        exps = find_experiments(args.results_dir, None if args.all else args.exp)
        if not exps:
            what = "" if args.all else f" matching {' '.join(args.exp)}"
            raise HarnessError(f"{args.results_dir}: found no experiment{what}. Fix: run gali-run first, "
                               "or pass --results-dir")
        for exp in exps:
            doc = evaluate_experiment(exp)
            parts = []
            for subset, m in doc["subsets"].items():
                flag = "" if m["complete"] else f" (partial {m['n_scored']}/{m['n_expected']})"
                parts.append(f"{subset}={m.get('score')}{flag}")
            log.info("%s [%s/%s]: %s", exp.name, doc["task"], doc["method"], ", ".join(parts))
            for key, sub in (doc.get("length_subsets") or {}).items():
                log.info("%s %s (prompt_len >= %s): %s over %d records", exp.name, key, sub["threshold"],
                         sub["summary"], sub["n_scored"])
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
