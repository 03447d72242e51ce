"""LongBench v2 scoring, equal to THUDM/LongBench's `pred.py` (answer extraction) and `result.py` (accuracies).

The answer is the letter of the first "The correct answer is (X)" in the response with `*` removed, else of the first
"The correct answer is X" (X in A-D), else none. Accuracy counts a question as 1 when the extracted letter equals the
answer; the "compensated" variant counts an unanswered question (no letter extracted) as 0.25, chance level.
Percentages are rounded to 1 decimal like result.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_BARE = re.compile(r"The correct answer is ([A-D])")


def extract_answer(response: str) -> str | None:
    """The official extract_answer."""
    response = response.replace("*", "")
    match = _PAREN.search(response) or _BARE.search(response)
    return match.group(1) if match else None


def question_score(pred: str | None, answer: str, compensated: bool = False) -> float:
    """1 for a correct letter, 0 otherwise; 0.25 for no letter when `compensated`."""
    if compensated and pred is None:
        return 0.25
    return float(pred == answer)


def _pct(values: list[float]) -> float | None:
    return round(100 * sum(values) / len(values), 1) if values else None


def accuracy_table(records: Iterable[Mapping[str, Any]], compensated: bool = False) -> dict[str, Any]:
    """Overall, easy / hard, short / medium / long and per-domain accuracy (%) of records with `pred`, `answer`,
    `difficulty`, `length` and `domain`. Like result.py, a difficulty other than "easy" counts as hard and a length
    other than "short" / "medium" as long."""
    groups: dict[str, list[float]] = {k: [] for k in ("overall", "easy", "hard", "short", "medium", "long")}
    domains: dict[str, list[float]] = {}
    for r in records:
        acc = question_score(r.get("pred"), str(r.get("answer")), compensated)
        groups["overall"].append(acc)
        groups["easy" if r.get("difficulty") == "easy" else "hard"].append(acc)
        length = r.get("length")
        groups[length if length in ("short", "medium") else "long"].append(acc)
        domains.setdefault(str(r.get("domain")), []).append(acc)
    out: dict[str, Any] = {k: _pct(v) for k, v in groups.items()}
    out["by_domain"] = {d: _pct(v) for d, v in sorted(domains.items())}
    out["counts"] = {k: len(v) for k, v in groups.items()}
    return out
