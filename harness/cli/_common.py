"""CLI plumbing shared by the gali-* commands: logging, clean error exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from harness.core.errors import HarnessError
from harness.core.results import find_experiments, io_error

log = logging.getLogger("harness")


def setup_logging(verbose: bool = False) -> None:
    """INFO (or DEBUG) to stderr; quiet third-party warnings that drown the output."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("transformers", "datasets", "huggingface_hub", "urllib3", "filelock", "matplotlib", "jieba"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def guarded(fn: Callable[[], int]) -> int:
    """Run a command body: user errors, I/O failures and running out of memory print one line and exit 2, Ctrl-C
    exits 130; no traceback for any of them."""
    try:
        return fn()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # an I/O failure not turned into a HarnessError closer to its cause: still one line
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return HarnessError.exit_code
    except MemoryError:  # a plan that passed the checks but still does not fit this machine
        print("error: out of memory. Fix: lower the lengths, times, max_pe or max_examples, or use a machine with "
              "more memory (finished examples are kept)", file=sys.stderr)
        return HarnessError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def os_error_text(exc: OSError) -> str:
    """One line for an OSError: the full-disk wording of harness.core.results, else the file and the system's reason."""
    import errno

    where = exc.filename if exc.filename is not None else "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return str(io_error(exc, "writing", where))
    return f"{where}: {exc.strerror or exc}. Fix: check that path (it exists, has the right type, is accessible)"


def parse_shard(text: str | list[str] | None, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """'I/N' -> (I, N). Without --shard: GALI_SHARDS ('I/N', or 'N' with the array task id) overrides; else a SLURM
    job array gives shard = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / step of SLURM_ARRAY_TASK_COUNT; else (0, 1).

    Conflicting requests are refused, never resolved silently: several different --shard values, a --shard that
    disagrees with GALI_SHARDS, or one that disagrees with a job array of exactly N tasks (whose ids then number
    the shards). A job array of another size (gali-sweep: configs x shards) does not constrain --shard.
    """
    env = os.environ if env is None else env
    texts = [text] if isinstance(text, str) else list(text or [])
    if not texts:
        return _shard_from_env(env)
    shards = {_parse_shard_text(t, "--shard") for t in texts}
    if len(shards) > 1:
        raise HarnessError(f"conflicting --shard values {', '.join(texts)}. Fix: pass --shard once")
    (shard,) = shards
    _check_env_agrees(shard, env)
    return shard


def _check_env_agrees(shard: tuple[int, int], env: Mapping[str, str]) -> None:
    """HarnessError when GALI_SHARDS or an N-task job array implies another shard than --shard I/N."""
    flag = f"--shard {shard[0]}/{shard[1]}"
    if env.get("GALI_SHARDS", "").strip():
        try:
            implied = _shard_from_env(env)
        except HarnessError as exc:
            raise HarnessError(f"{flag} given while GALI_SHARDS is set: {exc}") from None
        if implied != shard:
            raise HarnessError(f"{flag} disagrees with GALI_SHARDS={env['GALI_SHARDS']} (shard "
                               f"{implied[0]}/{implied[1]}). Fix: unset GALI_SHARDS or drop --shard")
        return
    if env.get("SLURM_ARRAY_TASK_ID") and _env_int(env, "SLURM_ARRAY_TASK_COUNT") == shard[1]:
        try:
            implied = _shard_from_env(env)
        except HarnessError:
            return  # irregular array ids do not number shards: --shard decides
        if implied != shard:
            raise HarnessError(f"{flag} disagrees with the SLURM job array (task {env['SLURM_ARRAY_TASK_ID']} of "
                               f"{shard[1]} is shard {implied[0]}/{implied[1]}), so two tasks would run the same "
                               "shard. Fix: drop --shard (the array numbers the shards) or pass --shard "
                               "$SLURM_ARRAY_TASK_ID/N")


def _parse_shard_text(text: str, what: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise HarnessError(f"{what} {text!r}: expected I/N, e.g. --shard 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise HarnessError(f"{what} {text!r}: need 0 <= I < N")
    return i, n


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        msg = f"environment variable {name}={value!r} is not an integer. Fix: correct or unset it"
        raise HarnessError(msg) from None


def _shard_from_env(env: Mapping[str, str]) -> tuple[int, int]:
    """The shard implied by GALI_SHARDS / the SLURM array variables (see parse_shard)."""
    override = env.get("GALI_SHARDS", "").strip()
    tid = _env_int(env, "SLURM_ARRAY_TASK_ID")
    first = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
    if override:
        if "/" in override:
            return _parse_shard_text(override, "GALI_SHARDS")
        n = _env_int(env, "GALI_SHARDS")
        if n is None or n < 1:
            raise HarnessError(f"GALI_SHARDS={override!r}: expected N >= 1 or I/N")
        if tid is None:
            raise HarnessError(f"GALI_SHARDS={override} needs SLURM_ARRAY_TASK_ID (a job array). "
                               "Fix: set GALI_SHARDS=I/N, pass --shard I/N, or unset GALI_SHARDS")
        return (tid - first) % n, n
    if tid is None:
        return 0, 1
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    step = _env_int(env, "SLURM_ARRAY_TASK_STEP", 1) or 1
    last = _env_int(env, "SLURM_ARRAY_TASK_MAX")
    if count is None:
        raise HarnessError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not. "
                           "Fix: pass --shard I/N or set GALI_SHARDS")
    offset = tid - first
    contiguous = last is None or (last - first) // step + 1 == count
    if not contiguous or offset % step or not 0 <= offset // step < count:
        raise HarnessError(f"job array ids (min {first}, max {last}, step {step}, count {count}, this task {tid}) "
                           "are not a regular range, so they cannot number shards. Fix: submit with "
                           f"--array=0-{count - 1} (optionally %K), or pass --shard I/N / GALI_SHARDS=I/N")
    return offset // step, count


def add_experiment_args(p: argparse.ArgumentParser) -> None:
    """--exp NAME... | --all, and --results-dir: how gali-eval / gali-collect pick experiments."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--exp", nargs="+", help="experiment name(s) or glob(s) under the results dir")
    g.add_argument("--all", action="store_true", help="every experiment under the results dir")
    p.add_argument("--results-dir", default="results")


def selected_experiments(args: argparse.Namespace) -> list[Any]:
    """The experiments named by `add_experiment_args` options; a clear error when there are none."""
    exps = find_experiments(args.results_dir, None if args.all else args.exp)
    if not exps:
        what = "" if args.all else f" matching {' '.join(args.exp)}"
        raise HarnessError(f"{args.results_dir}: found no experiment{what}. Fix: run gali-run first, "
                           "or pass --results-dir")
    return exps
