"""Figures of `gali-collect`: what each task declares (`Task.figures`), drawn only where the data changed.

A task's figure plans (harness/tasks/figures/) turn its scores documents into `FigureJob`s (file stem, drawing
function, data). Here each job gets its path (`<out_dir>/<stem>.png`) and a signature of the data it shows; a PNG
that already stores that signature (a PNG text chunk) is kept, the others are drawn by harness.stages.figure_pool
(in worker processes when there are many) and saved as an RGB PNG written here (the canvas pixels, zlib level 1:
about twice as fast as matplotlib's writer, the files a little larger) with the signature in a tEXt chunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from harness.stages import figure_pool
from harness.tasks.base import Doc, FigureJob, collect_task
from harness.tasks.figures.style import file_stem
from harness.tasks.scoring.perplexity import ppl_curve

__all__ = ["Planned", "draw", "file_stem", "is_current", "plan", "png_bytes", "ppl_curve", "save", "signature"]

log = logging.getLogger(__name__)

SIGNATURE_KEY = "gali-signature"
PLOT_VERSION = 3  # bump when the drawing code changes, so cached figures are redrawn
PNG_LEVEL = 1  # zlib level: plots are mostly flat colour, level 1 is ~10% larger than 6 and much faster

Planned = tuple[Path, FigureJob, str]


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


def save(fig: Any, path: Path, sig: str) -> Path:
    """Render `fig` (at its own dpi) and write it to `path` as a PNG (atomically) with its data signature."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    tmp.write_bytes(png_bytes(np.asarray(canvas.buffer_rgba()), {SIGNATURE_KEY: sig}, fig.dpi))
    tmp.replace(path)
    return path


def png_bytes(rgba: np.ndarray, text: dict[str, str], dpi: float) -> bytes:
    """An 8-bit RGB PNG of an opaque (height, width, 4) image, with `text` as tEXt chunks (PNG spec, filter 0)."""
    height, width = rgba.shape[:2]
    rows = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 0] = 0  # filter type "None" for every scanline
    rows[:, 1:] = rgba[..., :3].reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    per_metre = round(dpi / 0.0254)
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
                     chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
                     *(chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1")) for k, v in text.items()),
                     chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_LEVEL)), chunk(b"IEND", b"")])


def plan(task: str, docs: list[Doc], out_dir: Path) -> tuple[list[Path], list[Planned]]:
    """(every figure path of `task`'s documents, the jobs whose file is missing or shows other data)."""
    paths: list[Path] = []
    todo: list[Planned] = []
    docs = sorted(docs, key=lambda d: str(d.get("exp_name")))
    for figure_plan in collect_task(task).figures:
        for job in figure_plan(docs):
            path = out_dir / f"{job.stem}.png"
            sig = signature(job.stem, job.draw.__name__, job.args)
            paths.append(path)
            if not is_current(path, sig):
                todo.append((path, job, sig))
    return paths, todo


def draw(task: str, docs: list[Doc], out_dir: Path, workers: int | None = 1) -> list[Path]:
    """Draw the figures `task` declares for `docs` into `out_dir` (unchanged ones are kept); the paths drawn or
    kept, without those that failed (logged)."""
    paths, todo = plan(task, docs, out_dir)
    failed = figure_pool.draw_all(todo, save, workers=workers)
    return [p for p in paths if p not in failed]
