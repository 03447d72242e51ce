"""Rewrite README.md's generated tables from the commands that produce them (`make readme-tables`).

Today: the lab demo table (`gali-demo run`, deterministic on CPU) between `<!-- generated:demo-lab ... -->` and
`<!-- /generated:demo-lab -->`. tests/demo/test_demo.py fails when README's block differs from what the demo
computes, so a change that moves the numbers must rerun this script.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from harness.demo.demos import replace_generated_block, run_demo, tables_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo("lab", str(Path(tmp) / "demo"))
    text = args.readme.read_text(encoding="utf-8")
    new = replace_generated_block(text, "demo-lab", tables_markdown(result, headings=False))
    args.readme.write_text(new, encoding="utf-8")
    logging.getLogger(__name__).warning("%s: demo-lab table %s", args.readme, "updated" if new != text else "unchanged")


if __name__ == "__main__":
    main()
