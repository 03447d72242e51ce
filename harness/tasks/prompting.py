"""Prompt formats: how a task's plain prompt becomes token ids for a given model.

- `raw`: the plain prompt, tokenised with the tokenizer's special tokens (BOS). No system prompt.
- `chat_template`: the tokenizer's chat template, with the config's `system_prompt` as system message (default none).
- `reference`: exactly the original GALI harness (docs/reference/harness.md §2): Llama-2
  `"[INST]" + prompt + "[/INST]"` (no spaces, no system prompt, BOS from the tokenizer); Llama-3 chat template
  with the default "pirate" system prompt (the config's `system_prompt` is ignored). The family is decided by the
  case-sensitive substrings "Llama-2"/"Llama-3" of the model name, as in the reference; for other names, by the
  tokenizer's chat template (Llama-3 header tokens or Llama-2 `[INST]`/`<<SYS>>`); otherwise a ConfigError (the
  reference would crash).
- `longbench`: THUDM/LongBench's own `pred.py` (the LongBench leaderboard): its `build_chat` per model family
  (`longbench_family`: Llama-2 `"[INST]" + prompt + "[/INST]"`, Vicuna/LongChat's FastChat "vicuna_v1.1"
  conversation, XGen and InternLM strings, any other model unwrapped); the truncation budget is set by the LongBench
  task (docs/tasks.md).
- `auto` (default): `chat_template` when the tokenizer has one, else `raw`.

Datasets in NO_WRAP_DATASETS are never chat-wrapped, in every format (LongBench: "chat models are better off
without build prompts on these tasks"): they are tokenised as plain text.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.core.errors import ConfigError

log = logging.getLogger(__name__)

NO_WRAP_DATASETS = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
REFERENCE_LLAMA3_SYSTEM = "You are a pirate chatbot who always responds in pirate speak!"
LLAMA2_B_INST, LLAMA2_E_INST = "[INST]", "[/INST]"
LLAMA2_B_SYS, LLAMA2_E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
PROMPT_FORMATS = ("auto", "reference", "chat_template", "raw", "longbench")
# THUDM/LongBench pred.py `build_chat` strings per family ("{prompt}" is replaced literally, never str.format-ted)
LONGBENCH_CHAT = {
    "llama2": "[INST]{prompt}[/INST]",
    "vicuna": ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
               "detailed, and polite answers to the user's questions. USER: {prompt} ASSISTANT:"),
    "xgen": ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
             "detailed, and polite answers to the human's questions.\n\n ### Human: {prompt}\n###"),
    "internlm": "<|User|>:{prompt}<eoh>\n<|Bot|>:",
}

_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


def reference_family(model_name: str, tokenizer: Any = None) -> str | None:
    """'llama2' / 'llama3' by the reference's case-sensitive substring test, else from the chat template, else None."""
    if "Llama-2" in model_name:
        return "llama2"
    if "Llama-3" in model_name:
        return "llama3"
    template = getattr(tokenizer, "chat_template", None) or ""
    if not isinstance(template, str):
        return None
    if "<|start_header_id|>" in template:
        return "llama3"
    if "[INST]" in template and "<<SYS>>" in template:
        return "llama2"
    return None


def require_reference_family(model_name: str, tokenizer: Any = None) -> str:
    """The reference family of this model, or a ConfigError explaining the alternatives."""
    family = reference_family(model_name, tokenizer)
    if family is None:
        raise ConfigError("prompt_format", f"'reference' reproduces the GALI prompts of Llama-2 / Llama-3 chat models "
                          f"only, and '{model_name}' is neither (no 'Llama-2'/'Llama-3' in its name, no Llama chat "
                          f"template)", "use prompt_format = \"chat_template\" or \"raw\"")
    return family


def longbench_family(model_name: str) -> str | None:
    """The `build_chat` branch of THUDM/LongBench pred.py for a model id or path (case-insensitive, in pred.py's
    order): 'chatglm' (not supported: it needs the model's remote-code tokenizer), 'vicuna' (longchat, vicuna),
    'llama2' (llama2 / llama-2 / llama_2), 'xgen', 'internlm'; None = no wrapper (pred.py's fall-through)."""
    name = model_name.lower()
    if "chatglm" in name:
        return "chatglm"
    if "longchat" in name or "vicuna" in name:
        return "vicuna"
    if any(key in name for key in ("llama2", "llama-2", "llama_2")):
        return "llama2"
    for family in ("xgen", "internlm"):
        if family in name:
            return family
    return None


