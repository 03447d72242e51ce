"""Shared glue for methods that only change RoPE frequencies (no attention changes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.core.errors import ConfigError
from harness.core.params import domain
from harness.methods.base import Method, ModelInfo
from harness.methods.common.hook import decoder

#: Families whose rotary embedding the frequency methods rebuild (every decoder-only RoPE family the harness loads).
#: Gemma 3 keeps one rope per layer type: the methods change the global ("full_attention") layers only, the
#: sliding-window layers keep their local rope (they never see distances beyond their window).
FREQUENCY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "phi3")


@dataclass
class FactorParams:
    """`factor` s: scale of the context extension. Default: max_pe / M (target length over the original window)."""

    factor: float | None = field(default=None, metadata=domain(ge=1.0, le=2.0**20, why="a context scaling factor"))


def resolve_factor(params: FactorParams, cfg: Any, window: int | None) -> float | None:
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


def rotary_inv_freqs(model: torch.nn.Module) -> dict[str | None, torch.Tensor]:
    """inv_freq per layer type (key None for single-rope families) of the model's rotary embedding."""
    rotary = decoder(model).rotary_emb
    if hasattr(rotary, "inv_freq"):
        return {None: rotary.inv_freq}
    return {t: getattr(rotary, f"{t}_inv_freq") for t in rotary.layer_types}


def set_rope_parameters(model: torch.nn.Module, **changes: Any) -> None:
    """Replace the model's rope parameters and rebuild its rotary embedding module (inv_freq is not a weight).

    Per-layer-type ropes (Gemma 3) change only for the global layers; other keys (partial_rotary_factor) are kept.
    """
    text = decoder(model)  # the module with `rotary_emb` and the text config (multimodal Gemma 3: language_model)
    config = text.config
    rope = dict(config.rope_parameters or {})
    if is_per_layer_type(rope):
        rope["full_attention"] = {**rope["full_attention"], **changes}
    else:
        rope.update(changes)
    config.rope_parameters = rope
    old = text.rotary_emb
    device = next(iter(old.buffers())).device
    text.rotary_emb = type(old)(config=config).to(device)


class FrequencyMethod(Method):
    """Base for linear / NTK / dynamic NTK / YaRN: a factor s > 0 (s >= 1 recommended)."""

    Params = FactorParams
    top_level_factor = True
    families = FREQUENCY_FAMILIES

    @classmethod
    def validate(cls, params: FactorParams, cfg: Any, window: int | None) -> None:
        if params.factor is not None and params.factor <= 0:
            raise ConfigError("params.factor", f"must be positive, got {params.factor}", "use e.g. factor = 4.0")
        if params.factor is None and not cfg.max_pe:
            raise ConfigError("params.factor", f"method '{cls.name}' needs a scaling factor",
                              "set factor (top level or in [params]) or max_pe so that factor = max_pe / window")

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        return {"factor": max(1.0, target / window)}

    def factor(self, info: ModelInfo) -> float:
        """The factor for this model (explicit or max_pe / M)."""
        s = resolve_factor(self.params, self.cfg, info.original_window)
        if s is None:  # validate() guarantees one of the two
            raise ConfigError("params.factor", "no factor", "set factor")
        return s
