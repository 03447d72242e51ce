"""LongBench / L-Eval grouped bars: one bar per method and dataset, the metric named, value labels, zero bars
visible, n per dataset under its name, and the average set apart on the right."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.stages.figures.style import BASELINE, labels_by_method, method_color, new_figure, number, order_docs

_METRIC_NAMES = {"qa_f1_score": "F1", "qa_f1_zh_score": "F1", "rouge_score": "ROUGE-L", "rouge_zh_score": "ROUGE-L",
                 "classification_score": "accuracy", "retrieval_score": "accuracy", "retrieval_zh_score": "accuracy",
                 "count_score": "accuracy", "code_sim_score": "edit sim"}
AVERAGE_GAP = 0.6  # extra space before the average group
ZERO_MARK = 0.6  # height (in score units) of the stub drawn for a zero score, so it is visible


def dataset_metric(task: str, dataset: str) -> str | None:
    """The metric of a dataset: LongBench's official per-dataset metric; L-Eval closed-ended tasks: accuracy."""
    if task == "leval":
        return "accuracy"
    if task != "longbench":
        return None
    from harness.tasks.scoring.longbench_metrics import DATASET2METRIC

    fn = DATASET2METRIC.get(dataset.removesuffix("_e"))
    return _METRIC_NAMES.get(getattr(fn, "__name__", ""), None) if fn else None


def _n_scored(docs: list[dict[str, Any]], dataset: str) -> int | None:
    values = [int((d.get("subsets") or {}).get(dataset, {}).get("n_scored") or 0) for d in docs]
    values = [v for v in values if v]
    return max(values) if values else None


def draw_bars(task: str, model: str, docs: list[dict[str, Any]]) -> Any:
    """Grouped bars for `task` (datasets, then the average apart), one bar per experiment of `model`."""
    docs = order_docs(docs)
    datasets: list[str] = []
    for doc in docs:
        datasets += [s for s in (doc.get("subsets") or {}) if s not in datasets]
    has_average = any(number((d.get("summary") or {}).get("average")) is not None for d in docs)
    columns = datasets + (["average"] if has_average else [])
    x = np.arange(len(columns), dtype=float)
    if has_average:
        x[-1] += AVERAGE_GAP
    width = 0.8 / max(1, len(docs))
    fig, ax = new_figure(min(22.0, max(6.0, 0.9 + len(columns) * (0.35 + 0.22 * len(docs)))), 5.2)
    methods = [str(d.get("method")) for d in docs]
    for k, (doc, label) in enumerate(zip(docs, labels_by_method(docs))):
        subsets = doc.get("subsets") or {}
        values = [number((subsets.get(c) or {}).get("score")) for c in datasets]
        if has_average:
            values.append(number((doc.get("summary") or {}).get("average")))
        method = str(doc.get("method"))
        color = "#C8C8C8" if method == BASELINE else method_color(method, methods)  # grey + hatch: baseline
        pos = x - 0.4 + width * (k + 0.5)
        heights = [np.nan if v is None else (v if v != 0 else ZERO_MARK) for v in values]
        bars = ax.bar(pos, heights, width, label=label, color=color, edgecolor="black", linewidth=0.6,
                      hatch="//" if method == BASELINE else None)
        ax.bar_label(bars, labels=["" if v is None else f"{v:.1f}" for v in values], fontsize=6, padding=1,
                     rotation=90 if len(docs) > 2 else 0)
    names = []
    for c in datasets:
        metric = dataset_metric(task, c)
        n = _n_scored(docs, c)
        names.append("\n".join([c] + [f"{metric}" if metric else ""] + [f"n={n}" if n else ""]).rstrip("\n"))
    if has_average:
        names.append("average\n(of datasets)")
        ax.axvline((x[-2] + x[-1]) / 2 if len(x) > 1 else x[-1] - 0.7, color="#555555", linewidth=1.0)
    ax.set_xticks(x, names, rotation=0 if len(columns) <= 6 else 45, ha="center" if len(columns) <= 6 else "right",
                  fontsize=7)
    if has_average:
        ax.get_xticklabels()[-1].set_fontweight("bold")
    metrics = sorted({m for m in (dataset_metric(task, c) for c in datasets) if m})
    ax.set_ylabel(f"score (0-100; {', '.join(metrics)} per dataset)" if metrics else "score (0-100)")
    ax.set_title(f"{task} - {model}", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_xlim(x[0] - 0.6, x[-1] + 0.6)
    ax.set_ylim(0, max(5.0, np.nanmax([b.get_height() for b in ax.patches] or [0]) * 1.15))
    ax.legend(fontsize=8, title="method", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig
