"""What produced a result: versions, commit, machine, times."""

from __future__ import annotations

import datetime as dt
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

import harness


def git_commit() -> str | None:
    """The harness checkout's commit (with '-dirty' if modified), or None outside git."""
    root = Path(harness.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: str) -> str:
    """Human-readable accelerator / CPU name."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def collect(device: str, seed: int) -> dict[str, Any]:
    """A provenance record for the start of a run."""
    import transformers  # noqa: PLC0415

    return {
        "harness_version": harness.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "seed": seed,
        "started": now(),
    }
