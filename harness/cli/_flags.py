"""Flags every gali-* command shares: --version, -v/--verbose, -q/--quiet; and `gali-run --list`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import harness
from harness.cli._common import guarded, setup_logging
from harness.methods.base import METHODS
from harness.model.loading import BUNDLED_MODELS, FETCHED_MODELS, SUPPORTED_FAMILIES
from harness.tasks.base import TASKS


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """--version, -v/--verbose (DEBUG logging), -q/--quiet (warnings and errors only, no progress bars)."""
    p.add_argument("--version", action="version", version=f"{p.prog} (gali-harness) {harness.__version__}")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")


def configure_logging(args: argparse.Namespace) -> None:
    """setup_logging for the parsed flags; --quiet raises the level to WARNING and switches tqdm bars off."""
    setup_logging(getattr(args, "verbose", False))
    if getattr(args, "quiet", False):
        global _SAVED_LEVELS
        if _SAVED_LEVELS is None:
            _SAVED_LEVELS = (logging.getLogger().level, logging.getLogger("harness").level)
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("harness").setLevel(logging.WARNING)
        os.environ["TQDM_DISABLE"] = "1"  # child processes (gali-launch shards) read it when they import tqdm
        disable_progress_bars()
    else:
        reset_quiet()


def reset_quiet() -> None:
    """Undo --quiet in this process (a later command in the same process, e.g. in tests, starts clean)."""
    global _SAVED_LEVELS
    if _SAVED_LEVELS is not None:
        logging.getLogger().setLevel(_SAVED_LEVELS[0])
        logging.getLogger("harness").setLevel(_SAVED_LEVELS[1])
        _SAVED_LEVELS = None
    if _TQDM_INIT is not None:
        os.environ.pop("TQDM_DISABLE", None)
        disable_progress_bars(False)


_TQDM_INIT: Any = None
_SAVED_LEVELS: tuple[int, int] | None = None  # (root, harness) log levels before --quiet


def disable_progress_bars(disable: bool = True) -> None:
    """Every tqdm bar of this process off (tqdm read TQDM_DISABLE when it was imported, so the env var is too late);
    `disable=False` restores them."""
    from functools import partialmethod

    from tqdm import std

    global _TQDM_INIT
    if disable and _TQDM_INIT is None:
        _TQDM_INIT = std.tqdm.__init__
        std.tqdm.__init__ = partialmethod(_TQDM_INIT, disable=True)  # type: ignore[method-assign]
    elif not disable and _TQDM_INIT is not None:
        std.tqdm.__init__ = _TQDM_INIT  # type: ignore[method-assign]
        _TQDM_INIT = None


def _fields(cls: Any) -> list[str]:
    if not dataclasses.is_dataclass(cls):
        return []
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        out.append(f"{f.name}={default!r}")
    return out


def _first_line(obj: Any) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


def _registry_lines(registry: Any, label: str, describe: Callable[[Any], str],
                    fields: Callable[[Any], list[str]]) -> list[str]:
    """Two lines per registered class: name (aliases): description, then its parameter names."""
    aliases: dict[str, list[str]] = {}
    for alias, name in registry.aliases().items():
        aliases.setdefault(name, []).append(alias)
    lines = []
    for name, cls in registry.all().items():
        alias = f" (aliases: {', '.join(sorted(aliases[name]))})" if name in aliases else ""
        lines.append(f"{name}{alias}: {describe(cls)}")
        names = fields(cls)
        lines.append(f"    {label}: {', '.join(names) if names else '(none)'}")
    return lines


def list_text(what: str) -> str:
    """The `gali-run --list methods|tasks|models` text."""
    lines: list[str] = []
    if what == "methods":
        lines += _registry_lines(METHODS, "params", _first_line, lambda cls: _fields(cls.Params))
    elif what == "tasks":
        lines += _registry_lines(TASKS, "task_options", lambda cls: cls.description or _first_line(cls),
                                 lambda cls: _fields(cls.Options))
    elif what == "models":
        lines.append("bundled: " + ", ".join(BUNDLED_MODELS) + " (ships with the package)")
        lines.append("fetched: " + ", ".join(FETCHED_MODELS) + " (gali-demo fetch downloads it once)")
        lines.append("any Hugging Face hub id or local directory of the families: " + ", ".join(SUPPORTED_FAMILIES))
    return "\n".join(lines)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None,
                command: Callable[[argparse.Namespace], int]) -> int:
    """A `gali-*` entry point: parse `argv`, set up logging from the common flags, run `command(args)` with the
    one-line error handling of `guarded` (exit code 2 and no traceback for a user error)."""
    args = parser.parse_args(argv)
    configure_logging(args)
    return guarded(lambda: command(args))
