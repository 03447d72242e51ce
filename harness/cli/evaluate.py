"""`gali-eval`: score the predictions of one or all experiments (writes results/<exp>/scores.json)."""

from __future__ import annotations

import argparse
import sys

from harness.cli._common import add_experiment_args, log, selected_experiments
from harness.cli._flags import add_common_flags, run_command
from harness.core.errors import HarnessError
from harness.stages.evaluate import evaluate_experiment


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-eval", description=__doc__)
    add_experiment_args(p)
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work on parsed arguments."""
    exps = selected_experiments(args)
    status = 0
    for exp in exps:
        try:
            doc = evaluate_experiment(exp)
        except HarnessError as exc:  # one broken experiment: say which, score the others
            if len(exps) == 1:
                raise
            log.error("%s: not scored: %s", exp.name, exc)
            status = exc.exit_code
            continue
        parts = []
        for subset, m in doc["subsets"].items():
            flag = "" if m["complete"] else f" (partial {m['n_scored']}/{m['n_expected']})"
            flag += f" ({m['n_errors']} errors)" if m.get("n_errors") else ""
            parts.append(f"{subset}={m.get('score')}{flag}")
        log.info("%s [%s/%s]: %s", exp.name, doc["task"], doc["method"], ", ".join(parts))
        for key, sub in (doc.get("length_subsets") or {}).items():
            log.info("%s %s (prompt_len >= %s): %s over %d records", exp.name, key, sub["threshold"],
                     sub["summary"], sub["n_scored"])
    return status


if __name__ == "__main__":
    sys.exit(main())
