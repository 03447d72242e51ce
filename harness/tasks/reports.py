"""Task-specific gali-collect tables, declared by their tasks (`Task.tables`): RULER and LongBench v2.

- `ruler_length_table` (RULER's `ruler_by_length`): one row per (experiment, RULER task) with a column per length and
  the task's average, plus an `average` row per experiment.
- `longbench_v2_table` (`longbench_v2_categories`): overall, easy / hard, short / medium / long, the compensated
  overall and one column per domain, one row per experiment.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

LEAD = ["experiment", "model", "method"]
LB2_COLUMNS = ["overall", "easy", "hard", "short", "medium", "long", "compensated_overall", "n"]


def _lead(doc: dict[str, Any]) -> dict[str, Any]:
    return {"experiment": doc.get("exp_name"), "model": doc.get("model"), "method": doc.get("method")}


def _sorted_rows(rows: list[dict[str, Any]], extra: list[str]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(str(r.get(c)) for c in LEAD + extra))


def ruler_length_table(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (experiment, RULER task): the score at each length and the task's average; plus an `average`
    row per experiment (the mean over tasks at each length)."""
    rows: list[dict[Any, Any]] = []
    for doc in docs:
        for task, metrics in (doc.get("subsets") or {}).items():
            rows.append({**_lead(doc), "task": task, **{int(k): v for k, v in (metrics.get("by_length") or {}).items()},
                         "average": metrics.get("score")})
        summary = doc.get("summary") or {}
        if summary.get("by_length"):
            rows.append({**_lead(doc), "task": "average", **{int(k): v for k, v in summary["by_length"].items()},
                         "average": summary.get("average")})
    lengths = sorted({k for r in rows for k in r if isinstance(k, int)})
    return pd.DataFrame(_sorted_rows(rows, []), columns=LEAD + ["task"] + lengths + ["average"])


def longbench_v2_table(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per experiment: LongBench v2 accuracies by difficulty, length and domain."""
    rows, domains = [], []
    for doc in docs:
        for metrics in (doc.get("subsets") or {}).values():
            compensated = metrics.get("score_compensated") if not metrics.get("compensated") else metrics.get("score")
            row = {**_lead(doc), "overall": metrics.get("score"), "compensated_overall": compensated,
                   "n": metrics.get("n_scored"), **{k: metrics.get(k) for k in ("easy", "hard", "short", "medium",
                                                                                 "long")}}
            for domain, value in (metrics.get("by_domain") or {}).items():
                row[domain] = value
                domains += [domain] if domain not in domains else []
            rows.append(row)
    return pd.DataFrame(_sorted_rows(rows, []), columns=LEAD + LB2_COLUMNS + sorted(domains))
