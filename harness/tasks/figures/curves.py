"""Score-vs-length curves: PG19 perplexity (one line per method, `original` as the baseline) and the RULER average
(RULER's threshold dashed), every experiment of a model on one figure, log2 length axis, the window M marked.

PG19 reads `doc["subsets"][<subset>]["ppl"] = {"<L>": number | {"ppl_token_weighted": ...}}` (see
harness.tasks.scoring.perplexity.ppl_curve); RULER reads `doc["summary"]["by_length"]` and `["threshold"]`.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.tasks.base import FigureJob
from harness.tasks.figures.style import (
    BASELINE,
    BASELINE_STYLE,
    PAD,
    by_model,
    labels_by_method,
    log2_length_axis,
    mark_window,
    method_color,
    new_figure,
    number,
    order_docs,
    place_labels,
    text_height,
    text_width,
    window_of,
)
from harness.tasks.scoring.perplexity import ppl_curve

log = logging.getLogger(__name__)


def _curve_figure(width: float, height: float, y_labels: list[str]) -> tuple[Any, Any, float, float]:
    """(fig, ax, x label offset, y label offset) for a one-axes curve figure whose y tick labels look like
    `y_labels` (their widest sets the left margin)."""
    beside = max((text_width(t) for t in y_labels), default=0.3) + 0.14
    below = text_height() + 0.14
    fig, ax = new_figure(width, height, (PAD + beside + text_height() + 0.02, PAD + below + text_height(),
                                         PAD + 0.3, PAD + text_height() + 0.12))
    return fig, ax, below, beside


def draw_ppl(model: str, docs: list[dict[str, Any]]) -> Any:
    """PPL curves of every experiment of `model`."""
    docs = order_docs(docs)
    methods = [str(d.get("method")) for d in docs]
    curves = [(doc, label, subset, ppl_curve(metrics.get("ppl") or {}))
              for doc, label in zip(docs, labels_by_method(docs))
              for subset, metrics in (doc.get("subsets") or {}).items()]
    top = max((y for *_, points in curves for _, y in points), default=1.0)
    fig, ax, below, beside = _curve_figure(7.5, 4.6, [f"{top:.1f}0", f"{top:.0f}0"])
    xs: list[float] = []
    for doc, label, subset, points in curves:
        if not points:
            continue
        method = str(doc.get("method"))
        style = BASELINE_STYLE if method == BASELINE else {"color": method_color(method, methods), "linewidth": 1.6}
        xs += [p[0] for p in points]
        name = label + (f" [{subset}]" if len(doc.get("subsets") or {}) > 1 else "")
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=4, label=name, **style)
    if xs:
        log2_length_axis(ax, xs, "evaluated length (tokens, log2 scale)")
    for window in sorted({w for w in (window_of(d) for d in docs) if w}):
        mark_window(ax, window)
    if ax.has_data() and ax.dataLim.y1 > 10 * max(ax.dataLim.y0, 1e-9):  # exploding PPL: log y, plain ticks
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_ylabel("perplexity (lower is better)")
    sources = sorted({str(s) for d in docs for s in (d.get("subsets") or {})})
    ax.set_title(f"perplexity on {', '.join(sources) or 'pg19'} - {model}", fontsize=10, y=1.0)
    place_labels(ax, below, beside)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="method", loc="best")
    return fig


def plan_ppl(docs: list[dict[str, Any]]) -> list[FigureJob]:
    """PPL vs evaluated length, every experiment of a model on one figure (`pg19_ppl_<model>`)."""
    jobs = []
    for model, stem, group in by_model(docs):
        if not any(ppl_curve(m.get("ppl") or {}) for d in group for m in (d.get("subsets") or {}).values()):
            log.info("%s: no PPL curves to plot", model)
            continue
        jobs.append(FigureJob(f"pg19_ppl_{stem}", draw_ppl, (model, group)))
    return jobs


def ruler_points(doc: dict[str, Any]) -> list[tuple[int, float]]:
    """(length, RULER average) points of a RULER scores document."""
    by_length = (doc.get("summary") or {}).get("by_length") or {}
    return sorted((int(k), float(v)) for k, v in by_length.items() if number(v) is not None)


def draw_ruler(model: str, docs: list[dict[str, Any]]) -> Any:
    """RULER average vs length of every experiment of `model`; RULER's threshold dashed, M dotted (when inside)."""
    fig, ax, below, beside = _curve_figure(7.5, 4.5, ["100"])
    curves = [(doc, ruler_points(doc)) for doc in docs]
    for doc, points in curves:
        if points:
            method, exp = str(doc.get("method")), str(doc.get("exp_name"))
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                    label=exp if method in exp else f"{exp} ({method})")
    lengths = sorted({p[0] for _, pts in curves for p in pts})
    if lengths:
        log2_length_axis(ax, lengths, "target length (tokens)")
    threshold = next((d["summary"]["threshold"] for d in docs if (d.get("summary") or {}).get("threshold")), None)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    for window in sorted({w for w in (window_of(d) for d in docs) if w and lengths and lengths[0] <= w <= lengths[-1]}):
        ax.axvline(window, color="black", linestyle=":", linewidth=1, label=f"original window M = {window}")
    ax.set_ylim(0, 100)
    ax.set_ylabel("RULER average (%)")
    ax.set_title(f"RULER - {model}", fontsize=10, y=1.0)
    place_labels(ax, below, beside)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plan_ruler(docs: list[dict[str, Any]]) -> list[FigureJob]:
    """The RULER average vs length of every experiment of a model on one figure (`ruler_<model>`)."""
    return [FigureJob(f"ruler_{stem}", draw_ruler, (model, group)) for model, stem, group in by_model(docs)
            if any(ruler_points(d) for d in group)]
