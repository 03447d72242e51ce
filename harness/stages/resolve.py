"""Resolve a core config: canonical method/task names, typed method params and task options, checks."""

from __future__ import annotations

import dataclasses
import logging

from harness.core import params as P
from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, suggest
from harness.methods.base import METHODS
from harness.tasks.base import TASKS

log = logging.getLogger(__name__)


def _all_method_param_keys() -> set[str]:
    keys: set[str] = set()
    for cls in METHODS.all().values():
        if dataclasses.is_dataclass(cls.Params):
            keys.update(P.field_names(cls.Params))
    return keys


def method_params(cfg: ExperimentConfig):
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


def task_options(cfg: ExperimentConfig):
    """Typed [task_options] of the configured task."""
    cls = TASKS.get(cfg.task, "task")
    return P.build(cls.Options, cfg.task_options, prefix="task_options.")


def resolve(cfg: ExperimentConfig, window: int | None = None, peek: bool = True) -> ExperimentConfig:
    """Canonicalise names and validate method params and task options (raises ConfigError naming the file).

    `window` is the pre-trained window M if known; with `peek`, it is read from the model's config when cheap.
    """
    try:
        cfg.method = METHODS.canonical(cfg.method, "method")
        cfg.task = TASKS.canonical(cfg.task, "task")
        mparams = method_params(cfg)
        topts = task_options(cfg)
        if peek:
            from harness.model.loading import check_family, peek_config

            mcfg = peek_config(cfg)
            if mcfg is not None:  # the method x family check (docs/support.md), before any weights load
                check_family(cfg.method, mcfg.model_type)
            if window is None:
                text = mcfg.get_text_config(decoder=True) if mcfg else None  # multimodal Gemma 3: its decoder's
                window = cfg.ori_max_position_embeddings or (int(text.max_position_embeddings) if text else None)
        if cfg.max_pe and window and cfg.ori_max_position_embeddings and cfg.max_pe < window:
            log.warning("%s: max_pe (%d) is below the original window (%d)", cfg.source, cfg.max_pe, window)
        METHODS.get(cfg.method).validate(mparams, cfg, window)
        TASKS.get(cfg.task).validate(cfg, topts)
    except ConfigError as exc:
        raise (exc if exc.source else exc.with_source(cfg.source)) from None
    cfg.params = dataclasses.asdict(mparams)
    cfg.task_options = dataclasses.asdict(topts)
    if cfg.factor is not None and "factor" in cfg.params:
        cfg.factor = None  # folded into params
    return cfg


def build_method(cfg: ExperimentConfig):
    """Instantiate the (resolved) config's method."""
    cls = METHODS.get(cfg.method)
    return cls(P.build(cls.Params, cfg.params, prefix="params."), cfg)


def build_task(cfg: ExperimentConfig, tokenizer=None):
    """Instantiate the (resolved) config's task."""
    cls = TASKS.get(cfg.task)
    return cls(cfg, P.build(cls.Options, cfg.task_options, prefix="task_options."), tokenizer)
