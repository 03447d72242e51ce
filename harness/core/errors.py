"""User-facing errors: one clear message, exit code 2, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """An error caused by the user's input (config, data, environment); printed without a traceback."""

    exit_code = 2


class ConfigError(HarnessError):
    """A bad configuration value. Names the file (if known), the key, and the fix."""

    def __init__(self, key: str, problem: str, fix: str = "", source: str | None = None):
        self.key, self.problem, self.fix, self.source = key, problem, fix, source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        text = f"{where}config key '{self.key}': {self.problem}"
        return f"{text}. Fix: {self.fix}" if self.fix else text

    def with_source(self, source: str) -> ConfigError:
        """Return a copy of this error that names the config file."""
        return ConfigError(self.key, self.problem, self.fix, source)


class DataError(HarnessError):
    """Missing or malformed data files."""


class ModelLoadError(HarnessError):
    """The model or tokenizer could not be loaded."""


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest candidate, or ''."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
