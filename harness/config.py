"""Experiment configuration: TOML file -> validated, typed `ExperimentConfig`.

Top-level keys of the original GALI repository are accepted unchanged (task, model, method, exp_name, max_pe,
ori_max_position_embeddings, test, stride, times, min_k, max_k, gap, n_garbage, factor, [params]); our additions
are documented in README.md ("Config reference"). Method parameters (`[params]`) and task options
(`[task_options]`) are validated by the chosen method/task.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import params as P
from harness.errors import ConfigError, HarnessError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

# Keys that select work or place it, but do not change any single example's result: a rerun may change them.
RUNTIME_KEYS = {"device", "device_map", "results_dir", "max_examples", "test", "exp_name", "slurm", "data_dir",
                "log_samples", "tracking"}


@dataclass
class ExperimentConfig:
    """One experiment: which model, method, task, and how to run it."""

    task: str
    model: str
    method: str
    exp_name: str = ""
    max_pe: int | None = None
    ori_max_position_embeddings: int | None = None
    test: bool = False
    # reference task keys (top level in the original repo)
    stride: int | None = None
    times: int | None = None
    min_k: int | None = None
    max_k: int | None = None
    gap: int | None = None
    n_garbage: int | None = None
    factor: float | None = None
    params: dict = field(default_factory=dict)
    # our additions
    seed: int = 42
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
    max_examples: int | None = None
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
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path}: invalid TOML ({exc}). Fix: correct the syntax at that line") from None


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
    if any(c in cfg.exp_name for c in "/\\") or cfg.exp_name.startswith("."):
        raise bad("exp_name", f"'{cfg.exp_name}' is not a valid directory name",
                  "use letters, digits, '-', '_' and '.'")
    for key in ("max_pe", "ori_max_position_embeddings", "stride", "times", "max_examples", "n_garbage", "gap"):
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise bad(key, f"must be positive, got {value}", f"set {key} to a positive integer or remove it")
    if cfg.factor is not None and cfg.factor <= 0:
        raise bad("factor", f"must be positive, got {cfg.factor}", "use a scaling factor such as 2.0 or 4.0")
    if cfg.min_k is not None and cfg.max_k is not None and cfg.min_k > cfg.max_k:
        raise bad("min_k", f"min_k={cfg.min_k} is larger than max_k={cfg.max_k}", "make min_k <= max_k")
    if cfg.device != "auto" and cfg.device != "cpu" and not cfg.device.startswith(("cuda", "mps")):
        raise bad("device", f"unknown device '{cfg.device}'", "use auto, cpu, cuda or cuda:N")
    if cfg.device_map not in (None, "auto"):
        raise bad("device_map", f"unsupported value '{cfg.device_map}'", "use device_map = \"auto\" or remove the key")


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load one TOML file, apply `--set` overrides, validate core keys, method params and task options."""
    from harness.matrix import read_config_data  # noqa: PLC0415
    from harness.resolve import resolve  # noqa: PLC0415 (avoids an import cycle with methods/tasks)

    data = read_config_data(path)  # the file with its `extends` base(s) merged in
    if "matrix" in data:
        raise ConfigError("matrix", "this file is a matrix of several experiments",
                          f"run it with gali-run --cfg {path} (one experiment per cell; see docs/matrix.md)", str(path))
    for key, value in parse_overrides(overrides):
        set_dotted(data, key, value)
    cfg = from_dict(data, source=str(path), exp_name_default=Path(path).stem)
    return resolve(cfg)


def expand_config_paths(patterns: list[str]) -> list[str]:
    """Expand globs; a pattern that matches nothing is an error."""
    out: list[str] = []
    for pat in patterns:
        matches = sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]
        if not matches:
            raise HarnessError(f"{pat}: no config file matches. Fix: check the glob (quote it in the shell)")
        out.extend(matches)
    return out


def dump_json(cfg: ExperimentConfig) -> str:
    """The resolved config as pretty JSON (what is saved next to the results)."""
    return json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False, sort_keys=False)
