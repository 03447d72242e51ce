"""What produced a result: versions, commit, machine, times."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from importlib import metadata
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
    import transformers

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


# ------------------------------------------------------------------------------------------- audit trail (run details)


def hash_cache_path() -> Path:
    """`$GALI_CACHE/sha256-cache.json` if GALI_CACHE is set, else ~/.cache/gali-harness/sha256-cache.json."""
    root = os.environ.get("GALI_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "gali-harness") / "sha256-cache.json"


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def git_state() -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None} of the harness checkout."""
    value = git_commit()
    if value is None:
        return {"commit": None, "dirty": None}
    return {"commit": value.removesuffix("-dirty"), "dirty": value.endswith("-dirty")}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) in hash_cache_path() so large weights are hashed once."""
    cache_path = hash_cache_path()
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)
    except OSError:
        pass
    return cache[key]


def lock_packages(root: Path | None = None) -> list[str]:
    """Package names of requirements/lock.txt (`name==version` lines), else the project's declared dependencies."""
    root = root or Path(harness.__file__).resolve().parent.parent
    lock = root / "requirements" / "lock.txt"
    names: list[str] = []
    if lock.is_file():
        for line in lock.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                names.append(re.split(r"[=<>!~;\[ @]", line, maxsplit=1)[0])
        return names
    try:
        requires = metadata.requires("gali-harness") or []
    except metadata.PackageNotFoundError:
        requires = []
    for req in requires:
        if "extra ==" not in req:
            names.append(re.split(r"[=<>!~;\[ (]", req, maxsplit=1)[0])
    return names


def package_versions(names: list[str]) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in sorted(set(names), key=str.lower):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    """The CPU model name (/proc/cpuinfo on Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """Names of the visible CUDA devices."""
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def data_identity(files: dict[str, str]) -> list[dict[str, Any]]:
    """Each data file read ({path: source}, e.g. harness.tasks.datasets.DATA_FILES): path, source, size, sha256."""
    out = []
    for path, source in sorted(files.items()):
        p = Path(path)
        if p.is_file():
            out.append({"path": path, "source": source, "bytes": p.stat().st_size, "sha256": file_sha256(p)})
    return out


def run_details(model_identity: dict[str, Any], data_files: dict[str, str]) -> dict[str, Any]:
    """The audit-trail part of provenance.json: command line, git state, packages, machine, model and data.

    `model_identity` comes from harness.model.loading.model_identity, `data_files` from the task layer."""
    return {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cwd": os.getcwd(),
        "git": git_state(),
        "packages": package_versions([*lock_packages(), "torch"]),  # the lock leaves torch to setup.sh
        "cpu": cpu_name(),
        "gpus": gpu_names(),
        "model_identity": model_identity,
        "data_files": data_identity(data_files),
    }
