"""CLI plumbing shared by the gali-* commands: logging, clean error exits."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from harness.errors import HarnessError

log = logging.getLogger("harness")


def setup_logging(verbose: bool = False) -> None:
    """INFO (or DEBUG) to stderr; quiet third-party warnings that drown the output."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("transformers", "datasets", "huggingface_hub", "urllib3", "filelock", "matplotlib", "jieba"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging  # noqa: PLC0415

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def guarded(fn: Callable[[], int]) -> int:
    """Run a command body: user errors print one line and exit 2, Ctrl-C exits 130, no traceback for either."""
    try:
        return fn()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N); default from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set, else (0, 1)."""
    if text is None:
        tid, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("GALI_SHARDS")
        if tid is not None and count is not None:
            return int(tid) % int(count), int(count)
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise HarnessError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise HarnessError(f"--shard {text!r}: need 0 <= I < N")
    return i, n
