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


# The clean-up that transformers 4.x applied when decoding with `clean_up_tokenization_spaces` (the reference ran
# 4.46.2; transformers 5 skips it for BPE tokenizers): each pair is (text, replacement), applied in this order.
CLEANUP_REPLACEMENTS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_spaces(text: str) -> str:
    """transformers 4.x `clean_up_tokenization`: "I 'm" -> "I'm", "a != b" -> "a!= b", "[1 , 2]" -> "[1, 2]"."""
    for old, new in CLEANUP_REPLACEMENTS:
        text = text.replace(old, new)
    return text


def decode(tokenizer: Any, ids: list[int], clean_up: bool = False) -> str:
    """Decode without special tokens; with `clean_up`, apply :func:`clean_up_spaces` when the tokenizer's
    `clean_up_tokenization_spaces` flag is set (what transformers 4.46 did, e.g. for Llama-3). transformers' own
    clean-up is always off here (transformers 5 ignores the flag for BPE tokenizers, with a warning)."""
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if clean_up and getattr(tokenizer, "clean_up_tokenization_spaces", False):
        text = clean_up_spaces(text)
    return text


def prediction_text(tokenizer: Any, generation: Any, clean_up: bool) -> str:
    """A generation's text as the reference decoded it: with `clean_up` (reference / longbench formats) and the
    tokenizer's flag set, the generated ids re-decoded with :func:`decode`'s clean-up; otherwise the engine's text."""
    if clean_up and getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return decode(tokenizer, list(generation.token_ids), True)
    return generation.text


def middle_truncate(tokenizer: Any, prompt: str, budget: int, clean_up: bool = False) -> tuple[str, bool]:
    """LongBench middle truncation (docs/tasks.md): if the prompt (BOS included) has more than `budget` tokens,
    keep the first and last `int(budget / 2)` tokens, decoded without special tokens (see :func:`decode` for
    `clean_up`) and joined with no separator.

    Returns (prompt, truncated). The text is re-tokenised later, so the final count may differ slightly.
    """
    ids = tokenizer(prompt, truncation=False)["input_ids"]
    if len(ids) <= budget:
        return prompt, False
    half = int(budget / 2)
    if half <= 0:
        return "", True
    return decode(tokenizer, ids[:half], clean_up) + decode(tokenizer, ids[-half:], clean_up), True


def word_truncate(tokenizer: Any, document: str, max_prefill: int, slack: int = 50, step: int = 250,
                  keep_end: bool = False) -> tuple[str, bool]:
    """L-Eval truncation, the reference's loop exactly: while the document has more than `max_prefill - slack`
    tokens (BOS included), split it on single spaces and keep `pieces[:max_prefill - cnt]` (codeU, `keep_end`:
    `pieces[cnt - max_prefill:]`), with `cnt` = 0, step, 2·step, … Python slicing semantics are kept when the count
    goes negative: `[:-k]` drops the last k pieces, and for codeU `[0:]` keeps all and `[k:]` drops the first k.
    Returns (document, truncated)."""
    cnt = 0
    truncated = False
    while n_tokens(tokenizer, document) > max_prefill - slack:
        if not document:  # nothing left to cut (only possible when the budget is below the BOS-only length)
            break
        truncated = True
        pieces = document.split(" ")
        document = " ".join(pieces[cnt - max_prefill:] if keep_end else pieces[:max_prefill - cnt])
        cnt += step
    return document, truncated


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe version of `text` (ids become file names for per-document arrays)."""
    return _UNSAFE.sub("_", text).strip("._")[:limit] or "doc"
