"""Collection stage: scores.json of many experiments -> one workbook (a sheet per task), CSV + markdown, figures.

Per task, one row per experiment: identity columns (model, method, key params, original and target window),
completeness (`complete`, scored/expected counts, `incomplete` naming partial or missing datasets), one column per
dataset in the task's order, the `average` over them, the task's other summary numbers, and the columns the task
declares (`Task.summary_columns`, e.g. `acc@<L>` per length). Rows are sorted by model, method, experiment.
gali-eval's beyond-window subsets (`beyond_original`: prompt_len >= M, `beyond_target`: >= max_pe) add
`average_beyond_orig` / `n_beyond_orig` (and `_target`) columns, and their per-dataset tables are written as
`<task>_beyond_orig.csv/.md` (and `_target`) beside the workbook. Tasks declare their extra tables (`Task.tables`)
and figures (`Task.figures`, drawn by harness.stages.plots in worker processes while the tables are written);
`comparison_table` gives the method x length table of the rows tasks declare (`Task.length_row`, e.g. pass rate or
perplexity per length) for the demo. No task is named here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.core.results import ExperimentDir, io_error
from harness.stages import figure_pool
from harness.stages.plots import Planned, save
from harness.stages.plots import plan as plan_figures
from harness.stages.workbook import build_sheets, comparison_frame, write_workbook
from harness.tasks.base import collect_task

log = logging.getLogger(__name__)

ID_COLUMNS = ["experiment", "model", "method", "params", "original_window", "target", "complete", "n_scored",
              "n_expected", "incomplete"]
LENGTH_SHEETS = {"beyond_original": "beyond_orig", "beyond_target": "beyond_target"}
LENGTH_COLUMNS = ["threshold", "n_in_subset"]
DETAIL_PREFIXES = ("acc@", "ppl@")

Item = tuple[ExperimentDir, dict[str, Any]]


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _original_window(exp: ExperimentDir, doc: dict[str, Any]) -> int | None:
    """M from the scores document (gali-eval read it from provenance/config), else provenance.json."""
    window = (doc.get("windows") or {}).get("original_window")
    if window is None and exp.provenance_path.is_file():
        try:
            window = json.loads(exp.provenance_path.read_text()).get("original_window")
        except (OSError, ValueError):
            window = None
    return window


def identity(exp: ExperimentDir, doc: dict[str, Any]) -> dict[str, Any]:
    """The identity columns of an experiment's rows."""
    return {"experiment": doc.get("exp_name") or exp.name, "model": doc.get("model"), "method": doc.get("method"),
            "params": _params_text(doc.get("params") or {}), "original_window": _original_window(exp, doc),
            "target": doc.get("max_pe")}


def experiment_row(exp: ExperimentDir, doc: dict[str, Any]) -> dict[str, Any]:
    """One row: identity, completeness, one column per subset, the average, other task summary numbers, details."""
    subsets: dict[str, dict[str, Any]] = doc.get("subsets") or {}
    expected = [m.get("n_expected") for m in subsets.values()]
    n_expected = sum(int(e) for e in expected if e is not None) if expected and None not in expected else None
    partial = [f"{s} {m.get('n_scored')}/{m.get('n_expected')}" for s, m in subsets.items() if not m.get("complete")]
    row: dict[str, Any] = {**identity(exp, doc), "complete": bool(doc.get("complete")),
                           "n_scored": sum(int(m.get("n_scored") or 0) for m in subsets.values()),
                           "n_expected": n_expected,
                           "incomplete": "; ".join(partial)}
    for subset, metrics in subsets.items():
        row[subset] = metrics.get("score")
    summary = doc.get("summary") or {}
    if "average" not in summary:
        values = [v for v in (_number(m.get("score")) for m in subsets.values()) if v is not None]
        row["average"] = round(sum(values) / len(values), 4) if values else None
    for key, value in summary.items():
        if isinstance(value, (int, float, str)) or value is None:
            row[key] = value
    for key, info in (doc.get("length_subsets") or {}).items():
        suffix = LENGTH_SHEETS.get(key, key)
        row[f"average_{suffix}"] = (info.get("summary") or {}).get("average")
        row[f"n_{suffix}"] = info.get("n_scored")
    row.update(collect_task(str(doc.get("task"))).summary_columns(doc))
    row["_subsets"] = list(subsets)
    return row


