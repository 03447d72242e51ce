"""Needle figures: a depth x length heatmap per experiment, all methods of a model side by side, and pass rate vs
length (log2) per method. `plan` says which files a set of needle scores documents makes.

What they read from `doc["subsets"][<subset>]`: `cells = {"<length>|<depth>": accuracy % or None}`, `by_length`
and `tokens_by_length` (the mean prompt tokens of each nominal length, shown on the ticks).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from harness.tasks.base import FigureJob
from harness.tasks.figures.style import (
    BASELINE,
    BASELINE_STYLE,
    HEATMAP_CMAP,
    PAD,
    WINDOW_STYLE,
    blank_figure,
    by_model,
    file_stem,
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
    tick_extent,
    tokens_label,
    unique_stems,
    window_of,
)

log = logging.getLogger(__name__)

ANNOTATE_MAX_CELLS = 100  # heatmaps print the pass rate in each cell up to this many cells (text is slow)
LEGEND_ROW = 0.22  # inches for the one-line legend under a heatmap
COLORBAR = 1.05  # inches right of a heatmap: gap, bar, tick labels and the bar's label
DEPTH_LABEL = "needle depth (% of the context)"


Grid = tuple[list[float], list[float], list[list[float | None]]]
_GRIDS: dict[int, Grid] | None = None  # needle_grid results by id(doc) while one figure is being drawn


@contextlib.contextmanager
def _grids_cached() -> Iterator[None]:
    """Parse each document's cells once while a figure is drawn (the documents do not change meanwhile)."""
    global _GRIDS
    outer = _GRIDS
    _GRIDS = {} if outer is None else outer
    try:
        yield
    finally:
        _GRIDS = outer


def _one_parse(draw: Callable[..., Any]) -> Callable[..., Any]:
    """Run `draw` with needle_grid cached (see _grids_cached)."""
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _grids_cached():
            return draw(*args, **kwargs)
    return wrapper


def needle_grid(doc: dict[str, Any]) -> Grid:
    """(lengths, depths, accuracy[depth][length]) from the `cells` of every subset of a needle scores document."""
    if _GRIDS is not None and id(doc) in _GRIDS:
        return _GRIDS[id(doc)]
    cells: dict[tuple[float, float], float | None] = {}
    for metrics in (doc.get("subsets") or {}).values():
        for key, value in (metrics.get("cells") or {}).items():
            length, _, depth = str(key).partition("|")
            try:
                cells[(float(length), float(depth))] = number(value)
            except ValueError:
                log.debug("needle cell key %r not '<length>|<depth>'; ignored", key)
    lengths = sorted({k[0] for k in cells})
    depths = sorted({k[1] for k in cells})
    grid = [[cells.get((length, depth)) for length in lengths] for depth in depths]
    if _GRIDS is not None:
        _GRIDS[id(doc)] = (lengths, depths, grid)
    return lengths, depths, grid


def real_tokens(doc: dict[str, Any], lengths: list[float]) -> list[float]:
    """The mean prompt token count of each nominal length (gali-eval's `tokens_by_length`), else the nominal one."""
    seen: dict[float, float] = {}
    for metrics in (doc.get("subsets") or {}).values():
        for key, value in (metrics.get("tokens_by_length") or {}).items():
            if number(value) is not None:
                seen[float(key)] = float(value)
    return [seen.get(x, x) for x in lengths]


def needle_tick_labels(doc: dict[str, Any], lengths: list[float]) -> list[str]:
    """Length tick labels: the measured mean prompt tokens of each length (`tokens_by_length`) when recorded."""
    real: dict[float, float] = {}
    for metrics in (doc.get("subsets") or {}).values():
        for key, value in (metrics.get("tokens_by_length") or {}).items():
            if number(value) is not None:
                real[float(key)] = float(value)
    return [str(round(real[x])) if x in real else _length_label(x) for x in lengths]


def _length_label(n: float) -> str:
    n = int(n)
    return f"{n / 1024:g}K" if n >= 1024 and n % 1024 == 0 else f"{n / 1000:g}k" if n >= 1000 and n % 1000 == 0 \
        else str(n)


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


def _ticks(doc: dict[str, Any]) -> tuple[list[str], list[str], int]:
    """(x tick labels, y tick labels, x label rotation) of a heatmap."""
    lengths, depths, _ = needle_grid(doc)
    xs = [tokens_label(t) for t in real_tokens(doc, lengths)]
    return xs, [f"{d:g}%" for d in depths], 45 if len(lengths) > 6 else 0


def _values(doc: dict[str, Any]) -> Any:
    """The pass rates of `doc` as a depth x length float array (NaN where not measured)."""
    return np.array([[np.nan if v is None else v for v in row] for row in needle_grid(doc)[2]], dtype=float)


