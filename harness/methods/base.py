"""The method interface: what a long-context method must provide to plug into the harness."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch
from transformers import Cache, DynamicCache

from harness.core.config import ExperimentConfig
from harness.core.registry import Registry
from harness.methods.invariants import Invariant
from harness.model.info import ModelInfo


@dataclass
class NoParams:
    """A method without parameters."""


#: the Params dataclass of a method
P = TypeVar("P")


def _declared_params(cls: type) -> type | None:
    """The concrete Params class `cls` names in its bases (`class Yarn(FrequencyMethod[YarnParams])`), if any."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        for arg in typing.get_args(base):
            if isinstance(arg, type):
                return arg
    return None


class Method(Generic[P]):
    """Base class. Subclasses name their Params dataclass as the type argument (`class Yarn(Method[YarnParams])`,
    which also sets `Params`), set `name` and override what they change.

    Life cycle: `validate` (config time, `window` may be None when the model is not known yet) →
    `__init__` → `apply(model, info)` once after loading → per example `start_example(seed)` →
    the engine asks `prefill_chunks(n)` how to split a prompt of n tokens into forward calls.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    #: the Params dataclass (set from the type argument; `build` checks each field's type and declared domain)
    Params: ClassVar[type] = NoParams
    #: `factor` may be given at the top level of the TOML (reference behaviour) instead of in [params]
    top_level_factor: ClassVar[bool] = False
    #: True when the method must reproduce `original` exactly for prompts within the pre-trained window
    equals_original_within_window: ClassVar[bool] = False
    #: the method's own gali-check invariants (usually from its package's checks.py); one named like a generic
    #: invariant replaces it for this method (docs/methods/adding.md)
    invariants: ClassVar[tuple[Invariant, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = _declared_params(cls)
        if declared is not None and "Params" not in cls.__dict__:
            cls.Params = declared

    def __init__(self, params: P, cfg: ExperimentConfig):
        self.params: P = params
        self.cfg = cfg
        self.info: ModelInfo | None = None

    @classmethod
    def validate(cls, params: P, cfg: ExperimentConfig, window: int | None) -> None:
        """Raise ConfigError("params.<key>", problem, fix) for impossible values. `window` is M if known.

        Each field's type and declared domain are already checked (`harness.core.params.build`); this checks what
        involves several fields, `max_pe` or the window.
        """

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        """Modify the loaded model in place (rope parameters, attention class)."""
        self.info = info

    def prefill_chunks(self, n_tokens: int, stride: int | None = None) -> list[int]:
        """Sizes of the forward calls used to prefill `n_tokens` (sum == n_tokens).

        Default: one forward, or `stride`-sized pieces with the KV cache carried (a memory knob).
        """
        if stride is None or stride >= n_tokens:
            return [n_tokens]
        sizes = [stride] * (n_tokens // stride)
        if n_tokens % stride:
            sizes.append(n_tokens % stride)
        return sizes

    def exact_length(self, info: ModelInfo) -> int | None:
        """Prompts of at most this many tokens must give the original model's logits (None: the method changes
        every length by design). Used by the preflight and gali-check; call after `apply`."""
        return info.original_window if self.equals_original_within_window else None

    def make_cache(self, model_config: Any) -> Cache:
        """An empty KV cache for one sequence (the engine's). Default: transformers' DynamicCache (every token)."""
        return DynamicCache(config=model_config)

    def cache_capacity(self, info: ModelInfo) -> int | None:
        """Most tokens the cache of `make_cache` holds (None: every token). Checked by the preflight."""
        return None

    def start_example(self, seed: int) -> None:
        """Called before each example with its derived seed (for methods with randomness)."""

    @classmethod
    def derived_params(cls, params: P, cfg: ExperimentConfig, window: int | None) -> dict[str, Any]:
        """Values a run derives for parameters left unset, e.g. a factor of max_pe / M (shown by `--dry-run`)."""
        return {}

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        """Sensible [params] for extending a model of window `window` to `target` tokens (benchmarks, demo, check)."""
        return {}


METHODS: Registry[Method[Any]] = Registry("method", "harness.methods")
