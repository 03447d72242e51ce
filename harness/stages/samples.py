"""Sample logging (`log_samples = true`, the default): each prediction record carries what the model was given.

A record gets `"samples": [...]`, one entry per model call of the example (LongBench / needle: one generation;
L-Eval sci_fi: two; PG19: the scored token span), each with:

- `call`: "generate" or "token_nll"; `n_tokens`: the prompt's token count after truncation and chat template;
- `ids_sha256`: sha256 of the token ids as little-endian int64 (what the model saw, exactly);
- `text`: the decoded prompt when it has at most FULL_TEXT_MAX_TOKENS tokens, else `head` / `tail`: the decoded first
  and last HEAD_TAIL_TOKENS tokens (so truncation and templates can be audited without storing 100k-token prompts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

FULL_TEXT_MAX_TOKENS = 2048
HEAD_TAIL_TOKENS = 256


def ids_sha256(ids: Sequence[int]) -> str:
    """sha256 of token ids as little-endian int64."""
    return hashlib.sha256(np.asarray(list(ids), dtype="<i8").tobytes()).hexdigest()


def prompt_sample(ids: Sequence[int], tokenizer: Any, call: str) -> dict[str, Any]:
    """The audit entry of one model input (see the module docstring)."""
    ids = [int(x) for x in ids]
    entry: dict[str, Any] = {"call": call, "n_tokens": len(ids), "ids_sha256": ids_sha256(ids)}
    if tokenizer is None:
        return entry
    if len(ids) <= FULL_TEXT_MAX_TOKENS:
        entry["text"] = tokenizer.decode(ids)
    else:
        entry["head"] = tokenizer.decode(ids[:HEAD_TAIL_TOKENS])
        entry["tail"] = tokenizer.decode(ids[-HEAD_TAIL_TOKENS:])
    return entry


class RecordingEngine:
    """Wraps an Engine: `generate` and `token_nll` record their inputs; everything else is the engine's."""

    def __init__(self, engine: Any):
        self._engine = engine
        self.calls: list[tuple[str, list[int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, input_ids: Sequence[int], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("generate", list(input_ids)))
        return self._engine.generate(input_ids, *args, **kwargs)

    def token_nll(self, input_ids: Sequence[int], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("token_nll", list(input_ids)))
        return self._engine.token_nll(input_ids, *args, **kwargs)

    def samples(self) -> list[dict[str, Any]]:
        tokenizer = getattr(self._engine, "tokenizer", None)
        return [prompt_sample(ids, tokenizer, call) for call, ids in self.calls]


def run_logged(task: Any, example: Any, engine: Any, log_samples: bool) -> dict[str, Any]:
    """`task.run(example, engine)`, plus `samples` in the result when `log_samples`."""
    if not log_samples:
        return task.run(example, engine)
    recorder = RecordingEngine(engine)
    fields = task.run(example, recorder)
    fields["samples"] = recorder.samples()
    return fields
