"""Experiment configuration: TOML file -> validated, typed `ExperimentConfig`.

Top-level keys of the original GALI repository are accepted unchanged (task, model, method, exp_name, max_pe,
ori_max_position_embeddings, test, stride, times, min_k, max_k, gap, n_garbage, factor, [params]); our additions
are documented in README.md ("Config reference"). Method parameters (`[params]`) and task options
(`[task_options]`) are validated by the chosen method/task.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.core import params as P
from harness.core.errors import ConfigError, HarnessError
from harness.core.params import domain

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

# Keys that select work or place it, but do not change any single example's result: a rerun may change them.
RUNTIME_KEYS = {"device", "device_map", "results_dir", "max_examples", "test", "exp_name", "slurm", "data_dir",
                "log_samples", "tracking"}

MAX_TOKENS = P.MAX_TOKENS
#: experiment names: a safe set of characters (they name a directory and appear in job names)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@,-]*$")
NAME_MAX = 128
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")

_TOKENS = P.TOKENS
_KILO = domain(ge=1, le=MAX_TOKENS // 1000, why=f"thousands of tokens (at most {MAX_TOKENS // 1000})")


@dataclass
class ExperimentConfig:
    """One experiment: which model, method, task, and how to run it."""

    task: str
    model: str
    method: str
    exp_name: str = ""
    max_pe: int | None = field(default=None, metadata=_TOKENS)
    ori_max_position_embeddings: int | None = field(default=None, metadata=_TOKENS)
    test: bool = False
    # reference task keys (top level in the original repo)
    stride: int | None = field(default=None, metadata=_TOKENS)
    times: int | None = field(default=None, metadata=domain(ge=1, le=100_000, why="trials per cell"))
    min_k: int | None = field(default=None, metadata=_KILO)
    max_k: int | None = field(default=None, metadata=_KILO)
    gap: int | None = field(default=None, metadata=_KILO)
    n_garbage: int | None = field(default=None, metadata=domain(ge=1, le=4 * MAX_TOKENS, why="filler characters"))
    factor: float | None = field(default=None, metadata=domain(ge=1.0, le=2.0**20,
                                                               why="a context scaling factor s >= 1"))
    params: dict = field(default_factory=dict)
    # our additions
    seed: int = field(default=42, metadata=domain(ge=0, le=2**63 - 1))
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    device_map: str | None = None
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    gguf_file: str | None = None
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    prompt_format: Literal["auto", "reference", "chat_template", "raw", "longbench"] = "auto"
    system_prompt: str | None = None
    data_dir: str | None = None
    results_dir: str = "results"
    max_examples: int | None = field(default=None, metadata=domain(ge=1))
    subsets: list[str] | None = None
    task_options: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)
    log_samples: bool = True  # each prediction record carries the prompt sent (or its hash and head/tail)
    tracking: dict = field(default_factory=dict)  # [tracking] backend = "wandb" | "mlflow" (the `track` extra)
    # filled by resolve(): canonical names and typed parameter objects (not TOML keys)
    source: str = field(default="", metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the TOML-level keys (canonical method/task names after resolve)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("internal")}

    def fingerprint(self) -> dict[str, Any]:
        """The keys that determine per-example results (used to refuse resuming with a changed config)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the keys whose values differ between two (nested) dicts: ["params.chunk_coe", "times"]."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [prefix or "<config>"]
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}.{key}" if prefix else str(key)
        if key not in old or key not in new:
            if old.get(key) != new.get(key):
                out.append(name)
        else:
            out.extend(changed_keys(old[key], new[key], name))
    return out


TOP_LEVEL_KEYS = [f.name for f in dataclasses.fields(ExperimentConfig) if not f.metadata.get("internal")]


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `data["a"]["b"] = value` for `dotted == "a.b"`, creating tables as needed."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"'{part}' is not a table", "override a key inside a table, e.g. params.x=1")
    node[parts[-1]] = value


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    """Parse `--set key=value` strings (value parsed as TOML, else a plain string)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(item, "override must look like key=value",
                              "e.g. --set max_pe=8192 --set params.chunk_coe=1000")
        key, _, text = item.partition("=")
        out.append((key.strip(), P.parse_override_value(text.strip())))
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file with a clear error for missing files and syntax errors."""
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"{path}: config file not found. Fix: check the path (configs live under configs/)")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read the config ({exc.strerror}). Fix: check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise HarnessError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}). "
                           "Fix: save the config as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path}: invalid TOML ({exc}). Fix: correct the syntax at that line") from None
    except RecursionError:
        raise HarnessError(f"{path}: nested too deeply to read. Fix: flatten the tables and arrays") from None
    try:
        P.check_depth(data)
    except ConfigError as exc:
        raise exc.with_source(str(path)) from None
    return data


