"""Resolve a config once into a `RunPlan`, the immutable input of every later stage.

`read_config` (harness.core.config) gives an `ExperimentConfig` with its core keys checked. Resolving it reads the
model's config once (`read_model_config`), then `plan_config` canonicalises the method and task names, builds the
typed method params and task options, checks the method x model family, lets the method and the task validate
themselves with the model's real window M, and picks the device and dtype this machine would use. The plan flows
down: run, dry-run, check and evaluate read it and never resolve again.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PretrainedConfig

from harness.core import params as P
from harness.core.config import ExperimentConfig, read_config
from harness.core.errors import ConfigError, ModelLoadError, suggest
from harness.methods.base import METHODS, Method
from harness.model.info import ModelInfo
from harness.model.loading import (
    POSITION_FAMILIES,
    check_family,
    load_model_config,
    model_info,
    resolve_device,
    resolve_dtype,
)
from harness.tasks.base import TASKS, Task

log = logging.getLogger(__name__)

#: How far `read_model_config` may go to read the model's config (never the weights):
#: "load" fetches what is missing (a run); "local" reads what is on this machine, a missing local path or an
#: unsupported family being an error (dry-run); "peek" reads what it can and is silent otherwise (config time:
#: gali-check, gali-launch, gali-sweep, matrices); "none" reads nothing (gali-eval: the saved, resolved config).
ModelAccess = Literal["load", "local", "peek", "none"]


@dataclass(frozen=True)
class RunPlan:
    """One experiment, resolved: what every stage after resolution reads (build it with `plan_config`)."""

    cfg: ExperimentConfig  #: the resolved config (canonical names, params and options with defaults): what is saved
    params: Any  #: the method's typed Params (a dataclass)
    options: Any  #: the task's typed Options (a dataclass)
    window: int | None  #: the pre-trained window M (None: not known here)
    window_source: str  #: where M came from
    model_config: PretrainedConfig | None  #: read once (ori_max_position_embeddings applied); None: not read here
    device: str | None  #: the device this machine would use (None: the configured device is not on this machine)
    dtype: torch.dtype | None  #: the dtype the model loads in on `device`

    @property
    def info(self) -> ModelInfo | None:
        """What methods need to know about the model (None when its config was not read)."""
        return model_info(self.model_config) if self.model_config is not None else None

    @property
    def method_cls(self) -> type[Method]:
        return METHODS.get(self.cfg.method)

    @property
    def task_cls(self) -> type[Task]:
        return TASKS.get(self.cfg.task)

    def build_method(self) -> Method:
        """A new instance of the method (with its own copy of the params: `apply` may fill derived values)."""
        return self.method_cls(copy.deepcopy(self.params), self.cfg)

    def build_task(self, tokenizer: Any = None) -> Task:
        """A new instance of the task."""
        return self.task_cls(self.cfg, copy.deepcopy(self.options), tokenizer)


def _all_method_param_keys() -> set[str]:
    keys: set[str] = set()
    for cls in METHODS.all().values():
        if dataclasses.is_dataclass(cls.Params):
            keys.update(P.field_names(cls.Params))
    return keys


def method_params(cfg: ExperimentConfig) -> Any:
    """Typed params of the configured method; keys meant for other methods are ignored with a warning."""
    cls = METHODS.get(cfg.method, "method")
    fields = set(P.field_names(cls.Params))
    data = dict(cfg.params)
    if cls.top_level_factor and cfg.factor is not None and "factor" not in data:
        data["factor"] = cfg.factor
    other = _all_method_param_keys() - fields
    ignored = sorted(k for k in data if k not in fields and k in other)
    if ignored:
        log.warning("%s: [params] keys %s are not used by method '%s' (ignored)", cfg.source, ignored, cls.name)
    for key in data:
        if key not in fields and key not in other:
            raise ConfigError(f"params.{key}", f"unknown parameter for method '{cls.name}'{suggest(key, fields)}",
                              f"valid keys: {', '.join(sorted(fields)) or '(none)'}", cfg.source)
    return P.build(cls.Params, data, prefix="params.", ignore=set(ignored))


def task_options(cfg: ExperimentConfig) -> Any:
    """Typed [task_options] of the configured task."""
    cls = TASKS.get(cfg.task, "task")
    return P.build(cls.Options, cfg.task_options, prefix="task_options.")


def method_families(method: str) -> tuple[str, ...]:
    """The model families `method` declares (`families` on its class; position families when undeclared)."""
    return tuple(getattr(METHODS.get(method, "method"), "families", POSITION_FAMILIES))


def read_model_config(cfg: ExperimentConfig, access: ModelAccess = "peek") -> PretrainedConfig | None:
    """The model's config (no weights), as far as `access` allows (see `ModelAccess`); None when not read."""
    if access == "none":
        return None
    if access == "load":
        return load_model_config(cfg)
    try:
        return load_model_config(cfg, fetch=False)
    except ModelLoadError as exc:
        if access == "local":
            log.warning("model config unavailable here (%s): the window M is not known", str(exc).splitlines()[0])
        return None
    except ConfigError:
        if access == "local":
            raise
        return None


