"""A run's log file: `<results_dir>/<exp_name>/logs/run.log` gets the harness log and every Python warning (once per
warning text and place), so third-party warnings never land inside progress bars on the terminal."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Once(logging.Filter):
    """Pass each distinct message once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[Path]:
    """Inside: harness log records also go to `path`; warnings.warn(...) goes to `path` only (once each); the
    console log is routed through tqdm.write so it does not break progress bars."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    wlog = logging.getLogger("py.warnings")
    old_propagate, old_level = wlog.propagate, wlog.level
    wfile = logging.FileHandler(path, encoding="utf-8")
    wfile.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    wfile.addFilter(_Once())
    harness_log = logging.getLogger("harness")
    harness_log.addHandler(handler)
    wlog.addHandler(wfile)
    wlog.propagate = False  # not to the console
    wlog.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each warning once per place (the file handler also drops repeats)
            with logging_redirect_tqdm(loggers=[logging.getLogger()]):
                yield path
    finally:
        logging.captureWarnings(False)
        harness_log.removeHandler(handler)
        wlog.removeHandler(wfile)
        wlog.propagate, wlog.level = old_propagate, old_level
        handler.close()
        wfile.close()
