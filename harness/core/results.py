"""Results layout: one directory per experiment.

    results/<exp_name>/
        config.json                  resolved config (what ran)
        provenance.json              versions, git commit, device, seed, start/end times, throughput
        predictions/<subset>.jsonl   one JSON line per finished example (appended + flushed)
        predictions/<subset>.shard-<i>-of-<n>.jsonl   the same, per shard (gali-run --shard i/n)
        scores.json                  written by gali-eval
        logs/                        SLURM / launcher logs
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^(?P<subset>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)$")


class ExperimentDir:
    """Paths and I/O for one experiment directory."""

    def __init__(self, root: str | Path, exp_name: str):
        self.path = Path(root).expanduser() / exp_name
        self.name = exp_name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def provenance_path(self) -> Path:
        return self.path / "provenance.json"

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.json"

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def predictions_path(self, subset: str, shard: tuple[int, int] | None = None) -> Path:
        """The JSONL file of `subset` (per shard when sharded)."""
        suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard and shard[1] > 1 else ""
        return self.predictions_dir / f"{subset}{suffix}.jsonl"

    def exists(self) -> bool:
        return self.config_path.is_file()

    @property
    def data_path(self) -> Path:
        """data.json: which data files (content hashes) each subset's examples came from."""
        return self.path / "data.json"

    def read_config(self) -> dict[str, Any]:
        """config.json as a dict (HarnessError naming the file when it is unreadable or not a JSON object)."""
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{self.config_path}: unreadable ({exc}). Fix: restore it, or rerun gali-run with "
                               "--overwrite") from None
        if not isinstance(data, dict):
            raise HarnessError(f"{self.config_path}: not a JSON object. Fix: restore it, or rerun gali-run with "
                               "--overwrite")
        return data

    def has_predictions(self) -> bool:
        """True when any prediction file holds at least one byte."""
        return any(p.stat().st_size > 0 for paths in self.prediction_files().values() for p in paths if p.is_file())

    def prediction_files(self) -> dict[str, list[Path]]:
        """subset -> its prediction files (unsharded and shard files)."""
        out: dict[str, list[Path]] = {}
        if not self.predictions_dir.is_dir():
            return out
        for f in sorted(self.predictions_dir.glob("*.jsonl")):
            m = SHARD_RE.match(f.stem)
            out.setdefault(m.group("subset") if m else f.stem, []).append(f)
        return out


def io_error(exc: OSError, action: str, path: Path | str) -> HarnessError:
    """One line for a failed write: 'no space left on device while writing …', 'writing … failed (…)'."""
    if exc.errno == errno.ENOSPC:
        return HarnessError(f"no space left on device while {action} {path}. Fix: free some space, then rerun "
                            "(finished examples are kept)")
    if exc.errno == errno.EDQUOT:
        return HarnessError(f"disk quota exceeded while {action} {path}. Fix: free some space, then rerun")
    return HarnessError(f"{action} {path} failed ({exc.strerror or exc}). Fix: check that its directory exists, is a "
                        "directory and is writable")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file; I/O failures (full disk,
    read-only directory) become one HarnessError line and leave the old file as it was."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent shards never collide
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise io_error(exc, "writing", path) from None


def record_problem(rec: Any) -> str | None:
    """Why a parsed prediction line is not a usable record (None when it is one)."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    if not isinstance(rec.get("id"), str) or not rec["id"]:
        return "no string 'id'"
    if "meta" in rec and not isinstance(rec["meta"], dict):
        return "'meta' is not an object"
    return None


def scan_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    """(records, bad lines as (line number, text, problem)) of a predictions file; a torn last line (a crash
    mid-write, or a writer still appending) is neither."""
    good: list[dict[str, Any]] = []
    bad: list[tuple[int, str, str]] = []
    if not path.is_file():
        return good, bad
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                break  # torn write: the runner truncates it before appending
            if not raw.strip():
                continue
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                rec = json.loads(raw)
            except ValueError as exc:
                bad.append((n, text, f"not valid JSON ({exc})"))
                continue
            problem = record_problem(rec)
            if problem:
                bad.append((n, text, problem))
            else:
                good.append(rec)
    return good, bad


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of `path`; a torn last line is skipped, other broken lines are skipped with a warning."""
    good, bad = scan_jsonl(path)
    if bad:
        log.warning("%s: skipped %d broken line(s) (line %s: %s); a rerun of gali-run moves them to %s.bad and "
                    "redoes those examples", path, len(bad), bad[0][0], bad[0][2], path.name)
    yield from good


def latest_records(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """id -> last record over `paths`; a successful record is never replaced by a later error record."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        for rec in iter_jsonl(path):
            prev = out.get(rec["id"])
            if prev is not None and "error" not in prev and "error" in rec:
                continue
            out[rec["id"]] = rec
    return out


def repair_jsonl(path: Path) -> int:
    """Cut a torn last line and move broken lines (not JSON, no string id, a non-object meta) to `<file>.bad`,
    keeping every good record; returns how many lines were moved. Run only by the writer of `path` (it holds the
    experiment lock)."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    good, bad = scan_jsonl(path)
    if not bad:
        return 0
    side = path.with_name(path.name + ".bad")
    with side.open("a", encoding="utf-8") as fh:
        fh.writelines(f"{text}\n" for _, text, _ in bad)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good), encoding="utf-8")
    os.replace(tmp, path)
    log.warning("%s: %d broken line(s) (first: line %d, %s) moved to %s; those examples run again", path, len(bad),
                bad[0][0], bad[0][2], side.name)
    return len(bad)


class JsonlAppender:
    """Appends one JSON object per line, fsynced, after repairing the file (see `repair_jsonl`).

    A failed write (e.g. a full disk) truncates the file back to its last complete line and raises one
    HarnessError line, so the file stays valid. `write` is the low-level writer (os.write; replaceable in tests).
    """

    #: the low-level writer used when none is given (a test replaces it to simulate a full disk)
    default_write: Callable[[int, memoryview], int] = staticmethod(os.write)

    def __init__(self, path: Path, write: Callable[[int, memoryview], int] | None = None):
        self.path = path
        self._write = write or type(self).default_write
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_jsonl(path)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise io_error(exc, "opening", path) from None

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        start = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[self._write(self.fd, view):]
            os.fsync(self.fd)
        except OSError as exc:
            try:
                os.ftruncate(self.fd, start)  # drop the partial line: the file ends with a complete record
            except OSError:
                log.debug("could not truncate %s after a failed write", self.path)
            raise io_error(exc, "writing", self.path) from None

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_experiments(root: str | Path, patterns: list[str] | None = None) -> list[ExperimentDir]:
    """Experiment directories under `root` (those with a config.json), optionally filtered by glob patterns."""
    import fnmatch

    root = Path(root)
    if not root.is_dir():
        return []
    found = sorted(p.parent.name for p in root.glob("*/config.json"))
    if patterns:
        found = [n for n in found if any(fnmatch.fnmatch(n, pat) for pat in patterns)]
    return [ExperimentDir(root, n) for n in found]
