"""Task-specific tables and figures for `gali-collect`: RULER and LongBench v2.

- `ruler`: the main sheet gets `acc@<L>` columns (average over the tasks at each length) next to the task columns,
  `average` and `effective_length`; the `ruler_by_length` table has one row per (experiment, RULER task) with a column
  per length and the task's average; `plot_ruler` draws the per-length average of every experiment of a model on one
  figure (`ruler_<model>.png`) with RULER's threshold as a dashed line (and M, when inside the length range).
- `longbench_v2`: the `longbench_v2_categories` table: overall, easy / hard, short / medium / long, the compensated
  overall and one column per domain, one row per experiment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

LEAD = ["experiment", "model", "method"]
LB2_COLUMNS = ["overall", "easy", "hard", "short", "medium", "long", "compensated_overall", "n"]


def _lead(doc: dict[str, Any]) -> dict[str, Any]:
    return {"experiment": doc.get("exp_name"), "model": doc.get("model"), "method": doc.get("method")}


def _sorted_rows(rows: list[dict[str, Any]], extra: list[str]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(str(r.get(c)) for c in LEAD + extra))


def detail_columns(task: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Per-length columns of a task handled here (None for the other tasks)."""
    if task != "ruler":
        return None
    by_length = (doc.get("summary") or {}).get("by_length") or {}
    return {f"acc@{length}": value for length, value in by_length.items()}


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


TABLES = {"ruler": ("ruler_by_length", ruler_length_table), "longbench_v2": ("longbench_v2_categories",
                                                                               longbench_v2_table)}


def task_tables(by_task: dict[str, list[Any]]) -> dict[str, pd.DataFrame]:
    """Extra tables of the tasks present (`by_task`: task -> [(experiment dir, scores document)])."""
    out = {}
    for task, (name, build) in TABLES.items():
        docs = [doc for _, doc in by_task.get(task, [])]
        if docs:
            out[name] = build(docs)
    return out


def plot_ruler(docs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """RULER average vs length, every experiment of a model on one figure; RULER's threshold dashed."""
    from harness.stages import plots as P

    paths = []
    for model, stem, group in P._by_model(docs):
        curves = []
        for doc in group:
            points = sorted((int(k), float(v)) for k, v in ((doc.get("summary") or {}).get("by_length") or {}).items()
                            if P._number(v) is not None)
            if points:
                curves.append((P._label(doc), points))
        if not curves:
            continue
        threshold = next((d["summary"]["threshold"] for d in group if (d.get("summary") or {}).get("threshold")), None)
        path = out_dir / f"ruler_{stem}.png"
        sig = P.signature("ruler", model, curves, threshold, [P._window(d) for d in group])
        if P.is_current(path, sig):
            paths.append(path)
            continue
        fig, ax = P._figure(7.5, 4.5, (0.9, 0.6, 0.2, 0.4))
        for label, points in curves:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
        lengths = sorted({p[0] for _, pts in curves for p in pts})
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [P._length_label(x) for x in lengths])
        ax.minorticks_off()
        if threshold is not None:
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        for window in sorted({w for w in (P._window(d) for d in group) if w and lengths[0] <= w <= lengths[-1]}):
            ax.axvline(window, color="black", linestyle=":", linewidth=1, label=f"original window M = {window}")
        ax.set_ylim(0, 100)
        ax.set_xlabel("target length (tokens)")
        ax.set_ylabel("RULER average (%)")
        ax.set_title(f"RULER - {model}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(P._save(fig, path, sig))
    return paths
