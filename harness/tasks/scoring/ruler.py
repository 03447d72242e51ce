"""RULER scoring: `string_match_all` / `string_match_part`, per-length tables, the average and the effective length.

Equal to RULER's `scripts/eval/evaluate.py` and `scripts/eval/synthetic/constants.py`: a prediction is stripped, its
control characters (\\x00-\\x1f) become newlines, and it is stripped again; a reference matches when it occurs in the
prediction, case-insensitively. `all`: the fraction of references found (niah, vt, cwe, fwe); `part`: 1 if any
reference is found (qa). Scores are percentages rounded to 2 decimals, like RULER's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    """RULER's postprocess_pred."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def match_all(prediction: str, references: Sequence[str]) -> float:
    """Fraction of `references` contained in `prediction` (case-insensitive)."""
    pred = prediction.lower()
    return sum(r.lower() in pred for r in references) / len(references) if references else 0.0


def match_part(prediction: str, references: Sequence[str]) -> float:
    """1.0 if any reference is contained in `prediction` (case-insensitive), else 0.0."""
    pred = prediction.lower()
    return float(any(r.lower() in pred for r in references))


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER's string_match_all over a list of examples (percent, 2 decimals)."""
    return round(100 * sum(match_all(p, r) for p, r in zip(preds, refs)) / len(preds), 2) if preds else 0.0


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER's string_match_part over a list of examples (percent, 2 decimals)."""
    return round(100 * sum(match_part(p, r) for p, r in zip(preds, refs)) / len(preds), 2) if preds else 0.0


METRICS = {"all": string_match_all, "part": string_match_part}


def score_task(records: Iterable[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """One RULER task from its records (`prediction`, `outputs`, `meta.length`, optional `prompt_len`).

    Returns {"score": mean of the per-length scores, "by_length": {"<L>": score}, "n_by_length": {"<L>": n},
    "tokens_by_length": {"<L>": mean prompt tokens}, "nulls": empty predictions}.
    """
    fn = METRICS[metric]
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(int(r["meta"]["length"]), []).append(r)
    by_length, counts, tokens = {}, {}, {}
    nulls = 0
    for length in sorted(groups):
        rows = groups[length]
        preds = [postprocess(str(r.get("prediction") or "")) for r in rows]
        nulls += sum(not p for p in preds)
        by_length[str(length)] = fn(preds, [list(r["outputs"]) for r in rows])
        counts[str(length)] = len(rows)
        lens = [r["prompt_len"] for r in rows if isinstance(r.get("prompt_len"), (int, float))]
        tokens[str(length)] = round(sum(lens) / len(lens), 1) if lens else None
    values = list(by_length.values())
    return {"score": round(sum(values) / len(values), 2) if values else None, "by_length": by_length,
            "n_by_length": counts, "tokens_by_length": tokens, "nulls": nulls}


def effective_length(by_length: Mapping[Any, float | None], threshold: float) -> int | None:
    """RULER's effective length: the longest length up to which every length's average stays >= `threshold`
    (None when the shortest length is already below it)."""
    best = None
    for length in sorted(by_length, key=lambda k: int(k)):
        value = by_length[length]
        if value is None or value < threshold:
            break
        best = int(length)
    return best


def summarize(per_task: Mapping[str, Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    """Task-level numbers: the average over tasks at each length, the overall average (mean of those) and the
    effective length."""
    cells: dict[int, list[float]] = {}
    for metrics in per_task.values():
        for length, value in (metrics.get("by_length") or {}).items():
            if isinstance(value, (int, float)):
                cells.setdefault(int(length), []).append(float(value))
    by_length = {str(k): round(sum(v) / len(v), 2) for k, v in sorted(cells.items())}
    values = list(by_length.values())
    return {"average": round(sum(values) / len(values), 2) if values else None,
            "effective_length": effective_length(by_length, threshold), "threshold": threshold,
            "by_length": by_length}
