"""Figures for `gali-collect` (matplotlib, Agg canvas, PNG), keyed by task name in `PLOTTERS`.

Every plotter is `fn(docs, out_dir) -> list[Path]`: `docs` are scores.json documents written by gali-eval
(`exp_name`, `model`, `method`, `subsets`, `summary`, optional `windows.original_window`), `out_dir` is created.
What each plotter reads from `doc["subsets"][<subset>]`:

- `needle`: `cells = {"<length>|<depth>": accuracy % or None}` (and `tokens_by_length`, `by_length`) -> one
  depth x length heatmap per experiment (`needle_<exp>.png`, cividis, real token counts on the ticks, the window M
  marked), the methods of a model side by side (`needle_methods_<model>.png`) and pass rate vs length
  (`needle_length_<model>.png`, log2 axis).
- `pg19`: `ppl = {"<L>": value}` where value is a number, or a dict holding `ppl_token_weighted` (preferred),
  `ppl` or `ppl_mean_of_docs` (the pg19 task's per-length table) -> PPL-vs-length curves of all experiments of a
  model on one figure (`pg19_ppl_<model>.png`, log2 length axis, log y axis when PPL spans > 10x, window M marked).
  None/NaN values are skipped.
- `longbench` / `leval`: `score` per dataset (plus `summary.average`) -> grouped bars per dataset, one bar per
  experiment, one figure per model (`<task>_<model>.png`): metric named, value labels, n per dataset, the average
  apart.

Legends name methods (the experiment only where a method appears twice); `original` is the black dashed (hatched)
baseline; other methods take the Okabe-Ito colour-blind-safe palette (harness/stages/figures/style.py). Drawing lives in
harness/stages/figures/ and returns matplotlib Figure objects (tests read titles, labels and legends back from them).
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

from harness.stages import figure_pool

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
PLOT_VERSION = 2  # bump when the drawing code changes, so cached figures are redrawn


def signature(*parts: Any) -> str:
    """A digest of the data a figure shows (and of PLOT_VERSION)."""
    text = json.dumps([PLOT_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def is_current(path: Path, sig: str) -> bool:
    """True when `path` is a PNG drawn from data with signature `sig`."""
    if not path.is_file():
        return False
    try:
        from PIL import Image

        with Image.open(path) as im:
            return getattr(im, "text", {}).get(SIGNATURE_KEY) == sig
    except (OSError, ValueError, SyntaxError):
        return False


def _figure(width: float, height: float, margins: tuple[float, float, float, float]) -> tuple[Any, Any]:
    """A figure of width x height inches with one axes inset by (left, bottom, right, top) inches."""
    from matplotlib.figure import Figure

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
    """Per experiment a depth x length heatmap (`needle_<exp>.png`); per model the methods side by side
    (`needle_methods_<model>.png`, two or more experiments) and pass rate vs length (`needle_length_<model>.png`)."""
    from harness.stages.figures.needle import draw_heatmap, draw_methods_side_by_side, draw_pass_rate_vs_length

    paths = []
    stems = _unique(file_stem(str(d.get("exp_name"))) for d in docs)
    for doc, stem in zip(docs, stems):
        lengths, depths, grid = needle_grid(doc)
        if not lengths:
            log.info("%s: no needle cells to plot", doc.get("exp_name"))
            continue
        path = out_dir / f"needle_{stem}.png"
        paths.append(_draw(path, lambda doc=doc: draw_heatmap(doc, needle_grid, ANNOTATE_MAX_CELLS), doc))
    for model, stem, group in _by_model(docs):
        group = [d for d in group if needle_grid(d)[0]]
        if len(group) >= 2:
            paths.append(_draw(out_dir / f"needle_methods_{stem}.png",
                               lambda m=model, g=group: draw_methods_side_by_side(m, g, needle_grid), model, group))
        if group:
            paths.append(_draw(out_dir / f"needle_length_{stem}.png",
                               lambda m=model, g=group: draw_pass_rate_vs_length(m, g), "length", model, group))
    return paths


def _draw(path: Path, draw: Callable[[], Any], *data: Any) -> Path:
    """Draw and save unless `path` already shows exactly `data` (its signature)."""
    sig = signature(path.name, *data)
    if is_current(path, sig) or figure_pool.defer(path, draw, sig):  # deferred: drawn in parallel by collect
        return path
    return _save(draw(), path, sig)


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
    """PPL vs evaluated length (log2), every experiment of a model on one figure (`pg19_ppl_<model>.png`)."""
    from harness.stages.figures.curves import draw_ppl

    paths = []
    for model, stem, group in _by_model(docs):
        if not any(ppl_curve(m.get("ppl") or {}) for d in group for m in (d.get("subsets") or {}).values()):
            log.info("%s: no PPL curves to plot", model)
            continue
        paths.append(_draw(out_dir / f"pg19_ppl_{stem}.png", lambda m=model, g=group: draw_ppl(m, g, ppl_curve),
                           model, group))
    return paths


# ------------------------------------------------------------------------------------------------------------ bars
def plot_bars(docs: list[dict[str, Any]], out_dir: Path, task: str = "longbench") -> list[Path]:
    """Grouped bars per dataset (and the average, set apart), one bar per experiment; one figure per model."""
    from harness.stages.figures.bars import draw_bars

    paths = []
    for model, stem, group in _by_model(docs):
        if not any(d.get("subsets") for d in group):
            continue
        paths.append(_draw(out_dir / f"{task}_{stem}.png", lambda m=model, g=group: draw_bars(task, m, g),
                           task, model, group))
    return paths


def plot_ruler(docs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """RULER per-length curves (drawn by harness.tasks.reports)."""
    from harness.tasks.reports import plot_ruler as draw

    return draw(docs, out_dir)


PLOTTERS: dict[str, Plotter] = {
    "ruler": plot_ruler,
    "needle": plot_needle,
    "pg19": plot_ppl,
    "longbench": partial(plot_bars, task="longbench"),
    "leval": partial(plot_bars, task="leval"),
}
