"""Shared glue for methods that only change RoPE frequencies (no attention changes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from transformers import PreTrainedConfig

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import domain
from harness.methods.base import Method, ModelInfo
from harness.methods.common.hook import decoder

#: Families whose rotary embedding the frequency methods rebuild (every decoder-only RoPE family the harness loads).
#: Gemma 3 keeps one rope per layer type: the methods change the global ("full_attention") layers only, the
#: sliding-window layers keep their local rope (they never see distances beyond their window).
FREQUENCY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "phi3")


def above(other: str) -> dict[str, str]:
    """Field metadata: the value must exceed field `other`'s (`metadata=domain(...) | above("beta_slow")`)."""
    return {"above": other}


def check_order(params: Any) -> None:
    """Raise ConfigError for a field declared `above(other)` whose value does not exceed `other`'s."""
    for f in dataclasses.fields(params):
        other = f.metadata.get("above")
        if other is None:
            continue
        high, low = getattr(params, f.name), getattr(params, other)
        if not low < high:
            defaults = {g.name: g.default for g in dataclasses.fields(params)}
            raise ConfigError(f"params.{f.name}", f"{f.name} ({high}) must exceed {other} ({low})",
                              f"keep the defaults {other} = {defaults[other]} and {f.name} = {defaults[f.name]}")


@dataclass
class FactorParams:
    """`factor` s: scale of the context extension. Default: max_pe / M (target length over the original window)."""

    factor: float | None = field(default=None, metadata=domain(ge=1.0, le=2.0**20, why="a context scaling factor"))


@dataclass
class RampParams(FactorParams):
    """YaRN's ramp bounds (beta_fast 32, beta_slow 1, as in the YaRN paper and transformers): dimensions with more
    than beta_fast rotations over the window M keep their frequency, those with fewer than beta_slow are divided by s,
    a linear ramp in between."""

    beta_fast: float = field(default=32.0, metadata=domain(gt=0, le=1e6) | above("beta_slow"))
    beta_slow: float = field(default=1.0, metadata=domain(gt=0, le=1e6))


FP = TypeVar("FP", bound=FactorParams)


def resolve_factor(params: FactorParams, cfg: ExperimentConfig, window: int | None) -> float | None:
    """The scaling factor: explicit, else max_pe / M when both are known."""
    if params.factor is not None:
        return params.factor
    if cfg.max_pe and window:
        return cfg.max_pe / window
    return None


def is_per_layer_type(rope: dict[str, Any]) -> bool:
    """True for rope parameters keyed by layer type (Gemma 3: {"full_attention": {...}, "sliding_attention": {...}})."""
    return bool(rope) and all(isinstance(v, dict) for v in rope.values())


def global_rope(config: Any) -> dict[str, Any]:
    """The rope parameters of the global-attention layers (the whole model's for single-rope families)."""
    rope = dict(config.get_text_config(decoder=True).rope_parameters or {})
    return dict(rope.get("full_attention", {})) if is_per_layer_type(rope) else rope


def rotary_dim(config: Any) -> int:
    """How many channels of each head rotate: head_dim × partial_rotary_factor (Phi-3 style partial rotary)."""
    config = config.get_text_config(decoder=True)  # multimodal Gemma 3: its text decoder's
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(head_dim * float(global_rope(config).get("partial_rotary_factor", 1.0)))


def text_config(model: torch.nn.Module) -> PreTrainedConfig:
    """The Hugging Face config of the model's text decoder (the model's own, or multimodal Gemma 3's text config)."""
    config = decoder(model).config
    assert isinstance(config, PreTrainedConfig), f"{type(model).__name__} has no Hugging Face config"
    return config


def rotary_embedding(model: torch.nn.Module) -> torch.nn.Module:
    """The shared rotary embedding module of the model's text decoder (`rotary_emb`)."""
    return decoder(model).get_submodule("rotary_emb")


def rotary_inv_freqs(model: torch.nn.Module) -> dict[str | None, torch.Tensor]:
    """inv_freq per layer type (key None for single-rope families) of the model's rotary embedding."""
    rotary = rotary_embedding(model)
    if hasattr(rotary, "inv_freq"):
        return {None: rotary.get_buffer("inv_freq")}
    layer_types = rotary.layer_types
    assert isinstance(layer_types, (list, tuple)), "a rotary module without inv_freq keeps one per layer type"
    return {str(t): rotary.get_buffer(f"{t}_inv_freq") for t in layer_types}


def set_rope_parameters(model: torch.nn.Module, **changes: Any) -> None:
    """Replace the model's rope parameters and rebuild its rotary embedding module (inv_freq is not a weight).

    Per-layer-type ropes (Gemma 3) change only for the global layers; other keys (partial_rotary_factor) are kept.
    """
    config = text_config(model)  # multimodal Gemma 3: its language model's
    rope: dict[str, Any] = dict(config.rope_parameters or {})
    if is_per_layer_type(rope):
        rope["full_attention"] = {**rope["full_attention"], **changes}
    else:
        rope.update(changes)
    config.rope_parameters = rope
    old = rotary_embedding(model)
    device = next(iter(old.buffers())).device
    decoder(model).rotary_emb = type(old)(config=config).to(device)


def yarn_rope(params: RampParams, factor: float, window: int, attention_factor: float | None) -> dict[str, Any]:
    """transformers' `yarn` rope parameters (attention_factor None: its default 0.1·ln(s) + 1)."""
    extra = {"attention_factor": attention_factor} if attention_factor is not None else {}
    return {"rope_type": "yarn", "factor": factor, "beta_fast": params.beta_fast, "beta_slow": params.beta_slow,
            "original_max_position_embeddings": window, **extra}


class FrequencyMethod(Method[FP]):
    """Base for the methods that only set transformers' rope parameters: a factor s ≥ 1 (explicit or max_pe / M).

    A subclass returns its rope parameters from `rope_parameters` (one rope type each, as in transformers'
    `modeling_rope_utils`); fields declared `above(other)` must exceed `other`.
    """

    top_level_factor = True
    families = FREQUENCY_FAMILIES

    @classmethod
    def derived_params(cls, params: FP, cfg: ExperimentConfig, window: int | None) -> dict[str, Any]:
        if params.factor is not None:
            return {}
        factor = resolve_factor(params, cfg, window)
        return {} if factor is None else {"factor": factor}

    @classmethod
    def validate(cls, params: FP, cfg: ExperimentConfig, window: int | None) -> None:
        if params.factor is None and not cfg.max_pe:
            raise ConfigError("params.factor", f"method '{cls.name}' needs a scaling factor",
                              "set factor (top level or in [params]) or max_pe so that factor = max_pe / window")
        check_order(params)

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        return {"factor": max(1.0, target / window)}

    def factor(self, info: ModelInfo) -> float:
        """The factor for this model (explicit or max_pe / M)."""
        s = resolve_factor(self.params, self.cfg, info.original_window)
        if s is None:  # validate() guarantees one of the two
            raise ConfigError("params.factor", "no factor", "set factor")
        return s

    def rope_parameters(self, model: torch.nn.Module, info: ModelInfo) -> dict[str, Any]:
        """The rope parameters this method sets (`rope_type` and its keys); {} keeps the model's own."""
        return {}

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        changes = self.rope_parameters(model, info)
        if changes:
            set_rope_parameters(model, **changes)