def longbench_chat(prompt: str, model_name: str) -> str:
    """THUDM/LongBench pred.py's `build_chat(prompt)` for this model (the prompt unchanged for other families)."""
    family = longbench_family(model_name)
    if family == "chatglm":
        raise ConfigError("prompt_format", f"'longbench' cannot build ChatGLM prompts for '{model_name}' (pred.py "
                          "calls the model's remote-code tokenizer methods)", "use prompt_format = \"chat_template\"")
    if family is None:
        _warn_once("lb-family", "prompt_format 'longbench': no build_chat branch of LongBench's pred.py matches %r; "
                   "its prompts are sent unwrapped, as pred.py does", model_name)
        return prompt
    return LONGBENCH_CHAT[family].replace("{prompt}", prompt)


def effective_format(fmt: str, tokenizer: Any) -> str:
    """Resolve 'auto' for this tokenizer."""
    if fmt not in PROMPT_FORMATS:
        raise ConfigError("prompt_format", f"unknown prompt format {fmt!r}", f"use one of {', '.join(PROMPT_FORMATS)}")
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
    return [int(i) for i in encoded]


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """`tokenizer(text)` with the tokenizer's special tokens (BOS for Llama), no truncation."""
    return _ids(tokenizer(text)["input_ids"])


def encode_chat(tokenizer: Any, user: str, system: str | None = None) -> list[int]:
    """The chat template applied to [system?, user] with the generation prompt (tokenised without extra specials).

    A template that rejects the system role gets the system text prepended to the user message instead.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("prompt_format", "'chat_template' needs a tokenizer with a chat template, and this one has "
                          "none", "use prompt_format = \"raw\" (or \"auto\", which picks raw for such tokenizers)")
    user_msg = {"role": "user", "content": user}
    if system:
        try:
            return _ids(tokenizer.apply_chat_template([{"role": "system", "content": system}, user_msg],
                                                      add_generation_prompt=True, tokenize=True))
        except Exception as exc:
            _warn_once("system-role", "chat template rejects a system message (%s); prepending it to the user turn",
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            user_msg = {"role": "user", "content": f"{system}\n\n{user}"}
    return _ids(tokenizer.apply_chat_template([user_msg], add_generation_prompt=True, tokenize=True))


def encode_prompt(tokenizer: Any, prompt: str, fmt: str, model_name: str = "", dataset: str | None = None,
                  system_prompt: str | None = None) -> list[int]:
    """Token ids of a task prompt without its own system prompt (LongBench, needle, passkey) in format `fmt`.

    `system_prompt` is the config's `system_prompt`: used by `chat_template` only (the reference has none for
    Llama-2 and the pirate prompt for Llama-3; `raw` has none).
    """
    fmt = effective_format(fmt, tokenizer)
    no_wrap = dataset in NO_WRAP_DATASETS
    if fmt == "raw" or no_wrap:
        return encode_plain(tokenizer, prompt)
    if fmt == "longbench":
        return encode_plain(tokenizer, longbench_chat(prompt, model_name))
    if fmt == "chat_template":
        return encode_chat(tokenizer, prompt, system_prompt)
    if system_prompt:
        _warn_once("ref-system", "prompt_format 'reference' ignores system_prompt (the reference uses none for "
                   "Llama-2 and %r for Llama-3)", REFERENCE_LLAMA3_SYSTEM)
    if require_reference_family(model_name, tokenizer) == "llama2":
        return encode_plain(tokenizer, LLAMA2_B_INST + prompt + LLAMA2_E_INST)
    return encode_chat(tokenizer, prompt, REFERENCE_LLAMA3_SYSTEM)


def newline_token_id(tokenizer: Any) -> int:
    """The reference's newline stop id for samsum: the last id of `encode("\\n", add_special_tokens=False)`."""
    return _ids(tokenizer.encode("\n", add_special_tokens=False))[-1]


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
