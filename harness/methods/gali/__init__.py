"""`gali` (alias `dpi`): Greedy Attention Logit Interpolation, training-free (docs/methods/gali.md;
docs/reference/methods.md §2).

Prompts of at most M tokens (the pre-trained window) run exactly like the original model. Longer prompts are
prefilled as a first forward of M tokens followed by chunks (`chunk_coe`); before every chunk and every decode step
the positions of the whole sequence are rebuilt by the greedy construction (`gali.positions`), the un-rotated key
cache is re-rotated with them, and attention logits are linearly interpolated between the two neighbouring integer
relative distances. Without noise this runs on SDPA with interpolated keys (O(n) memory); with noise a query-blocked
explicit path is used (`gali.kernel`). Attention maps are never kept.

Defaults follow the reference README (the released code's own defaults disagree with it and with each other,
docs/reference/methods.md §2.1/§10): chunk_coe 3000, local_window 128, appro_attn true, use_chunk_softmax false,
noise gaussian, addon_relcoef 1, std_base 1.0, scale_mean 0, scale_std 1, scale_max 1 (not in the README; the
code's default), and precision "fp32" (the paper's algorithm; "bf16-reference" reproduces the released code's
bf16 arithmetic).

`stride` (a prefill memory knob for other methods) is ignored: GALI's chunking defines its results, so only
`chunk_coe` sets the forward sizes, for generation and for per-token log-probabilities alike.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, suggest
from harness.core.params import MAX_TOKENS, TOKENS0, domain
from harness.methods.base import METHODS, Method, ModelInfo
from harness.methods.common.attention import choose_kernel
from harness.methods.common.hook import RopeTables, install_kernel
from harness.methods.gali.checks import INVARIANTS
from harness.methods.gali.noise import NoiseSpec
from harness.methods.gali.positions import chunk_sizes
from harness.methods.gali.runtime import GaliKernel

log = logging.getLogger(__name__)

NOISE_KINDS = ("gaussian", "uniform")
NOISE_OFF = ("none", "no", "off", "false", "")  # the reference treats anything but gaussian/uniform as "no noise"
SUPPORTED_ROPE_TYPES = ("default", "llama3")
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
#: metadata of the reference's 0/1 switches
SWITCH = domain(ge=0, le=1, why="a 0/1 switch")


@dataclass
class GaliParams:
    """GALI parameters (docs/reference/methods.md §2.1). Defaults: the reference README's, see the module docstring."""

    #: int: fixed chunk size after the first M tokens; float: ratio of the tokens processed so far (3000.0 is a ratio)
    chunk_coe: int | float = field(default=3000, metadata=domain(gt=0, le=MAX_TOKENS))
    #: lower bound w on the number of newest tokens kept at unit-spaced integer positions (0 <= w < M)
    local_window: int = field(default=128, metadata=TOKENS0)
    #: true: logit interpolation; false: RoPE at the fractional positions (non-uniform position interpolation)
    appro_attn: bool = True
    #: accepted for compatibility; the softmax is exact either way, so it does not change results
    use_chunk_softmax: bool = False
    #: "gaussian", "uniform" or "none" (also "no"/"off"); noise only applies with appro_attn = true
    noise_type: str = "gaussian"
    #: 1: add noise only where the interpolation weight r != 0; 0: everywhere
    addon_relcoef: int | bool = field(default=1, metadata=SWITCH)
    #: multiplier on the distance-dependent noise std (scale_std = 1)
    std_base: float = field(default=1.0, metadata=domain(ge=0, le=1e6))
    #: gaussian mean: 0 -> 0, 1 -> the row mean of the logits
    scale_mean: int | bool = field(default=0, metadata=SWITCH)
    #: 0 -> std 1, 1 -> std = (query index - key index) / K * std_base
    scale_std: int | bool = field(default=1, metadata=SWITCH)
    #: uniform noise amplitude: 0 -> 1, 1 -> the row max of the logits
    scale_max: int | bool = field(default=1, metadata=SWITCH)
    #: "fp32": exact interpolation weights (the paper); "bf16-reference": the released code's bf16 arithmetic
    precision: Literal["fp32", "bf16-reference"] = "fp32"
    #: noise draws: "exact" (iid per logit, like the reference; a score tile per query block) or "factored"
    #: (gaussian, scale_mean = 0, fp32 only: each query's row iid N(0, 1), rows of a block correlated; flash speed)
    noise_sampler: Literal["exact", "factored"] = "exact"
    #: attention kernel: "auto" (fastest exact for the device), "sdpa", "flex", "flash" (CUDA, flash-attn) or "eager"
    kernel: Literal["auto", "sdpa", "flex", "flash", "eager"] = "auto"


def noise_kind(noise_type: str) -> str:
    """Normalised noise kind: "gaussian", "uniform" or "none"."""
    kind = noise_type.strip().lower()
    return kind if kind in NOISE_KINDS else "none"


def noise_spec(params: GaliParams) -> NoiseSpec:
    """The noise settings as the kernel uses them (none when appro_attn is false)."""
    kind = noise_kind(params.noise_type) if params.appro_attn else "none"
    return NoiseSpec(kind, int(params.addon_relcoef), float(params.std_base), int(params.scale_mean),
                     int(params.scale_std), int(params.scale_max), params.precision == "bf16-reference",
                     params.noise_sampler)


