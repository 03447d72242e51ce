"""Prompt formats: how a task's plain prompt becomes token ids for a given model.

- `raw`: the plain prompt, tokenised with the tokenizer's special tokens (BOS).
- `chat_template`: the tokenizer's chat template with an optional system prompt (default none).
- `reference`: exactly the original GALI harness: Llama-2 `[INST]…[/INST]` without system prompt; Llama-3 chat
  template with its default "pirate" system prompt; decided by the case-sensitive substrings "Llama-2"/"Llama-3"
  of the model name (other models fall back to `raw`, where the reference would crash).
- `auto` (default): `chat_template` when the tokenizer has one, else `raw`.
Datasets in NO_WRAP_DATASETS are never chat-wrapped (LongBench: "chat models are better off without build prompts").
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

NO_WRAP_DATASETS = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
REFERENCE_LLAMA3_SYSTEM = "You are a pirate chatbot who always responds in pirate speak!"


def reference_family(model_name: str) -> str | None:
    """'llama2' / 'llama3' by the reference's case-sensitive substring test, else None."""
    if "Llama-2" in model_name:
        return "llama2"
    if "Llama-3" in model_name:
        return "llama3"
    return None


def effective_format(fmt: str, tokenizer: Any) -> str:
    """Resolve 'auto' for this tokenizer."""
    if fmt != "auto":
        return fmt
    return "chat_template" if getattr(tokenizer, "chat_template", None) else "raw"


def _ids(encoded: Any) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):
        encoded = encoded[0]
    return list(encoded)


def _chat(tokenizer: Any, prompt: str, system: str | None) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_format 'chat_template' needs a tokenizer with a chat template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def encode_prompt(tokenizer: Any, prompt: str, fmt: str, model_name: str = "", dataset: str | None = None,
                  system_prompt: str | None = None) -> list[int]:
    """Token ids of `prompt` in prompt format `fmt` (see module docstring)."""
    fmt = effective_format(fmt, tokenizer)
    no_wrap = dataset in NO_WRAP_DATASETS
    if fmt == "raw" or (no_wrap and fmt == "chat_template"):
        return _ids(tokenizer(prompt)["input_ids"])
    if fmt == "chat_template":
        return _chat(tokenizer, prompt, system_prompt)
    if fmt == "reference":
        family = reference_family(model_name)
        if family == "llama2":
            return _ids(tokenizer(prompt if no_wrap else "[INST]" + prompt + "[/INST]")["input_ids"])
        if family == "llama3" and not no_wrap:
            return _chat(tokenizer, prompt, system_prompt or REFERENCE_LLAMA3_SYSTEM)
        return _ids(tokenizer(prompt)["input_ids"])
    raise ValueError(f"unknown prompt format {fmt!r}")


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """End-of-turn ids: the tokenizer's EOS, the model's generation-config EOS ids, and <|eot_id|> if present."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    for i in eos if isinstance(eos, list) else [eos]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    if eot is not None and eot not in ids:
        ids.append(int(eot))
    return ids
