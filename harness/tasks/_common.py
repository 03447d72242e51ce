"""Helpers shared by the benchmark tasks: data tables, truncation, ids."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

TABLES = Path(__file__).parent / "tables"


@functools.cache
def table(name: str) -> dict[str, Any]:
    """A JSON data table from harness/tasks/tables/ (e.g. `longbench_dataset2prompt`)."""
    return json.loads((TABLES / f"{name}.json").read_text(encoding="utf-8"))


def n_tokens(tokenizer: Any, text: str) -> int:
    """Token count of `text` including the tokenizer's special tokens (BOS), as the reference counts."""
    return len(tokenizer(text)["input_ids"])


def middle_truncate(tokenizer: Any, prompt: str, budget: int) -> tuple[str, bool]:
    """LongBench middle truncation (harness.md §2.1): if the prompt (BOS included) has more than `budget` tokens,
    keep the first and last `int(budget / 2)` tokens, decoded without special tokens and joined with no separator.

    Returns (prompt, truncated). The text is re-tokenised later, so the final count may differ slightly.
    """
    ids = tokenizer(prompt, truncation=False)["input_ids"]
    if len(ids) <= budget:
        return prompt, False
    half = int(budget / 2)
    if half <= 0:
        return "", True
    head = tokenizer.decode(ids[:half], skip_special_tokens=True)
    tail = tokenizer.decode(ids[-half:], skip_special_tokens=True)
    return head + tail, True


def word_truncate(tokenizer: Any, document: str, max_prefill: int, slack: int = 50, step: int = 250,
                  keep_end: bool = False) -> tuple[str, bool]:
    """L-Eval truncation (harness.md §2.2): while the document has more than `max_prefill - slack` tokens (BOS
    included), keep the first (or, with `keep_end`, the last) `max_prefill - cnt` space-separated pieces, with `cnt`
    growing by `step` from 0. Returns (document, truncated)."""
    cnt = 0
    truncated = False
    while n_tokens(tokenizer, document) > max_prefill - slack:
        truncated = True
        keep = max_prefill - cnt
        if keep <= 0:
            return "", True
        pieces = document.split(" ")
        document = " ".join(pieces[-keep:] if keep_end else pieces[:keep])
        cnt += step
    return document, truncated


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe version of `text` (ids become file names for per-document arrays)."""
    return _UNSAFE.sub("_", text).strip("._")[:limit] or "doc"
