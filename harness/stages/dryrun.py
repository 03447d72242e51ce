"""`gali-run --dry-run`: the resolved config with derived values filled in, model checks, and the plan.

No weights are loaded. What is checked: a `model` written as a local path exists; the model's family is supported
(its config.json is read when it is local or cached); the method accepts its parameters for the model's window.
Derived values are shown with their numbers (the pre-trained window M, the scaling factor max_pe / M).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from harness.methods.base import METHODS
from harness.model.loading import load_tokenizer
from harness.stages.resolve import RunPlan
from harness.stages.run import work_summary

log = logging.getLogger(__name__)
_TOKENIZERS: dict[tuple, Any] = {}


def resolved_view(plan: RunPlan) -> dict[str, Any]:
    """The resolved config with the values a run derives (method parameters left to their default) filled in."""
    cfg, window = plan.cfg, plan.window
    view = cfg.to_dict()
    derived = METHODS.get(cfg.method).derived_params(plan.params, cfg, window)
    if derived:
        view["params"] = {**view["params"], **derived}
    return view


def derived_lines(plan: RunPlan) -> list[str]:
    """Human-readable derived values: window, target, factor."""
    cfg, window, source = plan.cfg, plan.window, plan.window_source
    lines = [f"# window M = {window if window is not None else 'unknown'} ({source})"]
    if cfg.max_pe:
        ratio = f", {cfg.max_pe / window:g} x M" if window else ""
        lines.append(f"# target max_pe = {cfg.max_pe}{ratio}")
    view = resolved_view(plan)["params"]
    if "factor" in cfg.params:
        factor = view.get("factor")
        how = "set" if cfg.params.get("factor") is not None else "max_pe / M"
        lines.append(f"# factor = {factor if factor is not None else 'unknown (needs M and max_pe)'} ({how})")
    derived = METHODS.get(cfg.method).derived_params(plan.params, cfg, window)
    for key, value in derived.items():
        if key != "factor":
            lines.append(f"# {key} = {value} (default for M)")
    return lines


def dry_run(plan: RunPlan, shard: tuple[int, int]) -> str:
    """The resolved config, derived values and the plan (examples, token lengths, max new tokens), as text.

    `plan` is resolved with access "local" (harness.stages.resolve): the model's config as far as it is here."""
    cfg = plan.cfg
    out = [f"# {cfg.source}", json.dumps(resolved_view(plan), indent=2, ensure_ascii=False)]
    out += derived_lines(plan)
    key = (cfg.model, cfg.tokenizer, cfg.revision, cfg.gguf_file)
    if key not in _TOKENIZERS:  # a matrix dry-run loads each tokenizer once
        try:
            _TOKENIZERS[key] = load_tokenizer(cfg, plan.model_config)
        except Exception as exc:
            log.warning("tokenizer unavailable (%s): token lengths omitted", str(exc).splitlines()[0])
            _TOKENIZERS[key] = None
    tokenizer = _TOKENIZERS[key]
    steps = work_summary(plan, shard, tokenizer)
    out.append(f"# plan: task={cfg.task} method={cfg.method} shard={shard[0]}/{shard[1]}")
    for subset, entry in steps.items():
        toks = entry.get("tokens")
        lengths = f" tokens min/median/max={toks['min']}/{toks['median']}/{toks['max']}" if toks else ""
        errors = f" prompt_errors={entry['prompt_errors']}" if entry.get("prompt_errors") else ""
        new_tokens = entry["max_new_tokens"]
        out.append(f"  {subset}: {entry['examples']} examples{lengths} max_new_tokens={new_tokens}{errors}")
    return "\n".join(out)
