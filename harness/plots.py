"""Figures for `gali-collect` (matplotlib, Agg canvas, PNG), keyed by task name in `PLOTTERS`.

Every plotter is `fn(docs, out_dir) -> list[Path]`: `docs` are scores.json documents written by gali-eval
(`exp_name`, `model`, `method`, `subsets`, `summary`, optional `windows.original_window`), `out_dir` is created.
What each plotter reads from `doc["subsets"][<subset>]`:

- `needle`: `cells = {"<length>|<depth>": accuracy % or None}` -> one depth x length heatmap per experiment
  (`needle_<exp>.png`), with a dashed line where the length passes the original window M.
- `pg19`: `ppl = {"<L>": value}` where value is a number, or a dict holding `ppl_token_weighted` (preferred),
  `ppl` or `ppl_mean_of_docs` (the pg19 task's per-length table) -> PPL-vs-length curves of all experiments of a
  model on one figure (`pg19_ppl_<model>.png`, log y axis when PPL spans > 10x, dashed line at M). None/NaN
  values are skipped.
- `longbench` / `leval`: `score` per dataset (plus `summary.average`) -> grouped bars per dataset, one bar per
  experiment, one figure per model (`<task>_<model>.png`).

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state, no display needed) with fixed margins.
Each PNG stores a signature of the data it shows (a PNG text chunk); a figure whose data did not change since the
last `gali-collect` is not drawn again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Plotter = Callable[[list[dict[str, Any]], Path], list[Path]]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
PPL_KEYS = ("ppl_token_weighted", "ppl", "ppl_mean_of_docs")
DPI = 100
ANNOTATE_MAX_CELLS = 100  # needle heatmaps print the pass rate in each cell up to this many cells (text is slow)


def file_stem(text: str, limit: int = 60) -> str:
    """A file-name-safe short form of an experiment or model name (a model path gives its last component)."""
    name = Path(text).name if "/" in text or "\\" in text else text
    return _UNSAFE.sub("_", name).strip("._")[:limit] or "x"


def _number(value: Any) -> float | None:
    """A finite float, or None (None, NaN, strings, dicts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _length_label(n: float) -> str:
    n = int(n)
    return f"{n / 1024:g}K" if n >= 1024 and n % 1024 == 0 else f"{n / 1000:g}k" if n >= 1000 and n % 1000 == 0 \
        else str(n)


SIGNATURE_KEY = "gali-signature"
PLOT_VERSION = 1  # bump when the drawing code changes, so cached figures are redrawn


def signature(*parts: Any) -> str:
    """A digest of the data a figure shows (and of PLOT_VERSION)."""
    text = json.dumps([PLOT_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def is_current(path: Path, sig: str) -> bool:
    """True when `path` is a PNG drawn from data with signature `sig`."""
    if not path.is_file():
        return False
    try:
        from PIL import Image  # noqa: PLC0415  (a matplotlib dependency)

        with Image.open(path) as im:
            return getattr(im, "text", {}).get(SIGNATURE_KEY) == sig
    except (OSError, ValueError, SyntaxError):
        return False


def _figure(width: float, height: float, margins: tuple[float, float, float, float]) -> tuple[Any, Any]:
    """A figure of width x height inches with one axes inset by (left, bottom, right, top) inches."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    left, bottom, right, top = margins
    fig = Figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((left / width, bottom / height, 1 - (left + right) / width, 1 - (bottom + top) / height))
    return fig, ax


def _save(fig: Any, path: Path, sig: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, format="png", dpi=DPI, metadata={SIGNATURE_KEY: sig})
    tmp.replace(path)
    return path


def _unique(stems: Iterable[str]) -> list[str]:
    """Append -2, -3, ... to repeated stems, so two models named .../a/model and .../b/model do not collide."""
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def _by_model(docs: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(model, file stem, docs sorted by method and experiment) per model, in model order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        groups.setdefault(str(d.get("model")), []).append(d)
    models = sorted(groups)
    stems = _unique(file_stem(m) for m in models)
    return [(m, s, sorted(groups[m], key=lambda d: (str(d.get("method")), str(d.get("exp_name")))))
            for m, s in zip(models, stems)]


def _label(doc: dict[str, Any]) -> str:
    method, exp = str(doc.get("method")), str(doc.get("exp_name"))
    return exp if method in exp else f"{exp} ({method})"


def _window(doc: dict[str, Any]) -> int | None:
    value = (doc.get("windows") or {}).get("original_window")
    return value if isinstance(value, int) and value > 0 else None


# ---------------------------------------------------------------------------------------------------------- needle
def needle_grid(doc: dict[str, Any]) -> tuple[list[float], list[float], list[list[float | None]]]:
    """(lengths, depths, accuracy[depth][length]) from the `cells` of every subset of a needle scores document."""
    cells: dict[tuple[float, float], float | None] = {}
    for metrics in (doc.get("subsets") or {}).values():
        for key, value in (metrics.get("cells") or {}).items():
            length, _, depth = str(key).partition("|")
            try:
                cells[(float(length), float(depth))] = _number(value)
            except ValueError:
                log.debug("needle cell key %r not '<length>|<depth>'; ignored", key)
    lengths = sorted({k[0] for k in cells})
    depths = sorted({k[1] for k in cells})
    grid = [[cells.get((length, depth)) for length in lengths] for depth in depths]
    return lengths, depths, grid


def needle_tick_labels(doc: dict[str, Any], lengths: list[float]) -> list[str]:
    """Length tick labels: the measured mean prompt tokens of each length (`tokens_by_length`) when recorded."""
    real: dict[float, float] = {}
    for metrics in (doc.get("subsets") or {}).values():
        for key, value in (metrics.get("tokens_by_length") or {}).items():
            if _number(value) is not None:
                real[float(key)] = float(value)
    return [str(round(real[x])) if x in real else _length_label(x) for x in lengths]


def plot_needle(docs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One heatmap per experiment: rows = needle depth (%), columns = length, colour = pass rate (%)."""
    import numpy as np  # noqa: PLC0415

    paths = []
    stems = _unique(file_stem(str(d.get("exp_name"))) for d in docs)
    for doc, stem in zip(docs, stems):
        lengths, depths, grid = needle_grid(doc)
        if not lengths:
            log.info("%s: no needle cells to plot", doc.get("exp_name"))
            continue
        scores = [_number(m.get("score")) for m in doc["subsets"].values()]
        ticks = needle_tick_labels(doc, lengths)
        path, sig = out_dir / f"needle_{stem}.png", signature(_label(doc), _window(doc), grid, ticks, depths, scores)
        if is_current(path, sig):
            paths.append(path)
            continue
        values = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
        fig, ax = _figure(max(5.0, 0.5 * len(lengths) + 2.6), max(3.2, 0.25 * len(depths) + 1.6), (0.8, 0.8, 1.4, 0.4))
        image = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(lengths)), ticks, rotation=45 if len(lengths) > 8 else 0)
        ax.set_yticks(range(len(depths)), [f"{d:g}%" for d in depths])
        ax.set_ylabel("needle depth")
        if values.size <= ANNOTATE_MAX_CELLS:
            for (i, j), v in np.ndenumerate(values):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
        window = _window(doc)
        xlabel = "prompt length (measured tokens)"
        if window is not None and lengths[0] < window <= lengths[-1]:
            x = next(i for i, length in enumerate(lengths) if length >= window) - 0.5
            ax.axvline(x, color="black", linestyle="--", linewidth=1.2)
            xlabel += f" (dashed: original window {window})"
        ax.set_xlabel(xlabel)
        overall = f" - {scores[0]:.1f}%" if len(scores) == 1 and scores[0] is not None else ""
        ax.set_title(f"{_label(doc)}{overall}", fontsize=10)
        fig.colorbar(image, cax=fig.add_axes((1 - 1.15 / fig.get_figwidth(), ax.get_position().y0,
                                              0.15 / fig.get_figwidth(), ax.get_position().height)),
                     label="pass rate (%)")
        paths.append(_save(fig, path, sig))
    return paths


# ------------------------------------------------------------------------------------------------------------ pg19
def ppl_curve(ppl: dict[str, Any]) -> list[tuple[int, float]]:
    """Sorted (length, PPL) points of a `{"<L>": number | {"ppl_token_weighted": ...}}` mapping (bad points dropped)."""
    points = []
    for key, value in (ppl or {}).items():
        if isinstance(value, dict):
            value = next((value[k] for k in PPL_KEYS if _number(value.get(k)) is not None), None)
        y = _number(value)
        try:
            x = int(float(key))
        except (TypeError, ValueError, OverflowError):
            continue
        if y is not None and y > 0:
            points.append((x, y))
    return sorted(points)


def plot_ppl(docs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """PPL vs evaluated length, every experiment of a model on one figure."""
    paths = []
    for model, stem, group in _by_model(docs):
        curves = []
        for doc in group:
            subsets = doc.get("subsets") or {}
            for subset, metrics in subsets.items():
                points = ppl_curve(metrics.get("ppl") or {})
                if points:
                    curves.append((_label(doc) + (f" [{subset}]" if len(subsets) > 1 else ""), points))
        if not curves:
            log.info("%s: no PPL curves to plot", model)
            continue
        path, sig = out_dir / f"pg19_ppl_{stem}.png", signature(model, curves, [_window(d) for d in group])
        if is_current(path, sig):
            paths.append(path)
            continue
        fig, ax = _figure(7.5, 4.5, (0.9, 0.6, 0.2, 0.4))
        for label, points in curves:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
        for window in sorted({w for w in (_window(d) for d in group) if w}):
            ax.axvline(window, color="grey", linestyle="--", linewidth=1, label=f"original window M = {window}")
        low, high = ax.dataLim.y0, ax.dataLim.y1
        if high > 10 * low:  # exploding PPL beyond the window: log scale, plain tick labels
            from matplotlib.ticker import ScalarFormatter  # noqa: PLC0415

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("evaluated length (tokens)")
        ax.set_ylabel("perplexity")
        sources = sorted({str(s) for d in group for s in (d.get("subsets") or {})})
        ax.set_title(f"perplexity on {', '.join(sources) or 'pg19'} - {model}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_save(fig, path, sig))
    return paths


# ------------------------------------------------------------------------------------------------------------ bars
def plot_bars(docs: list[dict[str, Any]], out_dir: Path, task: str = "longbench") -> list[Path]:
    """Grouped bars per dataset (and the average), one bar per experiment; one figure per model."""
    import numpy as np  # noqa: PLC0415

    paths = []
    for model, stem, group in _by_model(docs):
        datasets: list[str] = []
        for doc in group:
            datasets += [s for s in (doc.get("subsets") or {}) if s not in datasets]
        has_average = any(_number((d.get("summary") or {}).get("average")) is not None for d in group)
        columns = datasets + (["average"] if has_average else [])
        if not columns:
            continue
        bars = []
        for doc in group:
            subsets = doc.get("subsets") or {}
            values = [_number((subsets.get(c) or {}).get("score")) for c in datasets]
            if has_average:
                values.append(_number((doc.get("summary") or {}).get("average")))
            bars.append((_label(doc), values))
        path, sig = out_dir / f"{task}_{stem}.png", signature(task, model, columns, bars)
        if is_current(path, sig):
            paths.append(path)
            continue
        bottom = 0.3 + 0.06 * max(len(c) for c in columns)  # room for the rotated dataset names
        right = 0.4 + 0.065 * max(len(label) for label, _ in bars)  # the legend sits right of the axes
        plot_width = min(16.0, max(4.0, len(columns) * (0.25 + 0.1 * len(group))))
        fig, ax = _figure(0.8 + plot_width + right, 3.5 + bottom, (0.8, bottom, right, 0.4))
        width = 0.8 / len(group)
        x = np.arange(len(columns))
        for k, (label, values) in enumerate(bars):
            heights = [np.nan if v is None else v for v in values]
            ax.bar(x - 0.4 + width * (k + 0.5), heights, width, label=label)
        ax.set_xticks(x, columns, rotation=45, ha="right")
        ax.set_ylabel("score")
        ax.set_title(f"{task} - {model}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(columns) - 0.4)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        paths.append(_save(fig, path, sig))
    return paths


def plot_ruler(docs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """RULER per-length curves (drawn by harness.task_reports)."""
    from harness.task_reports import plot_ruler as draw  # noqa: PLC0415

    return draw(docs, out_dir)


PLOTTERS: dict[str, Plotter] = {
    "ruler": plot_ruler,
    "needle": plot_needle,
    "pg19": plot_ppl,
    "longbench": partial(plot_bars, task="longbench"),
    "leval": partial(plot_bars, task="leval"),
}