def from_dict(data: dict[str, Any], source: str = "<config>", exp_name_default: str = "") -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a plain dict (without method/task-specific validation)."""
    data = dict(data)
    if "exp_name" not in data and exp_name_default:
        data["exp_name"] = exp_name_default
    try:
        cfg = P.build(ExperimentConfig, data)
    except ConfigError as exc:
        raise exc.with_source(source) from None
    cfg.source = source
    _check_core(cfg, source)
    return cfg


def _check_core(cfg: ExperimentConfig, source: str) -> None:
    def bad(key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(key, problem, fix, source)

    if not cfg.exp_name:
        raise bad("exp_name", "missing", "add exp_name = \"my-experiment\" (it names the results directory)")
    if len(cfg.exp_name) > NAME_MAX or not NAME_RE.match(cfg.exp_name):
        shown = cfg.exp_name if len(cfg.exp_name) <= 40 else cfg.exp_name[:40] + "..."
        raise bad("exp_name", f"{shown!r} is not a safe directory name ({len(cfg.exp_name)} characters)",
                  f"use at most {NAME_MAX} letters, digits and . _ - + = @ , (starting with a letter or digit)")
    for key, value in (("results_dir", cfg.results_dir), ("data_dir", cfg.data_dir)):
        if value is not None and ((key == "results_dir" and not value.strip()) or any(ord(c) < 32 for c in value)):
            raise bad(key, f"{value!r} is not a usable path (empty, or control characters such as NUL/newline)",
                      "give a plain directory path")
    if cfg.min_k is not None and cfg.max_k is not None and cfg.min_k > cfg.max_k:
        raise bad("min_k", f"min_k={cfg.min_k} is larger than max_k={cfg.max_k}", "make min_k <= max_k")
    if not DEVICE_RE.match(cfg.device):
        raise bad("device", f"unknown device {cfg.device!r}", "use auto, cpu, mps, cuda or cuda:N")
    if cfg.device_map not in (None, "auto"):
        raise bad("device_map", f"unsupported value '{cfg.device_map}'", "use device_map = \"auto\" or remove the key")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `over`; nested tables are merged key by key (a copy; inputs unchanged)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_data(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A TOML config with its `extends` base(s) merged in (bases first, in list order; the file itself last)."""
    p = Path(path)
    if p.resolve() in _chain:
        names = " -> ".join(str(x) for x in (*_chain, p.resolve()))
        raise HarnessError(f"{path}: `extends` loops ({names}). Fix: remove one of the extends keys")
    data = read_toml(p)
    bases = data.pop("extends", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError("extends", "must be a file name or a list of file names", 'e.g. extends = "base.toml"',
                          str(path))
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = p.parent / base
        if not base_path.is_file():
            raise ConfigError("extends", f"base config '{base}' not found (looked for {base_path})",
                              "give a path relative to this file", str(path))
        merged = deep_merge(merged, read_config_data(base_path, (*_chain, p.resolve())))
    return deep_merge(merged, data)


def read_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """One TOML file (with its `extends` bases) and `--set` overrides -> an ExperimentConfig with its core keys
    checked. Method params and task options are checked when the config is resolved (harness.stages.resolve)."""
    data = read_config_data(path)
    if "matrix" in data:
        raise ConfigError("matrix", "this file is a matrix of several experiments",
                          f"run it with gali-run --cfg {path} (one experiment per cell; see docs/matrix.md)", str(path))
    for key, value in parse_overrides(overrides):
        set_dotted(data, key, value)
    return from_dict(data, source=str(path), exp_name_default=Path(path).stem)


def expand_config_paths(patterns: list[str]) -> list[str]:
    """Expand globs; a pattern that matches nothing is an error."""
    out: list[str] = []
    for pat in patterns:
        matches = sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]
        if not matches:
            raise HarnessError(f"{pat}: no config file matches. Fix: check the glob (quote it in the shell)")
        out.extend(matches)
    return out
