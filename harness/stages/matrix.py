"""Configs that share a base (`extends`) and method x task matrices (CLI axes or a `[matrix]` table).

- `extends = "base.toml"` (or a list, resolved relative to the file) reads the base first; the file's own keys win,
  tables are merged key by key.
- Axes: `gali-run --model M --task needle,pg19 --method original,gali --max-pe 1024` or, in a file,
  `[matrix] task = [...]; method = [...]` expand to one experiment per combination (model x task x max_pe x method).
  A scoped override `--set NAME:key=value` (or a `[matrix.NAME]` table) applies only to the cells whose task or
  method is NAME, e.g. `--set needle:times=1`, `--set gali:params.chunk_coe=64`.
- Matrix cells take each method's suggested parameters for the model's window M and max_pe (the ones gali-check and
  the benchmarks use) for the keys the user did not set; `suggested=False` keeps the methods' own defaults.
  Every resolved cell is saved as `config.toml` in its results directory, so `gali-run --cfg` reruns it exactly.
"""

from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from harness.core import params as P
from harness.core.config import (
    ExperimentConfig,
    deep_merge,
    from_dict,
    parse_overrides,
    read_config,
    read_config_data,
    set_dotted,
)
from harness.core.errors import ConfigError, HarnessError, suggest
from harness.methods.base import METHODS
from harness.stages.plots import file_stem
from harness.stages.resolve import ModelAccess, RunPlan, model_window, plan_config, read_model_config
from harness.tasks.base import TASKS

log = logging.getLogger(__name__)

AXES = ("model", "task", "max_pe", "method")


def split_list(text: str | None) -> list[str] | None:
    """'a,b, c' -> ['a', 'b', 'c'] (None stays None)."""
    if text is None:
        return None
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise HarnessError(f"{text!r}: empty list. Fix: give comma-separated names, e.g. gali,original")
    return items


