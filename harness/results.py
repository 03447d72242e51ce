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

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SHARD_RE = re.compile(r"^(?P<subset>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)$")


class ExperimentDir:
    """Paths and I/O for one experiment directory."""

    def __init__(self, root: str | Path, exp_name: str):
        self.path = Path(root) / exp_name
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

    def read_config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def prediction_files(self) -> dict[str, list[Path]]:
        """subset -> its prediction files (unsharded and shard files)."""
        out: dict[str, list[Path]] = {}
        if not self.predictions_dir.is_dir():
            return out
        for f in sorted(self.predictions_dir.glob("*.jsonl")):
            m = SHARD_RE.match(f.stem)
            out.setdefault(m.group("subset") if m else f.stem, []).append(f)
        return out


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent shards never collide
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete JSON lines of `path`; a torn last line (crash mid-write) is skipped."""
    if not path.is_file():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn write: the runner truncates it before appending
            line = line.strip()
            if line:
                yield json.loads(line)


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


class JsonlAppender:
    """Appends one JSON object per line, flushed and fsynced, after cutting any torn last line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair(path)
        self.fh = path.open("a", encoding="utf-8")

    @staticmethod
    def _repair(path: Path) -> None:
        if not path.is_file() or path.stat().st_size == 0:
            return
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])

    def append(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_experiments(root: str | Path, patterns: list[str] | None = None) -> list[ExperimentDir]:
    """Experiment directories under `root` (those with a config.json), optionally filtered by glob patterns."""
    import fnmatch  # noqa: PLC0415

    root = Path(root)
    if not root.is_dir():
        return []
    found = sorted(p.parent.name for p in root.glob("*/config.json"))
    if patterns:
        found = [n for n in found if any(fnmatch.fnmatch(n, pat) for pat in patterns)]
    return [ExperimentDir(root, n) for n in found]