def validate_params(p: GaliParams, window: int | None) -> None:
    """Raise ConfigError("params.<key>", ...) for impossible combinations (window = M when known); each field's
    type and domain are checked when the params are built."""
    coe = p.chunk_coe
    if isinstance(coe, float):
        if window and math.floor(window * coe) < 1:
            raise ConfigError("params.chunk_coe", f"ratio {coe} gives an empty first chunk (floor({window}·{coe}) = 0)",
                              f"use a ratio >= {1 / window:.3g} or an int chunk size")
        if coe.is_integer() and coe >= 2:
            log.warning("params.chunk_coe = %s is a float, read as a ratio of the tokens processed so far (as the "
                        "reference does); write %d (an int) for a fixed chunk size", coe, int(coe))
    if window and p.local_window >= window:
        raise ConfigError("params.local_window", f"must be smaller than the original window M = {window}, got "
                          f"{p.local_window}", f"use a value below {window}, e.g. {min(128, window // 8)}")
    kind = p.noise_type.strip().lower()
    if kind not in NOISE_KINDS and kind not in NOISE_OFF:
        raise ConfigError("params.noise_type", f"unknown noise type {p.noise_type!r}"
                          f"{suggest(kind, NOISE_KINDS + ('none',))}", "use \"gaussian\", \"uniform\" or \"none\"")
    if p.noise_sampler == "factored" and kind in NOISE_KINDS and (
            kind != "gaussian" or int(p.scale_mean) or p.precision != "fp32"):
        raise ConfigError("params.noise_sampler", "\"factored\" draws gaussian noise with scale_mean = 0 in fp32 "
                          f"precision only (got noise_type = {p.noise_type!r}, scale_mean = {p.scale_mean}, "
                          f"precision = {p.precision!r})", "use noise_sampler = \"exact\"")
    if not p.appro_attn and kind in NOISE_KINDS:
        log.warning("params.noise_type = %r has no effect with appro_attn = false (noise perturbs interpolated "
                    "logits only)", p.noise_type)


def make_kernel(tables: RopeTables, window: int, params: GaliParams, seed: int = 42) -> GaliKernel:
    """The attention kernel for these parameters."""
    return GaliKernel(tables, window, params.local_window, interpolate=params.appro_attn,
                      reference=params.precision == "bf16-reference", noise=noise_spec(params), seed=seed)


@METHODS.register("gali", aliases=("dpi",), invariants=INVARIANTS)
class Gali(Method[GaliParams]):
    """GALI on full-depth Llama / Mistral / Qwen2 (GQA included; rope type default or llama3)."""

    equals_original_within_window = True

    def __init__(self, params: GaliParams, cfg: ExperimentConfig):
        super().__init__(params, cfg)
        self.kernel: GaliKernel | None = None
        seed = getattr(cfg, "seed", None)
        self._seed = 42 if seed is None else int(seed)

    @classmethod
    def validate(cls, params: GaliParams, cfg: ExperimentConfig, window: int | None) -> None:
        validate_params(params, window)

    def apply(self, model: torch.nn.Module, info: ModelInfo) -> None:
        super().apply(model, info)
        if info.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError("model", f"GALI supports model types {SUPPORTED_MODEL_TYPES}, got '{info.model_type}'",
                              "use a Llama, Mistral or Qwen2 checkpoint")
        if info.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ConfigError("model", f"GALI needs plain RoPE (rope_type default or llama3); this model has "
                              f"rope_type '{info.rope_type}'", "use a checkpoint without rope scaling")
        try:
            validate_params(self.params, info.original_window)
        except ConfigError as exc:
            source = getattr(self.cfg, "source", "")
            raise (exc.with_source(source) if source else exc) from None
        sliding = getattr(model.config, "sliding_window", None)
        if sliding and sliding < info.original_window and getattr(model.config, "use_sliding_window", True):
            log.warning("model has sliding_window=%s < M=%d; GALI attends to all keys (no sliding window)",
                        sliding, info.original_window)
        self.kernel = make_kernel(RopeTables(model), info.original_window, self.params, self._seed)
        install_kernel(model, choose_kernel(model, self.kernel, self.params.kernel))

    @property
    def window(self) -> int:
        if self.info is None:
            raise RuntimeError("Gali.apply(model, info) must run before prefill_chunks")
        return self.info.original_window

    def prefill_chunks(self, n_tokens: int, stride: int | None = None) -> list[int]:
        """`[n]` within the window, else `[M, c1, c2, ...]` from chunk_coe; `stride` is ignored (see module doc)."""
        if stride is not None and n_tokens > self.window:
            log.debug("gali ignores stride=%s: chunk_coe defines the prefill forwards", stride)
        if self.kernel is not None:
            self.kernel.reset()
        return chunk_sizes(n_tokens, self.window, self.params.chunk_coe)

    def start_example(self, seed: int) -> None:
        self._seed = seed
        if self.kernel is not None:
            self.kernel.set_seed(seed)

    @classmethod
    def suggested_params(cls, window: int, target: int) -> dict[str, Any]:
        """README-like settings scaled to the window; noise off (the fast SDPA path; in the released code the noise
        vanished at realistic positions anyway, docs/reference/methods.md §2.7)."""
        return {"chunk_coe": min(3000, window), "local_window": min(128, window // 8), "noise_type": "none"}
