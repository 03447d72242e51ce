"""The formatted `summary.xlsx` of gali-collect.

Sheets: `comparison` first (one row per experiment of every task: task, model, target, method, one column per method
parameter, the headline score and its metric, the beyond-window score, completeness, speed and memory, then the
experiment name), `by_length` (method x length: the per-length rows tasks declare) when there is one, then one sheet
per task and per beyond-window table (as the CSV files, with the `params` text split into one column per parameter).
Every sheet: bold header row, frozen header (and first columns), auto filters, widths fitted to the content, numbers
with at most 4 decimals.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from harness.tasks.base import collect_task

MAX_WIDTH = 48
PARAM_PREFIX = "p:"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _param_value(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def param_columns(params_by_exp: dict[str, dict[str, Any]], experiments: list[str]) -> dict[str, list[Any]]:
    """`p:<key>` -> values per experiment (in `experiments` order), for every key some experiment sets."""
    keys: list[str] = []
    for name in experiments:
        keys += [k for k, v in (params_by_exp.get(name) or {}).items() if v is not None and k not in keys]
    return {f"{PARAM_PREFIX}{k}": [_param_value((params_by_exp.get(n) or {}).get(k)) for n in experiments]
            for k in keys}


def comparison_frame(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per experiment (scores documents of gali-eval), sorted by task, model, target, method."""
    rows = []
    for doc in docs:
        task = str(doc.get("task"))
        summary = doc.get("summary") or {}
        subsets = doc.get("subsets") or {}
        metric = collect_task(task).headline_metric(doc)  # what the headline number (summary.average) is
        beyond = (doc.get("length_subsets") or {}).get("beyond_original") or {}
        speed = doc.get("speed") or {}
        rows.append({
            "task": task, "model": doc.get("model"), "target": doc.get("max_pe"),
            "original_window": (doc.get("windows") or {}).get("original_window"), "method": doc.get("method"),
            "score": _num(summary.get("average")), "metric": metric,
            "score_beyond_window": _num((beyond.get("summary") or {}).get("average")),
            "n_beyond_window": beyond.get("n_scored"),
            "complete": bool(doc.get("complete")),
            "n_scored": sum(int(m.get("n_scored") or 0) for m in subsets.values()),
            "median_prefill_s": speed.get("median_prefill_s"), "median_decode_tok_s": speed.get("median_decode_tok_s"),
            "peak_mem_mb": speed.get("peak_mem_mb"), "experiment": doc.get("exp_name"),
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values(["task", "model", "target", "method", "experiment"], key=lambda c: c.astype(str),
                        kind="stable").reset_index(drop=True)
    params = param_columns({str(d.get("exp_name")): d.get("params") or {} for d in docs},
                           [str(x) for x in df["experiment"]])
    at = list(df.columns).index("method") + 1
    for offset, (col, values) in enumerate(params.items()):
        df.insert(at + offset, col, values)
    return df


def split_params(df: pd.DataFrame, params_by_exp: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """A task table with its `params` text column replaced by one `p:<key>` column per parameter."""
    if "params" not in df.columns or "experiment" not in df.columns:
        return df
    out = df.drop(columns=["params"])
    at = list(df.columns).index("params")
    for offset, (col, values) in enumerate(param_columns(params_by_exp, [str(x) for x in df["experiment"]]).items()):
        out.insert(at + offset, col, values)
    return out


def _format_sheet(ws: Any, df: pd.DataFrame, freeze_cols: int) -> None:
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDE4EE")
    for cell in ws[1]:
        cell.font, cell.fill = bold, fill
        cell.alignment = Alignment(wrap_text=False, vertical="center")
    ws.freeze_panes = ws.cell(row=2, column=freeze_cols + 1)
    if ws.max_row >= 1 and ws.max_column >= 1:
        ws.auto_filter.ref = f"A1:{get_column_letter(ws.max_column)}{ws.max_row}"
    for j, col in enumerate(df.columns, 1):
        values = [str(col)] + [_shown(v) for v in df.iloc[:, j - 1]]
        width = min(MAX_WIDTH, max(len(v) for v in values) + 2) + (2 if j == 1 else 0)  # room for the filter arrow
        ws.column_dimensions[get_column_letter(j)].width = max(8, width + 2)
        for row in range(2, ws.max_row + 1):
            cell = ws.cell(row=row, column=j)
            if isinstance(cell.value, float):
                cell.number_format = "0.0###"


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_workbook(sheets: dict[str, pd.DataFrame], out: Path, freeze: dict[str, int] | None = None) -> Path:
    """Write `sheets` (in order) to `out` with the formatting of the module docstring (atomically)."""
    freeze = freeze or {}
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
        for name, df in sheets.items():
            sheet = name[:31]
            df.to_excel(writer, sheet_name=sheet, index=False)
            _format_sheet(writer.sheets[sheet], df, freeze.get(name, 1))
    os.replace(tmp, out)
    return out


def build_sheets(tables: dict[str, pd.DataFrame], length_tables: dict[str, pd.DataFrame], by_length: pd.DataFrame,
                 docs: list[dict[str, Any]]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """(sheets in workbook order, frozen columns per sheet) for gali-collect."""
    params_by_exp = {str(d.get("exp_name")): d.get("params") or {} for d in docs}
    sheets: dict[str, pd.DataFrame] = {}
    freeze: dict[str, int] = {}
    comparison = comparison_frame(docs)
    if not comparison.empty:
        sheets["comparison"] = comparison
        freeze["comparison"] = list(comparison.columns).index("method") + 1
    if not by_length.empty:
        sheets["by_length"] = by_length
        freeze["by_length"] = 4
    for name, df in {**tables, **length_tables}.items():
        sheets[name] = split_params(df, params_by_exp)
        freeze[name] = 1
    return sheets, freeze
