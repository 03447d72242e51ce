"""`gali-run --dry-run`: the resolved config with derived values filled in, model checks, and the plan.

No weights are loaded. What is checked: a `model` written as a local path exists; the model's family is supported
(its config.json is read when it is local or cached); the method accepts its parameters for the model's window.
Derived values are shown with their numbers (the pre-trained window M, the scaling factor max_pe / M).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from harness.core.config import ExperimentConfig
from harness.core.errors import ModelLoadError

log = logging.getLogger(__name__)
_TOKENIZERS: dict[tuple, Any] = {}


def model_window(cfg: ExperimentConfig) -> tuple[int | None, str]:
    """(M, where it came from). Raises ConfigError for a missing local model or an unsupported family."""
    from harness.model.loading import load_model_config

    if cfg.ori_max_position_embeddings:
        return cfg.ori_max_position_embeddings, "ori_max_position_embeddings"
    try:
        mcfg = load_model_config(cfg, fetch=False)
    except ModelLoadError as exc:
        log.warning("model config unavailable here (%s): the window M is not known", str(exc).splitlines()[0])
        return None, "model config not available here"
    return int(mcfg.get_text_config(decoder=True).max_position_embeddings), f"{mcfg.model_type} model config"


def resolved_view(cfg: ExperimentConfig, window: int | None) -> dict[str, Any]:
    """`cfg.to_dict()` with the values a run derives (method parameters left to their default) filled in."""
    from harness.core import params as P
    from harness.methods.base import METHODS
    from harness.methods.common.frequency import resolve_factor

    view = cfg.to_dict()
    cls = METHODS.get(cfg.method)
    if "factor" in cfg.params and cfg.params.get("factor") is None:
        params = P.build(cls.Params, cfg.params, prefix="params.")
        factor = resolve_factor(params, cfg, window)
        if factor is not None:
            view["params"] = {**view["params"], "factor": factor}
    if cfg.method == "chunkllama" and window and None in (cfg.params.get("chunk_size"), cfg.params.get("local_window")):
        from harness.methods.chunkllama.positions import dca_sizes

        size, local, _ = dca_sizes(window, cfg.params.get("chunk_size"), cfg.params.get("local_window"))
        view["params"] = {**view["params"], "chunk_size": size, "local_window": local}  # 3M/4 and M/16 defaults
    return view


def derived_lines(cfg: ExperimentConfig, window: int | None, source: str) -> list[str]:
    """Human-readable derived values: window, target, factor."""
    lines = [f"# window M = {window if window is not None else 'unknown'} ({source})"]
    if cfg.max_pe:
        ratio = f", {cfg.max_pe / window:g} x M" if window else ""
        lines.append(f"# target max_pe = {cfg.max_pe}{ratio}")
    view = resolved_view(cfg, window)["params"]
    if "factor" in cfg.params:
        factor = view.get("factor")
        how = "set" if cfg.params.get("factor") is not None else "max_pe / M"
        lines.append(f"# factor = {factor if factor is not None else 'unknown (needs M and max_pe)'} ({how})")
    for key in ("chunk_size", "local_window"):
        if cfg.method == "chunkllama" and cfg.params.get(key) is None and view.get(key) is not None:
            lines.append(f"# {key} = {view[key]} (default for M)")
    return lines


def dry_run(cfg: ExperimentConfig, shard: tuple[int, int]) -> str:
    """The resolved config, derived values and the plan (examples, token lengths, max new tokens), as text."""
    from harness.model.loading import load_tokenizer
    from harness.stages.resolve import resolve
    from harness.stages.run import plan

    window, source = model_window(cfg)
    if window is not None:
        resolve(cfg, window=window, peek=False)  # the method's checks that need M
    out = [f"# {cfg.source}", json.dumps(resolved_view(cfg, window), indent=2, ensure_ascii=False)]
    out += derived_lines(cfg, window, source)
    key = (cfg.model, cfg.tokenizer, cfg.revision, cfg.gguf_file)
    if key not in _TOKENIZERS:  # a matrix dry-run loads each tokenizer once
        try:
            _TOKENIZERS[key] = load_tokenizer(cfg)
        except Exception as exc:
            log.warning("tokenizer unavailable (%s): token lengths omitted", str(exc).splitlines()[0])
            _TOKENIZERS[key] = None
    tokenizer = _TOKENIZERS[key]
    steps = plan(cfg, shard, tokenizer)
    out.append(f"# plan: task={cfg.task} method={cfg.method} shard={shard[0]}/{shard[1]}")
    for subset, entry in steps.items():
        toks = entry.get("tokens")
        lengths = f" tokens min/median/max={toks['min']}/{toks['median']}/{toks['max']}" if toks else ""
        errors = f" prompt_errors={entry['prompt_errors']}" if entry.get("prompt_errors") else ""
        new_tokens = entry["max_new_tokens"]
        out.append(f"  {subset}: {entry['examples']} examples{lengths} max_new_tokens={new_tokens}{errors}")
    return "\n".join(out)
