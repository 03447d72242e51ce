"""Pass-key / needle aggregation: a trial passes if ``str(answer)`` occurs in the prediction (the reference's test).

Records are dicts with ``length`` (nominal target length), ``depth`` (fraction or percent, used as given),
optionally ``tokens`` (real prompt length), and either ``passed`` or both ``prediction`` and ``answer``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any


def needle_passed(prediction: str, answer: Any) -> bool:
    """The reference's pass test: ``str(answer) in prediction`` (substring, so "123" passes "key 1234")."""
    return str(answer) in prediction


def record_passed(record: Mapping[str, Any]) -> bool:
    """``record["passed"]`` if present, else :func:`needle_passed` of its prediction and answer."""
    if "passed" in record and record["passed"] is not None:
        return bool(record["passed"])
    if "prediction" not in record or "answer" not in record:
        raise KeyError(f"needle record needs 'passed' or 'prediction'+'answer'; got keys {sorted(record)}")
    return needle_passed(record["prediction"], record["answer"])


class _Tally:
    __slots__ = ("n", "passed", "tokens")

    def __init__(self) -> None:
        self.n = 0
        self.passed = 0
        self.tokens: list[float] = []

    def add(self, ok: bool, tokens: Any) -> None:
        self.n += 1
        self.passed += int(ok)
        if tokens is not None:
            self.tokens.append(float(tokens))

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "passed": self.passed,
            "accuracy": self.passed / self.n if self.n else None,
            "mean_tokens": sum(self.tokens) / len(self.tokens) if self.tokens else None,
        }


def aggregate_needle(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy per (length, depth) cell, per length, per depth and overall (trial-weighted).

    Returns ``{"overall": s, "cells": [{"length", "depth", **s}], "by_length": [{"length", **s}],
    "by_depth": [{"depth", **s}]}`` with ``s = {"n", "passed", "accuracy", "mean_tokens"}``, lists sorted by
    length then depth. ``accuracy`` is None for an empty set; ``mean_tokens`` is None when no record has ``tokens``.
    """
    cells: dict[tuple[Any, Any], _Tally] = defaultdict(_Tally)
    by_length: dict[Any, _Tally] = defaultdict(_Tally)
    by_depth: dict[Any, _Tally] = defaultdict(_Tally)
    overall = _Tally()
    for record in records:
        ok = record_passed(record)
        tokens = record.get("tokens")
        length, depth = record["length"], record["depth"]
        for tally in (cells[(length, depth)], by_length[length], by_depth[depth], overall):
            tally.add(ok, tokens)
    return {
        "overall": overall.summary(),
        "cells": [{"length": k[0], "depth": k[1], **cells[k].summary()} for k in sorted(cells)],
        "by_length": [{"length": k, **by_length[k].summary()} for k in sorted(by_length)],
        "by_depth": [{"depth": k, **by_depth[k].summary()} for k in sorted(by_depth)],
    }
