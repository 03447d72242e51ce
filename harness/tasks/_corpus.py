"""An offline held-out text corpus for perplexity demos: the running Python's standard library and pydoc topics.

The selection rule matches the lab model's training script (scripts/train_lab_model.py): stdlib `*.py` files (outside
test / site-packages / lib2to3 / __pycache__ / idle_test directories) sorted by relative path, and `pydoc_data.topics`
sorted by key; the last 10% of each is held out (never trained on).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from harness.tasks.datasets import Document

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "lib2to3", "__pycache__"}
HELD_OUT_FRACTION = 0.1


def python_heldout_documents(fraction: float = HELD_OUT_FRACTION) -> list[Document]:
    """Held-out stdlib source files, then held-out pydoc topics (deterministic for a given Python version); empty
    files (such as bare `__init__.py`) are skipped."""
    import pydoc_data.topics as topics

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((f for f in root.rglob("*.py") if not SKIP_DIRS.intersection(f.relative_to(root).parts)),
                   key=lambda f: f.relative_to(root).as_posix())
    keys = sorted(topics.topics)
    nf, nk = int(len(files) * (1 - fraction)), int(len(keys) * (1 - fraction))
    docs = [Document(f.relative_to(root).as_posix(), f.read_text(encoding="utf-8", errors="replace"),
                     {"file": f.relative_to(root).as_posix()}) for f in files[nf:]]
    docs += [Document(f"pydoc-{k}", topics.topics[k], {"topic": k}) for k in keys[nk:]]
    return [d for d in docs if d.text.strip()]