def model_window(cfg: ExperimentConfig, model_config: PretrainedConfig | None,
                 window: int | None = None) -> tuple[int | None, str]:
    """(M, where it came from): `window` if given, else the model config's (after ori_max_position_embeddings)."""
    if window is not None:
        return window, "given"
    if cfg.ori_max_position_embeddings:
        return cfg.ori_max_position_embeddings, "ori_max_position_embeddings"
    if model_config is not None:  # multimodal Gemma 3: its text decoder's
        text = model_config.get_text_config(decoder=True)
        return int(text.max_position_embeddings), f"{model_config.model_type} model config"
    return None, "model config not available here"


def _device(cfg: ExperimentConfig) -> tuple[str | None, torch.dtype | None]:
    try:
        device = resolve_device(cfg.device, cfg.source)
    except ConfigError:  # checked (with its message) by the run stage's check_runtime on the machine that runs
        return None, None
    return device, resolve_dtype(cfg.dtype, device)


def plan_config(cfg: ExperimentConfig, model_config: PretrainedConfig | None = None,
                window: int | None = None) -> RunPlan:
    """Resolve `cfg` (not modified) with the model's config, if read: raises ConfigError naming the file and key.

    Reads no file: `model_config` comes from `read_model_config`; `window` overrides M (tests, tools)."""
    cfg = copy.deepcopy(cfg)
    try:
        cfg.method = METHODS.canonical(cfg.method, "method")
        cfg.task = TASKS.canonical(cfg.task, "task")
        params = method_params(cfg)
        options = task_options(cfg)
        if model_config is not None:  # the method x family check (docs/support.md), before any weights load
            check_family(cfg.method, method_families(cfg.method), model_config.model_type)
        window, source = model_window(cfg, model_config, window)
        if cfg.max_pe and window and cfg.ori_max_position_embeddings and cfg.max_pe < window:
            log.warning("%s: max_pe (%d) is below the original window (%d)", cfg.source, cfg.max_pe, window)
        METHODS.get(cfg.method).validate(params, cfg, window)
        TASKS.get(cfg.task).validate(cfg, options)
    except ConfigError as exc:
        raise (exc if exc.source else exc.with_source(cfg.source)) from None
    cfg.params = dataclasses.asdict(params)
    cfg.task_options = dataclasses.asdict(options)
    if cfg.factor is not None and "factor" in cfg.params:
        cfg.factor = None  # folded into params
    device, dtype = _device(cfg)
    return RunPlan(cfg, params, options, window, source, model_config, device, dtype)


def plan_experiment(cfg: ExperimentConfig, access: ModelAccess = "peek") -> RunPlan:
    """Read the model's config once (as far as `access` allows) and resolve `cfg` with it."""
    return plan_config(cfg, read_model_config(cfg, access))


def load_plan(path: str | Path, overrides: list[str] | None = None, access: ModelAccess = "peek") -> RunPlan:
    """One TOML file (with `extends`) and `--set` overrides, resolved (see `plan_experiment`)."""
    return plan_experiment(read_config(path, overrides), access)


def ensure_model_config(plan: RunPlan) -> RunPlan:
    """`plan` if it holds the model's config; else the plan resolved again with the config loaded (fetched if
    needed). Only a config-time plan made where the model was not readable yet (not fetched or cached) needs it."""
    if plan.model_config is not None:
        return plan
    log.debug("%s: the model config was not readable at config time: loading it now", plan.cfg.exp_name)
    return plan_experiment(plan.cfg, "load")


# --- for callers holding an ExperimentConfig (tests, tools) ------------------------------------------------------

def resolve(cfg: ExperimentConfig, window: int | None = None, peek: bool = True) -> ExperimentConfig:
    """`plan_config` applied to `cfg` in place (returned): canonical names, params and options with defaults.

    `window` is M if known; with `peek`, the model's config is read when it is on this machine."""
    plan = plan_config(cfg, read_model_config(cfg, "peek" if peek else "none"), window)
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, getattr(plan.cfg, f.name))
    return cfg


def build_method(cfg: ExperimentConfig) -> Method:
    """Instantiate the (resolved) config's method."""
    cls = METHODS.get(cfg.method)
    return cls(P.build(cls.Params, cfg.params, prefix="params."), cfg)


def build_task(cfg: ExperimentConfig, tokenizer: Any = None) -> Task:
    """Instantiate the (resolved) config's task."""
    cls = TASKS.get(cfg.task)
    return cls(cfg, P.build(cls.Options, cfg.task_options, prefix="task_options."), tokenizer)