def _heatmap(ax: Any, doc: dict[str, Any], annotate: bool, every: int = 1, y_ticks: bool = True) -> Any:
    values = _values(doc)
    image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0, vmax=100, aspect="auto", interpolation="nearest")
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if v > 60 else "white")
    _label_heatmap(ax, doc, every, y_ticks)
    return image


def _label_heatmap(ax: Any, doc: dict[str, Any], every: int = 1, y_ticks: bool = True) -> None:
    """Ticks (every `every`-th length; depths unless not `y_ticks`), x label and the window line of `doc`'s heatmap
    on `ax`."""
    lengths, depths, _ = needle_grid(doc)
    xs, ys, rotation = _ticks(doc)
    ax.set_xticks(range(0, len(lengths), every), xs[::every], rotation=rotation)
    ax.set_yticks(range(len(depths)) if y_ticks else [], ys if y_ticks else [])
    tokens = real_tokens(doc, lengths)
    ax.set_xlabel(length_label(tokens, window_of(doc)))
    x = _window_x(tokens, window_of(doc))
    if x is not None:
        ax.axvline(x, label=f"pre-trained window M = {tokens_label(window_of(doc) or 0)}",
                   **{**WINDOW_STYLE, "color": "red", "linestyle": "--"})


def _colorbar(fig: Any, image: Any, ax_rect: tuple[float, float, float, float], right_edge: float) -> None:
    """A colour bar 0.15 in right of the axes rectangle (figure fractions), as tall as it."""
    width = fig.get_size_inches()[0]
    cax = fig.add_axes((right_edge + 0.15 / width, ax_rect[1], 0.18 / width, ax_rect[3]))
    fig.colorbar(image, cax=cax, label="pass rate (%)")


def _margins(doc: dict[str, Any], legend: bool) -> tuple[float, float, float, float, float, float]:
    """(left, bottom, right, top, x label offset, y label offset) in inches of a heatmap of `doc`."""
    xs, ys, rotation = _ticks(doc)
    beside = max((text_width(y) for y in ys), default=0.0) + 0.14
    below = tick_extent(xs, rotation) + 0.14
    left = PAD + beside + text_height() + 0.02
    bottom = PAD + below + text_height() + (LEGEND_ROW if legend else 0.0)
    top = PAD + text_height() + 0.12
    return left, bottom, COLORBAR + PAD, top, below, beside


def _layout(doc: dict[str, Any]) -> tuple[str, bool, tuple[float, ...]]:
    """(title, legend?, (width, height, left, bottom, right, top, x label offset, y label offset)) of a heatmap."""
    lengths, depths, _ = needle_grid(doc)
    scores = [number(m.get("score")) for m in (doc.get("subsets") or {}).values()]
    overall = f" - overall {scores[0]:.1f}%" if len(scores) == 1 and scores[0] is not None else ""
    title = f"needle: {doc.get('method')} on {doc.get('model')}{overall}"
    legend = _window_x(real_tokens(doc, lengths), window_of(doc)) is not None
    left, bottom, right, top, below, beside = _margins(doc, legend)
    width = max(5.0, 0.55 * len(lengths) + 3.0, left + right + text_width(title))
    height = max(3.4, 0.28 * len(depths) + 2.0, bottom + top + 1.0)
    return title, legend, (width, height, left, bottom, right, top, below, beside)


def _decorate(fig: Any, ax: Any, title: str, legend: bool, below: float, beside: float) -> None:
    ax.set_title(title, fontsize=10, y=1.0)
    ax.set_ylabel(DEPTH_LABEL)
    place_labels(ax, below, beside)
    if legend:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, PAD / fig.get_size_inches()[1]),
                  bbox_transform=fig.transFigure, fontsize=7, frameon=False, borderaxespad=0)


@_one_parse
def draw_heatmap(doc: dict[str, Any], annotate_max: int = ANNOTATE_MAX_CELLS) -> Any:
    """One experiment's depth x length heatmap (pass rate %, cividis), real token counts on the x ticks."""
    lengths, depths, _ = needle_grid(doc)
    title, legend, (width, height, left, bottom, right, top, below, beside) = _layout(doc)
    fig, ax = new_figure(width, height, (left, bottom, right, top))
    image = _heatmap(ax, doc, len(lengths) * len(depths) <= annotate_max)
    _decorate(fig, ax, title, legend, below, beside)
    rect = tuple(ax.get_position().bounds)
    _colorbar(fig, image, rect, rect[0] + rect[2])
    return fig


_TEMPLATES: dict[tuple[Any, ...], Any] = {}


