"""Draw the figures of one `gali-collect` in parallel worker processes.

`start(jobs, save)` forks the workers at once (they inherit the jobs, and matplotlib already imported and its font
loaded by the parent, so neither is paid per worker) and returns; the caller writes its tables meanwhile and then
`wait()`s. Jobs go out largest first, one at a time, so the workers stay evenly busy. With few jobs, one core or no
`fork` the figures are drawn in-process by `wait()`. Results are identical to serial drawing: each figure is an
independent file, and a figure that fails is logged and reported, never raised.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from harness.tasks.base import FigureJob

log = logging.getLogger(__name__)

Job = tuple[Path, FigureJob, str]
Save = Callable[[Any, Path, str], Path]
MIN_PARALLEL = 4  # fewer figures are drawn in-process (a worker start costs more than a figure)
MAX_WORKERS = 8
_RUNNING: tuple[list[Job], Save] | None = None
ERRORS = (ValueError, KeyError, TypeError, IndexError, OSError, RuntimeError)


def _draw_one(index: int) -> str | None:
    assert _RUNNING is not None
    jobs, save = _RUNNING
    path, job, sig = jobs[index]
    try:
        save(job.draw(*job.args), path, sig)
    except ERRORS as exc:
        return f"{path.name}: {type(exc).__name__}: {exc}"
    return None


def _preload() -> None:
    """Import matplotlib's Figure and Agg canvas and load the default font (inherited by forked workers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.5, 0.5), dpi=20)
    fig.text(0.5, 0.5, "0")
    FigureCanvasAgg(fig).draw()


class Drawing:
    """Figures being drawn; `wait()` returns the paths that failed."""

    def __init__(self, jobs: list[Job], save: Save, workers: int | None = None):
        global _RUNNING
        self.jobs, self.save = jobs, save
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        workers = min(workers or cores, MAX_WORKERS, len(jobs))
        self.pool: ProcessPoolExecutor | None = None
        self.futures: list[tuple[int, Future[str | None]]] = []
        if workers > 1 and len(jobs) >= MIN_PARALLEL and "fork" in multiprocessing.get_all_start_methods():
            _preload()
            _RUNNING = (jobs, save)
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
            order = sorted(range(len(jobs)), key=lambda i: -len(repr(jobs[i][1].args)))  # big figures first
            self.futures = [(i, self.pool.submit(_draw_one, i)) for i in order]

    def wait(self) -> set[Path]:
        global _RUNNING
        errors: dict[int, str | None] = {}
        try:
            if self.pool is not None:
                for i, future in self.futures:
                    try:
                        errors[i] = future.result()
                    except BrokenProcessPool as exc:  # a worker died (e.g. killed for memory)
                        errors[i] = f"{self.jobs[i][0].name}: drawing process died ({exc})"
                self.pool.shutdown()
            else:
                _RUNNING = (self.jobs, self.save)
                errors = {i: _draw_one(i) for i in range(len(self.jobs))}
        finally:
            _RUNNING = None
        failed = set()
        for i, (path, _, _) in enumerate(self.jobs):
            if errors.get(i):
                log.warning("plotting failed (%s); tables are unaffected", errors[i])
                failed.add(path)
        return failed


def start(jobs: list[Job], save: Save, workers: int | None = None) -> Drawing:
    """Start drawing `jobs` (see the module docstring); `workers` defaults to the usable cores (at most 8)."""
    return Drawing(jobs, save, workers)


def draw_all(jobs: list[Job], save: Save, workers: int | None = None) -> set[Path]:
    """Draw and save every job; returns the paths that failed (each failure is logged)."""
    return start(jobs, save, workers).wait()