def length_subset_row(exp: ExperimentDir, doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A row of the `key` (beyond_original / beyond_target) sheet, or None when the experiment has no such subset."""
    info = (doc.get("length_subsets") or {}).get(key)
    if not info:
        return None
    row: dict[str, Any] = {**identity(exp, doc), "threshold": info.get("threshold"),
                           "n_in_subset": info.get("n_scored")}
    subsets = {s: m[key] for s, m in (doc.get("subsets") or {}).items() if isinstance(m.get(key), dict)}
    for subset, metrics in subsets.items():
        row[subset] = metrics.get("score")
    row["average"] = (info.get("summary") or {}).get("average")
    row["_subsets"] = list(subsets)
    return row


def merge_orders(orders: Iterable[list[str]]) -> list[str]:
    """One order containing every name, keeping each list's relative order where they agree (new names go right
    after their predecessor in the list that introduced them)."""
    out: list[str] = []
    for seq in orders:
        prev: str | None = None
        for name in seq:
            if name not in out:
                out.insert(out.index(prev) + 1 if prev is not None else 0, name)
            prev = name
    return out


def _detail_key(column: str) -> tuple[str, float, str]:
    prefix, _, rest = column.partition("@")
    number, _, tag = rest.partition("[")
    try:
        return tag, float(number), prefix
    except ValueError:
        return tag, math.inf, column


def build_table(rows: list[dict[str, Any]], lead: list[str]) -> pd.DataFrame:
    """Rows -> DataFrame: `lead` columns, datasets (merged task order), average, other summary keys, per-length
    details; sorted by model, method, experiment. Rows lacking a dataset that other rows have are flagged."""
    rows = sorted(rows, key=lambda r: (str(r.get("model")), str(r.get("method")), str(r.get("experiment"))))
    datasets = merge_orders(r["_subsets"] for r in rows)
    if "incomplete" in lead:
        for r in rows:
            missing = [d for d in datasets if d not in r["_subsets"]]
            if missing:
                r["complete"] = False
                r["incomplete"] = "; ".join(filter(None, [r["incomplete"], "missing " + ", ".join(missing)]))
    records = [{k: v for k, v in r.items() if k != "_subsets"} for r in rows]
    known = set(lead) | set(datasets) | {"average"}
    extra: list[str] = []
    for r in records:
        extra += [c for c in r if c not in known and c not in extra]
    details = sorted((c for c in extra if c.startswith(DETAIL_PREFIXES)), key=_detail_key)
    others = [c for c in extra if c not in details]
    average = ["average"] if len(datasets) != 1 else []  # one dataset: the average would repeat it
    columns = lead + datasets + average + others + details
    return pd.DataFrame(records, columns=columns)


def load_scores(exps: list[ExperimentDir]) -> list[Item]:
    """(experiment, scores document) for every evaluated experiment; warns about unevaluated or stale ones."""
    out = []
    for exp in exps:
        if not exp.scores_path.is_file():
            log.warning("%s: no scores.json (run gali-eval first); skipped", exp.name)
            continue
        try:
            doc = json.loads(exp.scores_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable scores.json (%s); rerun gali-eval --exp %s. Skipped", exp.name, exc, exp.name)
            continue
        problem = scores_problem(exp, doc)
        if problem:
            log.warning("%s: broken %s (%s); rerun gali-eval --exp %s. Skipped", exp.name, exp.scores_path, problem,
                        exp.name)
            continue
        scored_at = exp.scores_path.stat().st_mtime
        if any(p.stat().st_mtime > scored_at for paths in exp.prediction_files().values() for p in paths):
            log.warning("%s: predictions changed after scoring; rerun gali-eval --exp %s for fresh numbers",
                        exp.name, exp.name)
        out.append((exp, doc))
    return out


_DICT_KEYS = ("subsets", "summary", "length_subsets", "params", "windows", "speed")


def scores_problem(exp: ExperimentDir, doc: Any) -> str | None:
    """Why a scores document cannot be collected (None when it can): wrong shape, or a row cannot be built."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    for key in _DICT_KEYS:
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            return f"'{key}' is a {type(doc[key]).__name__}, not an object"
    for name, key in (("subsets", "subsets"), ("length_subsets", "length_subsets")):
        bad = [s for s, m in (doc.get(key) or {}).items() if not isinstance(m, dict)]
        if bad:
            return f"{name}['{bad[0]}'] is not an object"
    try:  # the same code collect() runs, so a document that passes cannot break the tables
        rows = [experiment_row(exp, doc), *(length_subset_row(exp, doc, key) for key in LENGTH_SHEETS)]
        comparison_table([doc])
        task_tables({str(doc.get("task")): [(exp, doc)]})
        comparison_frame([doc])
        for row in filter(None, rows):
            cell = next((k for k, v in row.items() if k != "_subsets" and isinstance(v, (dict, list, tuple))), None)
            if cell is not None:
                return f"column {cell!r} would hold a {type(row[cell]).__name__}, not a value"
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def comparison_table(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """Method x length table for the demo: the per-length rows tasks declare (`Task.length_row`).

    Columns `model, method, experiment, metric` (the name in the task's `length_row`) then one
    column per length (ascending, union over all documents; empty where not measured). Rows sorted by model, method,
    experiment, metric.
    """
    rows: list[dict[Any, Any]] = []
    for doc in docs:
        task = collect_task(str(doc.get("task")))
        base = {"model": doc.get("model"), "method": doc.get("method"), "experiment": doc.get("exp_name")}
        for metrics in (doc.get("subsets") or {}).values():
            row = task.length_row(metrics)
            if row is not None:
                rows.append({**base, "metric": row[0], **row[1]})
    lead = ["model", "method", "experiment", "metric"]
    lengths = sorted({k for r in rows for k in r if isinstance(k, int)})
    rows.sort(key=lambda r: tuple(str(r[c]) for c in lead))
    return pd.DataFrame(rows, columns=lead + lengths)


def task_tables(by_task: dict[str, list[Item]]) -> dict[str, pd.DataFrame]:
    """The extra tables the tasks present declare (`Task.tables`), in task order."""
    out = {}
    for task, items in sorted(by_task.items()):
        for table in collect_task(task).tables:
            out[table.name] = table.build([doc for _, doc in items])
    return out


def start_figures(by_task: dict[str, list[Item]], out_dir: Path) -> tuple[list[Path], figure_pool.Drawing]:
    """Plan the figures every task declares and start drawing those whose data changed (a failing plan is logged)."""
    paths: list[Path] = []
    todo: list[Planned] = []
    for task, items in sorted(by_task.items()):
        try:
            task_paths, task_todo = plan_figures(task, [d for _, d in items], out_dir)
        except figure_pool.ERRORS as exc:
            log.warning("%s: plotting failed (%s: %s); tables are unaffected", task, type(exc).__name__, exc)
            continue
        paths += task_paths
        todo += task_todo
    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
    return paths, figure_pool.start(todo, save)


def make_figures(by_task: dict[str, list[Item]], out_dir: Path) -> list[Path]:
    """Figures of every task (its declared `Task.figures`); the paths drawn or kept, without those that failed."""
    paths, drawing = start_figures(by_task, out_dir)
    failed = drawing.wait()
    return [p for p in paths if p not in failed]


def collect(exps: list[ExperimentDir], out: Path, plots: bool = True) -> dict[str, Any]:
    """Write `out` (xlsx, a sheet per task) plus <table>.csv, <table>.md, summary.md, comparison.* and figures/
    beside it. Returns {"tables": {task: DataFrame} (the workbook's sheets), "length_tables": {"<task>_beyond_orig":
    DataFrame, ...}, "task_tables": {name: DataFrame} (declared by tasks; also workbook sheets),
    "markdown": str, "figures": [paths], "files": [paths]}."""
    by_task: dict[str, list[Item]] = {}
    for exp, doc in load_scores(exps):
        by_task.setdefault(str(doc.get("task")), []).append((exp, doc))
    tables: dict[str, pd.DataFrame] = {}
    length_tables: dict[str, pd.DataFrame] = {}
    for task, items in sorted(by_task.items()):
        tables[task] = build_table([experiment_row(e, d) for e, d in items], ID_COLUMNS)
        for key, suffix in LENGTH_SHEETS.items():
            rows = [r for r in (length_subset_row(e, d, key) for e, d in items) if r is not None]
            if any(r["n_in_subset"] for r in rows):
                length_tables[f"{task}_{suffix}"] = build_table(rows, ID_COLUMNS[:6] + LENGTH_COLUMNS)
    extra_tables = task_tables(by_task)  # the tables tasks declare (Task.tables)
    result: dict[str, Any] = {"tables": tables, "length_tables": length_tables, "task_tables": extra_tables,
                              "markdown": "", "figures": [], "files": []}
    if not tables:
        return result
    try:
        return _write_outputs(by_task, tables, length_tables, extra_tables, out, plots, result)
    except OSError as exc:
        raise io_error(exc, "writing", getattr(exc, "filename", None) or out) from None


def _write_outputs(by_task: dict[str, list[Item]], tables: dict[str, pd.DataFrame],
                   length_tables: dict[str, pd.DataFrame], extra_tables: dict[str, pd.DataFrame], out: Path,
                   plots: bool, result: dict[str, Any]) -> dict[str, Any]:
    """Write the tables, workbook and figures of `collect` (OSError propagates); figures are drawn in worker
    processes while the tables are written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figures, drawing = start_figures(by_task, out.parent / "figures") if plots else ([], None)
    try:
        _write_tables(by_task, tables, length_tables, extra_tables, out, result)
    finally:
        failed = drawing.wait() if drawing is not None else set()
    result["figures"] = [p for p in figures if p not in failed]
    return result


def _write_tables(by_task: dict[str, list[Item]], tables: dict[str, pd.DataFrame],
                  length_tables: dict[str, pd.DataFrame], extra_tables: dict[str, pd.DataFrame], out: Path,
                  result: dict[str, Any]) -> None:
    """The CSV, markdown and workbook files of `collect`."""
    sections = []
    for sheet, df in {**tables, **length_tables, **extra_tables}.items():
        md = to_markdown(df)
        sections.append(f"## {sheet}\n\n{md}\n")
        df.to_csv(out.parent / f"{sheet}.csv", index=False)
        (out.parent / f"{sheet}.md").write_text(md + "\n")
        result["files"] += [out.parent / f"{sheet}.csv", out.parent / f"{sheet}.md"]
    comparison = comparison_table([d for items in by_task.values() for _, d in items])
    if not comparison.empty:
        comparison.to_csv(out.parent / "comparison.csv", index=False)
        (out.parent / "comparison.md").write_text(to_markdown(comparison) + "\n")
        sections.append(f"## comparison (method x length)\n\n{to_markdown(comparison)}\n")
        result["files"] += [out.parent / "comparison.csv", out.parent / "comparison.md"]
    docs = [d for items in by_task.values() for _, d in items]
    sheets, freeze = build_sheets(tables, {**length_tables, **extra_tables}, comparison, docs)
    if "comparison" in sheets:  # one row per experiment: method, params, headline score, speed and memory
        overview = sheets["comparison"]
        overview.to_csv(out.parent / "comparison_experiments.csv", index=False)
        (out.parent / "comparison_experiments.md").write_text(to_markdown(overview) + "\n")
        sections.insert(0, f"## comparison (all experiments)\n\n{to_markdown(overview)}\n")
        result["files"] += [out.parent / "comparison_experiments.csv", out.parent / "comparison_experiments.md"]
    result["markdown"] = "\n".join(sections)
    (out.parent / "summary.md").write_text(result["markdown"])
    write_workbook(sheets, out, freeze)
    result["files"] += [out.parent / "summary.md", out]
