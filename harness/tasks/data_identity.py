"""Data identity: which data files a run read and their content hashes (provenance.json and each record's data
fingerprint), and UTF-8 reading with errors that name the file and line."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from harness.core.errors import DataError

_RECORDERS: list[dict[str, str]] = []


def note_source(name: str, raw: bytes) -> None:
    """Record that data `name` (a file, or `archive!member`) with content `raw` was read (see `recording`)."""
    if _RECORDERS:
        digest = hashlib.sha256(raw).hexdigest()
        for rec in _RECORDERS:
            rec[name] = digest


@contextlib.contextmanager
def recording() -> Iterator[dict[str, str]]:
    """Collect {source name: sha256 of its content} of every data file read inside the block."""
    sources: dict[str, str] = {}
    _RECORDERS.append(sources)
    try:
        yield sources
    finally:
        _RECORDERS.remove(sources)


def read_text_file(path: Path | str) -> str:
    """A UTF-8 text file; DataError naming the file (and the line) when it is unreadable or not UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror}). Fix: check the file and its permissions") from None
    note_source(str(path), raw)
    return decode_utf8(raw, str(path))


def decode_utf8(raw: bytes, source: str) -> str:
    """`raw` as UTF-8, or a DataError naming `source` and the line of the first invalid byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{source}:{line}: not valid UTF-8 (byte {raw[exc.start]:#04x}). Fix: re-download the file "
                        "(gali-data download) or re-save it as UTF-8") from None


#: data files read in this process: path -> where it came from (provenance.json hashes them)
DATA_FILES: dict[str, str] = {}


def note_data_file(path: Path | str, source: str) -> None:
    """Remember that a task read `path` (from `source`: "data_dir", "hf:<repo>", "file")."""
    DATA_FILES[str(Path(path).resolve())] = source
