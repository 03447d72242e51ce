"""Needle figures: a depth x length heatmap per experiment, all methods of a model side by side, and pass rate vs
length (log2) per method."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.stages.figures.style import (
    BASELINE,
    BASELINE_STYLE,
    HEATMAP_CMAP,
    WINDOW_STYLE,
    labels_by_method,
    log2_length_axis,
    mark_window,
    method_color,
    new_figure,
    number,
    order_docs,
    tokens_label,
    window_of,
)


def real_tokens(doc: dict[str, Any], lengths: list[float]) -> list[float]:
    """The mean prompt token count of each nominal length (gali-eval's `tokens_by_length`), else the nominal one."""
    seen: dict[float, float] = {}
    for metrics in (doc.get("subsets") or {}).values():
        for key, value in (metrics.get("tokens_by_length") or {}).items():
            if number(value) is not None:
                seen[float(key)] = float(value)
    return [seen.get(x, x) for x in lengths]


def _window_x(tokens: list[float], window: int | None) -> float | None:
    """The column boundary where prompts pass M (None when M is outside the measured range)."""
    if window is None or not tokens or not tokens[0] < window <= tokens[-1]:
        return None
    return next(i for i, t in enumerate(tokens) if t >= window) - 0.5


def length_label(tokens: list[float], window: int | None) -> str:
    """The x label; says where M lies when no column boundary can show it."""
    label = "prompt length (tokens)"
    if window is None or not tokens or _window_x(tokens, window) is not None:
        return label
    where = "all beyond" if window <= tokens[0] else "all within"
    return f"{label}; {where} M = {tokens_label(window)}"


def _heatmap(ax: Any, doc: dict[str, Any], grid_fn: Any, annotate: bool) -> Any:
    lengths, depths, grid = grid_fn(doc)
    values = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0, vmax=100, aspect="auto", interpolation="nearest")
    tokens = real_tokens(doc, lengths)
    ax.set_xticks(range(len(lengths)), [tokens_label(t) for t in tokens], rotation=45 if len(lengths) > 6 else 0)
    ax.set_yticks(range(len(depths)), [f"{d:g}%" for d in depths])
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if v > 60 else "white")
    ax.set_xlabel(length_label(tokens, window_of(doc)))
    x = _window_x(tokens, window_of(doc))
    if x is not None:
        ax.axvline(x, label=f"pre-trained window M = {tokens_label(window_of(doc) or 0)}",
                   **{**WINDOW_STYLE, "color": "red", "linestyle": "--"})
    return image


def draw_heatmap(doc: dict[str, Any], grid_fn: Any, annotate_max: int = 100) -> Any:
    """One experiment's depth x length heatmap (pass rate %, cividis), real token counts on the x ticks."""
    lengths, depths, _ = grid_fn(doc)
    fig, ax = new_figure(max(5.0, 0.55 * len(lengths) + 3.0), max(3.4, 0.28 * len(depths) + 2.0))
    image = _heatmap(ax, doc, grid_fn, len(lengths) * len(depths) <= annotate_max)
    scores = [number(m.get("score")) for m in (doc.get("subsets") or {}).values()]
    overall = f" - overall {scores[0]:.1f}%" if len(scores) == 1 and scores[0] is not None else ""
    ax.set_title(f"needle: {doc.get('method')} on {doc.get('model')}{overall}", fontsize=10)
    ax.set_ylabel("needle depth (% of the context)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize=7, frameon=False)
    fig.colorbar(image, ax=ax, label="pass rate (%)")
    return fig


def draw_methods_side_by_side(model: str, docs: list[dict[str, Any]], grid_fn: Any) -> Any:
    """All needle experiments of a model as heatmaps side by side (same colour scale, one colour bar)."""
    docs = [d for d in order_docs(docs) if grid_fn(d)[0]]
    n_len = max(len(grid_fn(d)[0]) for d in docs)
    n_dep = max(len(grid_fn(d)[1]) for d in docs)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(24.0, len(docs) * (0.45 * n_len + 1.6) + 1.5), max(3.4, 0.28 * n_dep + 2.2)), dpi=100,
                 layout="constrained")
    axes = fig.subplots(1, len(docs), sharey=True, squeeze=False)[0]
    image = None
    for ax, doc, label in zip(axes, docs, labels_by_method(docs)):
        image = _heatmap(ax, doc, grid_fn, annotate=False)
        scores = [number(m.get("score")) for m in (doc.get("subsets") or {}).values()]
        overall = f"\n{scores[0]:.1f}%" if len(scores) == 1 and scores[0] is not None else ""
        ax.set_title(f"{label}{overall}", fontsize=9)
    axes[0].set_ylabel("needle depth (% of the context)")
    fig.suptitle(f"needle pass rate by method - {model}", fontsize=11)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="pass rate (%)")
    return fig


def length_curves(doc: dict[str, Any]) -> list[tuple[float, float]]:
    """(real prompt tokens, pass rate %) per nominal length of a needle scores document."""
    points: dict[float, float] = {}
    for metrics in (doc.get("subsets") or {}).values():
        for key, value in (metrics.get("by_length") or {}).items():
            try:
                length = float(key)
            except ValueError:
                continue
            if number(value) is not None:
                points[real_tokens(doc, [length])[0]] = float(value)
    return sorted(points.items())


def draw_pass_rate_vs_length(model: str, docs: list[dict[str, Any]]) -> Any:
    """Pass rate vs prompt length (log2), one line per method, `original` as the black dashed baseline."""
    docs = order_docs(docs)
    fig, ax = new_figure(7.5, 4.5)
    methods = [str(d.get("method")) for d in docs]
    xs: list[float] = []
    for doc, label in zip(docs, labels_by_method(docs)):
        points = length_curves(doc)
        if not points:
            continue
        xs += [p[0] for p in points]
        method = str(doc.get("method"))
        style = BASELINE_STYLE if method == BASELINE else {"color": method_color(method, methods), "linewidth": 1.6}
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=4, label=label, **style)
    if xs:
        log2_length_axis(ax, xs, "prompt length (tokens, log2 scale)")
    for window in sorted({w for w in (window_of(d) for d in docs) if w}):
        mark_window(ax, window)
    ax.set_ylim(-3, 103)
    ax.set_ylabel("pass rate (%)")
    ax.set_title(f"needle pass rate vs length - {model}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="method", loc="best")
    return fig