def split_overrides(items: list[str] | None) -> tuple[list[str], dict[str, list[str]]]:
    """`--set` items -> (global ones, {scope: items}) where `scope:key=value` is scoped to a task or method."""
    plain: list[str] = []
    scoped: dict[str, list[str]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if eq and ":" in key:
            scope, _, key = key.partition(":")
            scoped.setdefault(scope.strip(), []).append(f"{key.strip()}={value}")
        else:
            plain.append(item)
    return plain, scoped


@dataclass
class Axes:
    """Matrix axes from the command line (None: not given)."""
    model: list[str] | None = None
    task: list[str] | None = None
    max_pe: list[int] | None = None
    method: list[str] | None = None
    scoped: dict[str, list[str]] = field(default_factory=dict)

    def given(self) -> bool:
        return any(getattr(self, a) is not None for a in AXES)


def _stem(model: str) -> str:
    return file_stem(model.split(":", 1)[1] if model.startswith("gali:") else model)


def _length(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _canonical(name: str) -> str:
    """The canonical task or method name for a scope (unknown names stay as written)."""
    for registry in (TASKS, METHODS):
        try:
            return registry.canonical(name)
        except ConfigError:
            continue
    return name


def _matrix_table(data: dict[str, Any], source: str) -> tuple[dict[str, list[Any]], dict[str, dict[str, Any]]]:
    """Pop `[matrix]` from a config: (axes lists, {scope: table})."""
    table = data.pop("matrix", None) or {}
    if not isinstance(table, dict):
        raise ConfigError("matrix", "must be a table", "write [matrix] with method = [...], task = [...]", source)
    axes: dict[str, list[Any]] = {}
    scoped: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        if key in AXES:
            axes[key] = value if isinstance(value, list) else [value]
        elif isinstance(value, dict):
            scoped[key] = value
        else:
            raise ConfigError(f"matrix.{key}", f"unknown matrix key{suggest(key, AXES)}",
                              f"use {', '.join(AXES)} (lists) or [matrix.<task or method>] tables", source)
    return axes, scoped


def cell_name(base_name: str, values: dict[str, Any], varying: list[str]) -> str:
    """`<base>-<varying values>`, or without a base `<model>-<task>[-<max_pe>]-<method>`."""
    parts = [base_name] if base_name else []
    for a in AXES:
        value = values.get(a)
        if value is None or (base_name and a not in varying):
            continue
        parts.append(_stem(str(value)) if a == "model" else _length(int(value)) if a == "max_pe" else str(value))
    return "-".join(parts)


def _suggest_params(cfg: ExperimentConfig, window: int | None) -> None:
    """Fill the method's suggested parameters for this model's window and max_pe into keys the user left unset."""
    if not cfg.max_pe:
        return
    if not window:
        log.warning("%s: the model's window is not known here (config not local or cached), so the method keeps its "
                    "own default parameters; download the model first (hf download) or set them with --set",
                    cfg.source)
        return
    cls = METHODS.get(cfg.method, "method")
    for key, value in cls.suggested_params(window, cfg.max_pe).items():
        if key in cfg.params or (key == "factor" and cfg.factor is not None):
            continue
        cfg.params[key] = value


class ModelConfigs:
    """Each model's config read once per command (a matrix has many cells per model)."""
    def __init__(self, access: ModelAccess) -> None:
        self.access: ModelAccess = access
        self._seen: dict[tuple, PretrainedConfig | None] = {}

    def get(self, cfg: ExperimentConfig) -> PretrainedConfig | None:
        key = (cfg.model, cfg.revision, cfg.gguf_file, cfg.trust_remote_code, cfg.ori_max_position_embeddings)
        if key not in self._seen:
            self._seen[key] = read_model_config(cfg, self.access)
        return self._seen[key]


def expand(data: dict[str, Any], source: str, base_name: str, axes: Axes, suggested: bool = True,
           global_overrides: list[str] | None = None, models: ModelConfigs | None = None) -> list[RunPlan]:
    """One resolved plan per cell of the matrix given by `axes` and the data's `[matrix]` table."""
    models = models or ModelConfigs("peek")
    data = copy.deepcopy(data)
    file_axes, scoped_tables = _matrix_table(data, source)
    given = {a: getattr(axes, a) if getattr(axes, a) is not None else file_axes.get(a) for a in AXES}
    varying = [a for a in AXES if given[a] is not None]
    lists: dict[str, list[Any]] = {}
    for a in AXES:
        values = given[a]
        if values is None:
            if a in ("model", "task", "method") and a not in data:
                raise HarnessError(f"{source}: the matrix needs a {a}. Fix: pass --{a} NAME (or set {a} in the "
                                   "config)")
            values = [data.get(a)]
        lists[a] = values
    scopes: list[tuple[str, str, Any]] = [(_canonical(s), "table", t) for s, t in scoped_tables.items()]
    scopes += [(_canonical(s), "items", items) for s, items in axes.scoped.items()]
    names_in_matrix = {_canonical(str(v)) for a in ("task", "method") for v in lists[a]}
    for scope, _, _ in scopes:
        if scope not in names_in_matrix:
            raise HarnessError(f"scoped override '{scope}:...' names no task or method of this matrix"
                               f"{suggest(scope, sorted(names_in_matrix))}. Fix: use one of "
                               f"{', '.join(sorted(names_in_matrix))}")
    out = []
    for combo in itertools.product(*(lists[a] for a in AXES)):
        cell = copy.deepcopy(data)
        for a, value in zip(AXES, combo):
            if value is not None:
                cell[a] = value
        task, method = _canonical(str(cell.get("task"))), _canonical(str(cell.get("method")))
        for scope, kind, payload in scopes:
            if scope not in (task, method):
                continue
            if kind == "table":
                cell = deep_merge(cell, payload)
            else:
                for key, value in parse_overrides(payload):
                    set_dotted(cell, key, value)
        for key, value in parse_overrides(global_overrides):
            set_dotted(cell, key, value)
        if cell.get("exp_name") == data.get("exp_name"):  # not set by a scoped override: name the cell
            cell["exp_name"] = cell_name(base_name, dict(zip(AXES, combo)), varying)
        cfg = from_dict(cell, source=f"{source} [{cell['exp_name']}]")
        model_config = models.get(cfg)
        if suggested:
            _suggest_params(cfg, model_window(cfg, model_config)[0])
        out.append(plan_config(cfg, model_config))
    names = [p.cfg.exp_name for p in out]
    if len(set(names)) != len(names):
        raise HarnessError(f"{source}: the matrix gives duplicate experiment names ({', '.join(names)}). "
                           "Fix: vary fewer axes or set exp_name per cell with a scoped override")
    return out


def load_experiments(paths: list[str], overrides: list[str] | None = None, axes: Axes | None = None,
                     suggested: bool = True, access: ModelAccess = "peek") -> list[RunPlan]:
    """Resolved experiments of `gali-run`: each file (with `extends`), expanded over `axes` and its `[matrix]`
    table; without files, the axes alone (model, task and method are then required). Each model's config is read
    once (as far as `access` allows, see harness.stages.resolve)."""
    models = ModelConfigs(access)
    axes = axes or Axes()
    plain, scoped = split_overrides(overrides)
    axes.scoped = {**scoped, **axes.scoped}
    if not paths:
        if not axes.given():
            raise HarnessError("nothing to run. Fix: pass --cfg FILE(s), or --model, --task and --method for a matrix")
        return expand({}, "<command line>", "", axes, suggested, plain, models)
    out: list[RunPlan] = []
    for path in paths:
        data = read_config_data(path)
        if not axes.given() and "matrix" not in data and not axes.scoped:
            cfg = read_config(path, plain)
            out.append(plan_config(cfg, models.get(cfg)))
            continue
        out += expand(data, str(path), str(data.get("exp_name") or Path(path).stem), axes, suggested, plain, models)
    return out


def parse_int_list(text: str | None, flag: str) -> list[int] | None:
    """'8192,16384' -> [8192, 16384] for --max-pe."""
    items = split_list(text)
    if items is None:
        return None
    try:
        return [P.coerce(P.parse_override_value(x), int, flag) for x in items]
    except ConfigError:
        raise HarnessError(f"{flag} {text!r}: expected integers, e.g. {flag} 16384") from None