@_one_parse
def draw_heatmap_to_save(doc: dict[str, Any]) -> Any:
    """`draw_heatmap` for saving at once: a heatmap without cell labels reuses this process's last figure of the
    same geometry (new data, ticks, labels and window line on the same axes, ticks and colour bar: about half the
    cost). The figure is valid only until the next call."""
    lengths, depths, _ = needle_grid(doc)
    if len(lengths) * len(depths) <= ANNOTATE_MAX_CELLS:
        return draw_heatmap(doc)
    title, legend, (width, height, *margins, below, beside) = _layout(doc)
    key = (len(lengths), len(depths), legend, width, height, *margins)
    fig = _TEMPLATES.get(key)
    if fig is None:
        _TEMPLATES.clear()
        fig = _TEMPLATES[key] = draw_heatmap(doc)
        return fig
    ax = fig.axes[0]
    for line in list(ax.lines):
        line.remove()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.images[0].set_data(_values(doc))
    _label_heatmap(ax, doc)
    _decorate(fig, ax, title, legend, below, beside)
    return fig


@_one_parse
def draw_methods_side_by_side(model: str, docs: list[dict[str, Any]]) -> Any:
    """All needle experiments of a model as heatmaps side by side (same colour scale, one colour bar). Depths are
    labelled on the first panel (and on any whose depths differ), every second length when there are more than 8
    (the heatmap of each experiment has them all): ticks are the slowest part of a figure."""
    docs = [d for d in order_docs(docs) if needle_grid(d)[0]]
    n_len = max(len(needle_grid(d)[0]) for d in docs)
    n_dep = max(len(needle_grid(d)[1]) for d in docs)
    margins = [_margins(d, False) for d in docs]
    left, bottom = max(m[0] for m in margins), max(m[1] for m in margins)
    top = PAD + text_height(fontsize=11) + text_height("\n", 9) + 0.15
    gap = 0.25
    width = min(24.0, len(docs) * (0.45 * n_len + 1.6) + 1.5)
    height = max(3.4, 0.28 * n_dep + 2.2, bottom + top + 1.0)
    fig = blank_figure(width, height)
    panel = max(0.3, (width - left - COLORBAR - PAD - gap * (len(docs) - 1)) / len(docs))
    axes = fig.subplots(1, len(docs), squeeze=False, gridspec_kw={
        "left": left / width, "right": (left + len(docs) * panel + (len(docs) - 1) * gap) / width,
        "bottom": bottom / height, "top": 1 - top / height, "wspace": gap / panel})[0]
    image = None
    first_depths = needle_grid(docs[0])[1]
    for k, (ax, doc, label) in enumerate(zip(axes, docs, labels_by_method(docs))):
        y_ticks = k == 0 or needle_grid(doc)[1] != first_depths
        image = _heatmap(ax, doc, annotate=False, every=2 if n_len > 8 else 1, y_ticks=y_ticks)
        scores = [number(m.get("score")) for m in (doc.get("subsets") or {}).values()]
        overall = f"\n{scores[0]:.1f}%" if len(scores) == 1 and scores[0] is not None else ""
        ax.set_title(f"{label}{overall}", fontsize=9, y=1.0)
        place_labels(ax, max(m[4] for m in margins), None)
    axes[0].set_ylabel(DEPTH_LABEL)
    place_labels(axes[0], None, max(m[5] for m in margins))
    fig.suptitle(f"needle pass rate by method - {model}", fontsize=11, y=1 - PAD / height, va="top")
    if image is not None:
        last = axes[-1].get_position()
        _colorbar(fig, image, tuple(axes[0].get_position().bounds), last.x1)
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
    beside = text_width("100") + 0.14
    below = text_height() + 0.14
    fig, ax = new_figure(7.5, 4.5, (PAD + beside + text_height() + 0.02, PAD + below + text_height(),
                                    PAD + 0.25, PAD + text_height() + 0.12))
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
    ax.set_title(f"needle pass rate vs length - {model}", fontsize=10, y=1.0)
    place_labels(ax, below, beside)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="method", loc="best")
    return fig


def plan(docs: list[dict[str, Any]]) -> list[FigureJob]:
    """Per experiment a heatmap (`needle_<exp>`); per model the methods side by side (`needle_methods_<model>`, two
    or more experiments) and pass rate vs length (`needle_length_<model>`)."""
    jobs = []
    stems = unique_stems(file_stem(str(d.get("exp_name"))) for d in docs)
    for doc, stem in zip(docs, stems):
        if not needle_grid(doc)[0]:
            log.info("%s: no needle cells to plot", doc.get("exp_name"))
            continue
        jobs.append(FigureJob(f"needle_{stem}", draw_heatmap_to_save, (doc,)))
    for model, stem, group in by_model(docs):
        group = [d for d in group if needle_grid(d)[0]]
        if len(group) >= 2:
            jobs.append(FigureJob(f"needle_methods_{stem}", draw_methods_side_by_side, (model, group)))
        if group:
            jobs.append(FigureJob(f"needle_length_{stem}", draw_pass_rate_vs_length, (model, group)))
    return jobs
