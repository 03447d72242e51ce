"""Collection stage: one row per experiment, a sheet per task (xlsx), CSV + markdown tables, and task plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from harness.results import ExperimentDir
from harness.tasks.base import TASKS

log = logging.getLogger(__name__)

ID_COLUMNS = ["experiment", "model", "method", "params", "original_window", "target", "complete"]


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)


def experiment_row(exp: ExperimentDir, doc: dict[str, Any]) -> dict[str, Any]:
    """One spreadsheet row: identity columns, one column per subset, the task summary (e.g. average)."""
    prov = json.loads(exp.provenance_path.read_text()) if exp.provenance_path.is_file() else {}
    row: dict[str, Any] = {
        "experiment": doc["exp_name"], "model": doc["model"], "method": doc["method"],
        "params": _params_text(doc.get("params") or {}), "original_window": prov.get("original_window"),
        "target": doc.get("max_pe"), "complete": doc.get("complete"),
    }
    for subset, metrics in doc["subsets"].items():
        row[subset] = metrics.get("score")
    for key, value in (doc.get("summary") or {}).items():
        if isinstance(value, (int, float, str)) or value is None:
            row[key] = value
    return row


def load_scores(exps: list[ExperimentDir]) -> list[tuple[ExperimentDir, dict[str, Any]]]:
    """(experiment, scores document) for every experiment that has been evaluated."""
    out = []
    for exp in exps:
        if exp.scores_path.is_file():
            out.append((exp, json.loads(exp.scores_path.read_text())))
        else:
            log.warning("%s: no scores.json (run gali-eval first); skipped", exp.name)
    return out


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def collect(exps: list[ExperimentDir], out: Path, plots: bool = True) -> dict[str, Any]:
    """Write `out` (xlsx, a sheet per task) plus <task>.csv / <task>.md / figures beside it; return the tables."""
    by_task: dict[str, list[tuple[ExperimentDir, dict[str, Any]]]] = {}
    for exp, doc in load_scores(exps):
        by_task.setdefault(doc["task"], []).append((exp, doc))
    out.parent.mkdir(parents=True, exist_ok=True)
    tables: dict[str, pd.DataFrame] = {}
    figures: list[Path] = []
    for task, items in sorted(by_task.items()):
        rows = [experiment_row(exp, doc) for exp, doc in items]
        df = pd.DataFrame(rows)
        extra = [c for c in df.columns if c not in ID_COLUMNS]
        df = df[[c for c in ID_COLUMNS if c in df.columns] + extra]
        df = df.sort_values(["model", "method", "experiment"], kind="stable").reset_index(drop=True)
        tables[task] = df
        df.to_csv(out.parent / f"{task}.csv", index=False)
        (out.parent / f"{task}.md").write_text(to_markdown(df) + "\n")
        if plots:
            task_cls = TASKS.get(task)
            figures += task_cls.plot([d for _, d in items], [e for e, _ in items], out.parent)
    if tables:
        with pd.ExcelWriter(out, engine="openpyxl") as writer:
            for task, df in tables.items():
                df.to_excel(writer, sheet_name=task[:31], index=False)
    return {"tables": tables, "figures": figures}
