"""Shared look of the gali-collect figures: colour-blind-safe colours per method, `original` as the black dashed
baseline, log2 length axes with real token counts, the pre-trained window marked, labels by method; file stems and
the grouping of documents by model.

Speed: a figure is a `matplotlib.figure.Figure` on an Agg canvas (no pyplot) with margins computed here from the
lengths of its texts (no layout engine: constrained layout draws every figure twice), titles and axis labels at
fixed places (no automatic repositioning), PNG written at zlib level 1.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Okabe & Ito (2008) colour-blind-safe palette, without black (reserved for `original`)
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#999999"]
BASELINE = "original"
BASELINE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 2.0, "zorder": 1.5}  # under the methods
WINDOW_STYLE = {"color": "#555555", "linestyle": ":", "linewidth": 1.4, "zorder": 1}
#: perceptually uniform and colour-blind safe (also readable in grey scale)
HEATMAP_CMAP = "cividis"
DPI = 100
CHAR_EM = 0.64  # width of a character in em (DejaVu Sans: digits 0.64, lower case ~0.6; capitals up to 0.8)
TICK_FONT = 10.0  # matplotlib's default tick label and axis label size (points)
MAX_LENGTH_TICKS = 12  # a length axis with more measured lengths labels the powers of two among them
PAD = 0.1  # inches of white space at the figure's edges
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def number(value: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def tokens_label(n: float) -> str:
    """Token counts as people read them: 256, 1K, 1.5K, 32K (K = 1024), 1000 stays 1000."""
    n = int(round(n))
    if n >= 1024 and n % 256 == 0:
        return f"{n / 1024:g}K"
    return str(n)


def method_color(method: str, methods: list[str]) -> str:
    """Black for `original`; the palette in the order of the other methods."""
    if method == BASELINE:
        return "black"
    others = [m for m in methods if m != BASELINE]
    return OKABE_ITO[others.index(method) % len(OKABE_ITO)] if method in others else OKABE_ITO[-1]


def labels_by_method(docs: list[dict[str, Any]]) -> list[str]:
    """Legend labels: the method name; the experiment name is added only where a method appears twice."""
    counts = Counter(str(d.get("method")) for d in docs)
    out = []
    for d in docs:
        method = str(d.get("method"))
        label = method if counts[method] == 1 else f"{method} ({d.get('exp_name')})"
        out.append(f"{label} (baseline)" if method == BASELINE else label)
    return out


def order_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`original` first, then by method and experiment name."""
    return sorted(docs, key=lambda d: (d.get("method") != BASELINE, str(d.get("method")), str(d.get("exp_name"))))


def window_of(doc: dict[str, Any]) -> int | None:
    value = (doc.get("windows") or {}).get("original_window")
    return value if isinstance(value, int) and value > 0 else None


def log2_length_axis(ax: Any, lengths: Sequence[float], label: str = "context length (tokens, log2 scale)") -> None:
    """x axis in log2 with a tick at each measured length, labelled with its token count; beyond MAX_LENGTH_TICKS
    lengths only the powers of two among them and the last (else every k-th), as they would overlap."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ticks = sorted(set(lengths))
    if len(ticks) > MAX_LENGTH_TICKS:
        powers = {t for t in ticks if t > 0 and math.log2(t).is_integer()} | {ticks[-1]}
        step = -(-len(ticks) // MAX_LENGTH_TICKS)
        ticks = sorted(powers if len(powers) >= 3 else set(ticks[::step]) | {ticks[-1]})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([tokens_label(x) for x in ticks])
    ax.set_xlabel(label)


def mark_window(ax: Any, window: int | None, x: float | None = None) -> None:
    """A dotted vertical line at the pre-trained window M (at data x `x` if given), labelled in the legend."""
    if window is None:
        return
    ax.axvline(window if x is None else x, label=f"pre-trained window M = {tokens_label(window)}", **WINDOW_STYLE)


def file_stem(text: str, limit: int = 60) -> str:
    """A file-name-safe short form of an experiment or model name (a model path gives its last component)."""
    name = Path(text).name if "/" in text or "\\" in text else text
    return _UNSAFE.sub("_", name).strip("._")[:limit] or "x"


def unique_stems(stems: Iterable[str]) -> list[str]:
    """Append -2, -3, ... to repeated stems, so two models named .../a/model and .../b/model do not collide."""
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def by_model(docs: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(model, file stem, docs sorted by method and experiment) per model, in model order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        groups.setdefault(str(d.get("model")), []).append(d)
    models = sorted(groups)
    stems = unique_stems(file_stem(m) for m in models)
    return [(m, s, sorted(groups[m], key=lambda d: (str(d.get("method")), str(d.get("exp_name")))))
            for m, s in zip(models, stems)]


def text_width(text: str, fontsize: float = TICK_FONT) -> float:
    """Width in inches of the longest line of `text` (an upper estimate: CHAR_EM per character)."""
    return max((len(line) for line in str(text).split("\n")), default=0) * fontsize * CHAR_EM / 72


def text_height(text: str = "", fontsize: float = TICK_FONT) -> float:
    """Height in inches of `text`'s lines."""
    return (str(text).count("\n") + 1) * fontsize * 1.25 / 72


def tick_extent(labels: list[str], rotation: float, fontsize: float = TICK_FONT) -> float:
    """How far (inches) x tick labels reach below the axis: their height, or for 45 degrees the rotated box."""
    if not labels:
        return 0.0
    width, height = max(text_width(t, fontsize) for t in labels), max(text_height(t, fontsize) for t in labels)
    return (width + height) * 0.71 if rotation else height


def new_figure(width: float, height: float, margins: tuple[float, float, float, float]) -> tuple[Any, Any]:
    """A figure of width x height inches on an Agg canvas, with one axes inset by (left, bottom, right, top)
    inches (no layout engine, no pyplot state)."""
    fig = blank_figure(width, height)
    return fig, fig.add_axes(inset(fig, *margins))


def blank_figure(width: float, height: float) -> Any:
    """An empty figure on its own Agg canvas (savefig then reuses the canvas and its text metrics)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def inset(fig: Any, left: float, bottom: float, right: float, top: float) -> tuple[float, float, float, float]:
    """An axes rectangle (figure fractions) inset by the given inches; never narrower than a tenth of the figure."""
    width, height = fig.get_size_inches()
    w, h = max(0.1 * width, width - left - right), max(0.1 * height, height - bottom - top)
    return left / width, bottom / height, w / width, h / height


def place_labels(ax: Any, below: float | None, beside: float | None) -> None:
    """Put the x label `below` inches under the axes and the y label `beside` inches left of it (None: leave it):
    matplotlib then skips measuring the tick labels to place them (titles: pass `y=1.0` to set_title for the same)."""
    width, height = ax.figure.get_size_inches() * ax.get_position().size
    if below is not None:
        ax.xaxis.set_label_coords(0.5, -below / height)
    if beside is not None:
        ax.yaxis.set_label_coords(-beside / width, 0.5)
