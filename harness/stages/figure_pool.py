"""Draw the figures of one `gali-collect` in parallel worker processes.

While `deferring()` is active, `harness.stages.plots` queues each figure that needs drawing (its path, draw callable and
data signature) instead of drawing it; `draw_all` then renders the queue in forked worker processes (the callables
are closures, so they reach the workers by inheritance, not pickling) or serially where `fork` is unavailable, for
a handful of figures, or on one core. Results are identical to serial drawing: each figure is an independent file.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Job = tuple[Path, Callable[[], Any], str]
Save = Callable[[Any, Path, str], Path]
MIN_PARALLEL = 4  # fewer figures are drawn in-process (a worker start costs more than a figure)
_QUEUE: list[Job] | None = None
_RUNNING: tuple[list[Job], Save] | None = None


@contextlib.contextmanager
def deferring() -> Iterator[list[Job]]:
    """Queue figures (see `defer`) for the duration of the block; yields the queue."""
    global _QUEUE
    _QUEUE = queue = []
    try:
        yield queue
    finally:
        _QUEUE = None


def defer(path: Path, draw: Callable[[], Any], sig: str) -> bool:
    """Queue a figure when deferring is active (True), else leave it to the caller (False)."""
    if _QUEUE is None:
        return False
    _QUEUE.append((path, draw, sig))
    return True


def _draw_one(index: int) -> str | None:
    assert _RUNNING is not None
    jobs, save = _RUNNING
    path, draw, sig = jobs[index]
    try:
        save(draw(), path, sig)
    except (ValueError, KeyError, TypeError, IndexError, OSError, RuntimeError) as exc:
        return f"{path.name}: {type(exc).__name__}: {exc}"
    return None


def draw_all(jobs: list[Job], save: Save, workers: int | None = None) -> set[Path]:
    """Draw and save every queued figure; returns the paths that failed (each failure is logged)."""
    global _RUNNING
    workers = workers or min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8)
    parallel = workers > 1 and len(jobs) >= MIN_PARALLEL and "fork" in multiprocessing.get_all_start_methods()
    _RUNNING = (jobs, save)
    try:
        if parallel:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                errors = list(pool.map(_draw_one, range(len(jobs)), chunksize=max(1, len(jobs) // (4 * workers))))
        else:
            errors = [_draw_one(i) for i in range(len(jobs))]
    finally:
        _RUNNING = None
    failed = set()
    for (path, _, _), error in zip(jobs, errors, strict=True):
        if error:
            log.warning("plotting failed (%s); tables are unaffected", error)
            failed.add(path)
    return failed
