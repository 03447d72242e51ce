"""Exclusive locks on an experiment (and on each of its shards), so two runs never write the same predictions.

An unsharded run holds `<exp>/.lock` exclusively. Shard i of n holds `<exp>/.lock` shared (shards of one
experiment run together) and `<exp>/.lock.shard-i-of-n` exclusively. The locks are `fcntl.flock` locks: the
kernel (or the NFS server) drops them when their process dies, so a lock left by a killed run is simply taken
over. The holder (host, pid, start time) is written into the lock file, so a refused run can name it.
With GALI_LOCK_WAIT=S a run waits up to S seconds for a held lock (a requeued job whose old instance is finishing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError

log = logging.getLogger(__name__)


def wait_seconds() -> float:
    """How long to wait for a held lock before refusing: GALI_LOCK_WAIT seconds (default 0: refuse at once)."""
    try:
        return max(0.0, float(os.environ.get("GALI_LOCK_WAIT", "0") or 0))
    except ValueError:
        raise HarnessError(f"GALI_LOCK_WAIT={os.environ['GALI_LOCK_WAIT']!r} is not a number of seconds. Fix: "
                           "correct or unset it") from None


def lock_paths(exp_path: Path, shard: tuple[int, int]) -> tuple[Path, Path | None]:
    """(experiment lock file, shard lock file or None for an unsharded run)."""
    shard_lock = exp_path / f".lock.shard-{shard[0]}-of-{shard[1]}" if shard[1] > 1 else None
    return exp_path / ".lock", shard_lock


def _holder_text(path: Path) -> str:
    """'pid 123 on host-a (since ...)' from a lock file, or '' when it names nobody."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return ""
    if not isinstance(info, dict) or "pid" not in info:
        return ""
    what = f" ({info['what']})" if info.get("what") else ""
    return f"pid {info['pid']} on {info.get('host', '?')}{what}, started {info.get('started', '?')}"


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _live_holders(exp_path: Path) -> list[str]:
    """Holders named by lock files whose lock is still held (shard runs), for the refusal message."""
    out = []
    for path in sorted(exp_path.glob(".lock.shard-*")):
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDWR)
            try:
                if _try_lock(fd, fcntl.LOCK_EX):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    continue
            finally:
                os.close(fd)
            out.append(f"shard {path.name.removeprefix('.lock.shard-').replace('-of-', '/')}: "
                       f"{_holder_text(path) or 'unknown holder'}")
    return out


class _Held:
    def __init__(self, path: Path, fd: int, exclusive: bool):
        self.path, self.fd, self.exclusive = path, fd, exclusive


def _acquire(path: Path, exclusive: bool, what: str, exp_path: Path) -> _Held | None:
    """Lock `path` (without waiting); HarnessError naming the holder when another run has it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise HarnessError(f"cannot create the lock file {path} ({exc.strerror}). Fix: check that "
                           f"{exp_path} is writable") from None
    deadline = time.monotonic() + wait_seconds()
    try:
        ok = _try_lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        while not ok and time.monotonic() < deadline:  # e.g. a requeued job while the old one finishes
            time.sleep(1.0)
            ok = _try_lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    except OSError as exc:  # a file system without locks: run unprotected, but say so
        os.close(fd)
        log.warning("%s: file locks are not supported here (%s); do not start this experiment twice", path,
                    exc.strerror)
        return None
    if not ok:
        os.close(fd)
        holders = _live_holders(exp_path) or [_holder_text(path) or "another run"]
        raise HarnessError(f"{exp_path} is in use by another run ({'; '.join(holders)}), so this {what} would "
                           "write the same predictions twice. Fix: wait for that run to finish or stop it "
                           "(a lock left by a process that died is taken over automatically)")
    if exclusive:
        stale = _holder_text(path)
        if stale:
            log.info("%s: taking over the lock of a run that no longer holds it (%s)", exp_path, stale)
        info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "what": what,
                                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    return _Held(path, fd, exclusive)


def _release(held: _Held | None) -> None:
    if held is None:
        return
    with contextlib.suppress(OSError):
        if held.exclusive:
            os.ftruncate(held.fd, 0)  # names nobody: the next holder finds no stale entry
        fcntl.flock(held.fd, fcntl.LOCK_UN)
    os.close(held.fd)


@contextlib.contextmanager
def experiment_lock(exp_path: Path, shard: tuple[int, int] = (0, 1), what: str = "") -> Iterator[None]:
    """Hold the experiment's lock (and the shard's) for the block; HarnessError when another run holds it."""
    exp_lock, shard_lock = lock_paths(exp_path, shard)
    label = what or ("gali-run" if shard_lock is None else f"gali-run of shard {shard[0]}/{shard[1]}")
    held = [_acquire(exp_lock, shard_lock is None, label, exp_path)]
    try:
        if shard_lock is not None:
            held.append(_acquire(shard_lock, True, label, exp_path))
        yield
    finally:
        for h in reversed(held):
            _release(h)
