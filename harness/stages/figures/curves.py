"""PG19 perplexity vs evaluated length: one line per method on a log2 length axis, `original` as the baseline."""

from __future__ import annotations

from typing import Any

from harness.stages.figures.style import (
    BASELINE,
    BASELINE_STYLE,
    labels_by_method,
    log2_length_axis,
    mark_window,
    method_color,
    new_figure,
    order_docs,
    window_of,
)


def draw_ppl(model: str, docs: list[dict[str, Any]], curve_fn: Any) -> Any:
    """PPL curves of every experiment of `model` (`curve_fn(ppl mapping) -> [(length, ppl)]`)."""
    docs = order_docs(docs)
    methods = [str(d.get("method")) for d in docs]
    fig, ax = new_figure(7.5, 4.6)
    xs: list[float] = []
    for doc, label in zip(docs, labels_by_method(docs)):
        subsets = doc.get("subsets") or {}
        method = str(doc.get("method"))
        style = BASELINE_STYLE if method == BASELINE else {"color": method_color(method, methods), "linewidth": 1.6}
        for subset, metrics in subsets.items():
            points = curve_fn(metrics.get("ppl") or {})
            if not points:
                continue
            xs += [p[0] for p in points]
            name = label + (f" [{subset}]" if len(subsets) > 1 else "")
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
    ax.set_title(f"perplexity on {', '.join(sources) or 'pg19'} - {model}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="method", loc="best")
    return fig
