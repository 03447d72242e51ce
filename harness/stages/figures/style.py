"""Shared look of the gali-collect figures: colour-blind-safe colours per method, `original` as the black dashed
baseline, log2 length axes with real token counts, the pre-trained window marked, labels by method."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

#: Okabe & Ito (2008) colour-blind-safe palette, without black (reserved for `original`)
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#999999"]
BASELINE = "original"
BASELINE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 2.0, "zorder": 1.5}  # under the methods
WINDOW_STYLE = {"color": "#555555", "linestyle": ":", "linewidth": 1.4, "zorder": 1}
#: perceptually uniform and colour-blind safe (also readable in grey scale)
HEATMAP_CMAP = "cividis"
DPI = 100


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


def log2_length_axis(ax: Any, lengths: list[float], label: str = "context length (tokens, log2 scale)") -> None:
    """x axis in log2 with a tick at each measured length, labelled with its token count."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ticks = sorted(set(lengths))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([tokens_label(x) for x in ticks])
    ax.set_xlabel(label)


def mark_window(ax: Any, window: int | None, x: float | None = None) -> None:
    """A dotted vertical line at the pre-trained window M (at data x `x` if given), labelled in the legend."""
    if window is None:
        return
    ax.axvline(window if x is None else x, label=f"pre-trained window M = {tokens_label(window)}", **WINDOW_STYLE)


def new_figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure (constrained layout: no clipped labels) with one axes; no pyplot state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()
