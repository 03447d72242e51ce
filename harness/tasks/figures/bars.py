"""LongBench / L-Eval grouped bars: one bar per method and dataset, the metric named, value labels, zero bars
visible, n per dataset under its name, and the average set apart on the right. The task names each dataset's
metric (`plan(task, metric_of)`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from harness.tasks.base import FigureJob
from harness.tasks.figures.style import (
    BASELINE,
    PAD,
    by_model,
    labels_by_method,
    method_color,
    new_figure,
    number,
    order_docs,
    place_labels,
    text_height,
    text_width,
    tick_extent,
)

AVERAGE_GAP = 0.6  # extra space before the average group
ZERO_MARK = 0.6  # height (in score units) of the stub drawn for a zero score, so it is visible


def _n_scored(docs: list[dict[str, Any]], dataset: str) -> int | None:
    values = [int((d.get("subsets") or {}).get(dataset, {}).get("n_scored") or 0) for d in docs]
    values = [v for v in values if v]
    return max(values) if values else None


def draw_bars(task: str, model: str, docs: list[dict[str, Any]], metrics: dict[str, str] | None = None) -> Any:
    """Grouped bars for `task` (datasets, then the average apart), one bar per experiment of `model`; `metrics`
    names the metric of each dataset (shown under its name)."""
    docs = order_docs(docs)
    metric_of = metrics or {}
    datasets: list[str] = []
    for doc in docs:
        datasets += [s for s in (doc.get("subsets") or {}) if s not in datasets]
    has_average = any(number((d.get("summary") or {}).get("average")) is not None for d in docs)
    columns = datasets + (["average"] if has_average else [])
    x = np.arange(len(columns), dtype=float)
    if has_average:
        x[-1] += AVERAGE_GAP
    width = 0.8 / max(1, len(docs))
    names = []
    for c in datasets:
        n = _n_scored(docs, c)
        names.append("\n".join([c] + [metric_of.get(c, "")] + [f"n={n}" if n else ""]).rstrip("\n"))
    if has_average:
        names.append("average\n(of datasets)")
    rotation = 0 if len(columns) <= 6 else 45
    labels = labels_by_method(docs)
    legend = max([text_width(t, 8) for t in labels] + [text_width("method", 8)]) + 0.6
    below = tick_extent(names, rotation, 7)
    beside = text_width("100") + 0.14
    left = max(PAD + beside + text_height() + 0.02, (text_width(names[0], 7) * 0.71 if rotation else 0) + PAD)
    fig, ax = new_figure(min(22.0, max(6.0, 0.9 + len(columns) * (0.35 + 0.22 * len(docs)))), 5.2,
                         (left, PAD + below + 0.1, PAD + legend, PAD + text_height() + 0.12))
    from matplotlib.transforms import offset_copy

    methods = [str(d.get("method")) for d in docs]
    above = offset_copy(ax.transData, fig=fig, y=1, units="points")
    for k, (doc, label) in enumerate(zip(docs, labels)):
        subsets = doc.get("subsets") or {}
        values = [number((subsets.get(c) or {}).get("score")) for c in datasets]
        if has_average:
            values.append(number((doc.get("summary") or {}).get("average")))
        method = str(doc.get("method"))
        color = "#C8C8C8" if method == BASELINE else method_color(method, methods)  # grey + hatch: baseline
        pos = x - 0.4 + width * (k + 0.5)
        heights = [np.nan if v is None else (v if v != 0 else ZERO_MARK) for v in values]
        ax.bar(pos, heights, width, label=label, color=color, edgecolor="black", linewidth=0.6,
               hatch="//" if method == BASELINE else None)
        for x_k, height, v in zip(pos, heights, values):  # value labels 1 pt above the bars (plain texts: fast)
            if v is not None:
                ax.text(x_k, height, f"{v:.1f}", transform=above, fontsize=6, ha="center", va="bottom",
                        rotation=90 if len(docs) > 2 else 0)
    if has_average:
        ax.axvline((x[-2] + x[-1]) / 2 if len(x) > 1 else x[-1] - 0.7, color="#555555", linewidth=1.0)
    ax.set_xticks(x, names, rotation=rotation, ha="right" if rotation else "center", fontsize=7)
    if has_average:
        ax.get_xticklabels()[-1].set_fontweight("bold")
    shown = sorted({m for m in (metric_of.get(c) for c in datasets) if m})
    ax.set_ylabel(f"score (0-100; {', '.join(shown)} per dataset)" if shown else "score (0-100)")
    ax.set_title(f"{task} - {model}", fontsize=10, y=1.0)
    place_labels(ax, None, beside)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_xlim(x[0] - 0.6, x[-1] + 0.6)
    ax.set_ylim(0, max(5.0, np.nanmax([b.get_height() for b in ax.patches] or [0]) * 1.15))
    ax.legend(fontsize=8, title="method", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plan(task: str, metric_of: Callable[[str], str | None], docs: list[dict[str, Any]]) -> list[FigureJob]:
    """Grouped bars per dataset (and the average, set apart), one bar per experiment; one figure per model
    (`<task>_<model>`). `metric_of(dataset)` names a dataset's metric."""
    jobs = []
    for model, stem, group in by_model(docs):
        if not any(d.get("subsets") for d in group):
            continue
        datasets = {s for d in group for s in (d.get("subsets") or {})}
        metrics = {s: m for s in sorted(datasets) if (m := metric_of(s))}
        jobs.append(FigureJob(f"{task}_{stem}", draw_bars, (task, model, group, metrics)))
    return jobs
