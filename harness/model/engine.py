"""Inference engine: explicit prefill (in the method's chunks) + greedy KV-cache decode, and per-token NLL.

No private generation internals are used: the engine calls the base model forward with the method's KV cache and applies
the LM head itself, only where logits are needed (never L × vocab at once).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from transformers import Cache

LOGIT_BLOCK = 1024  # positions per LM-head block in token_nll


class MethodPolicy(Protocol):
    """What the engine needs from a method (harness.methods.base.Method provides it): its KV cache, how to split
    a prompt of `n_tokens` into forward calls, and a per-example seed hook."""

    def make_cache(self, model_config: Any) -> Cache: ...

    def prefill_chunks(self, n_tokens: int, stride: int | None = None) -> list[int]: ...

    def start_example(self, seed: int) -> None: ...


M = TypeVar("M", bound=MethodPolicy)


def cache_argument(module: torch.nn.Module) -> str:
    """The name under which `module.forward` (a transformers model) of the installed release takes its KV cache.

    transformers 5.24+ calls it `cache` (and deprecates `past_key_values`); earlier 5.x releases `past_key_values`.
    Reading the signature keeps every call on the current name, so no deprecation warning is printed. The answer is
    memoised per model class (it is asked once per forward).
    """
    return _cache_argument(type(module))


@functools.cache
def _cache_argument(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def part(model: torch.nn.Module, name: str) -> Any:
    """A named part of a transformers causal LM: `model` (the decoder stack), `lm_head`, `config`."""
    return getattr(model, name)


def forward_hidden(model: torch.nn.Module, ids: torch.Tensor, cache: Cache) -> torch.Tensor:
    """Last hidden states of the base model on `ids` [1, n], appending to (and attending over) `cache`."""
    base = part(model, "model")  # the decoder stack under the LM head
    kwargs = {cache_argument(base): cache}
    return base(input_ids=ids, use_cache=True, **kwargs).last_hidden_state


@dataclass
class Generation:
    """Result of one greedy generation."""

    token_ids: list[int]
    text: str
    prompt_len: int
    prefill_s: float
    decode_s: float

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens_per_s(self) -> float | None:
        steps = max(len(self.token_ids) - 1, 0)  # the first new token comes from the prefill
        return steps / self.decode_s if steps and self.decode_s > 0 else None

    def record_fields(self) -> dict:
        """The standard per-example fields of a prediction record."""
        tps = self.decode_tokens_per_s
        return {"prediction": self.text, "prompt_len": self.prompt_len, "gen_len": self.new_tokens,
                "prefill_s": round(self.prefill_s, 4), "decode_tok_s": round(tps, 2) if tps else None}


class Engine(Generic[M]):
    """Runs a (method-modified) causal LM: greedy generation and token log-probabilities.

    `method` is the method applied to `model` (typed by the caller: `Engine(model, tok, method)` is an
    `Engine[Gali]` for a Gali method); the engine itself only asks it for prefill chunks."""

    def __init__(self, model: torch.nn.Module, tokenizer, method: M, device: str):
        self.model = model
        self.tokenizer = tokenizer
        self.method = method
        self.device = device

    @property
    def input_device(self) -> torch.device:
        return part(self.model, "get_input_embeddings")().weight.device

    def new_cache(self) -> Cache:
        """An empty KV cache for this model, as the method wants it (`Method.make_cache`; default DynamicCache)."""
        return self.method.make_cache(part(self.model, "config"))

    def _hidden(self, ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        return forward_hidden(self.model, ids, cache)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of hidden states (the LM head applied only where asked)."""
        return self._logits(hidden)

    @torch.inference_mode()
    def step(self, ids: Sequence[int], cache: Cache) -> torch.Tensor:
        """One forward of `ids` appended to `cache` (no chunking by the method): fp32 logits of every position."""
        t = torch.tensor([list(ids)], dtype=torch.long, device=self.input_device)
        return self._logits(self._hidden(t, cache))[0]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits, with the family's final soft-capping where it has one (Gemma 2: cap·tanh(x / cap))."""
        logits = part(self.model, "lm_head")(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    @torch.inference_mode()
    def prefill(self, input_ids: Sequence[int], stride: int | None = None) -> tuple[Cache, torch.Tensor]:
        """Run the prompt through the model in the method's chunks; return the cache and last-position logits."""
        ids = torch.tensor([list(input_ids)], dtype=torch.long, device=self.input_device)
        cache = self.new_cache()
        start = 0
        hidden = None
        for size in self.method.prefill_chunks(ids.shape[1], stride):
            hidden = self._hidden(ids[:, start:start + size], cache)
            start += size
        assert hidden is not None and start == ids.shape[1], "prefill_chunks must cover the prompt"
        return cache, self._logits(hidden[:, -1:])[0, -1]

    @torch.inference_mode()
    def generate(self, input_ids: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int] = (),
                 min_new_tokens: int = 0) -> Generation:
        """Greedy decoding with a KV cache; stops at any of `stop_ids` (not included) or after max_new_tokens."""
        if not input_ids:
            raise ValueError("empty prompt")
        stops = set(stop_ids)
        t0 = time.perf_counter()
        cache, logits = self.prefill(input_ids)
        prefill_s = time.perf_counter() - t0
        new: list[int] = []
        t1 = time.perf_counter()
        while len(new) < max_new_tokens:
            if len(new) < min_new_tokens and stops:
                logits = logits.clone()
                logits[list(stops)] = float("-inf")
            token = int(torch.argmax(logits))
            if token in stops:
                break
            new.append(token)
            if len(new) >= max_new_tokens:
                break
            step = torch.tensor([[token]], dtype=torch.long, device=self.input_device)
            logits = self._logits(self._hidden(step, cache))[0, -1]
        decode_s = time.perf_counter() - t1
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(new, text, len(input_ids), prefill_s, decode_s)

    @torch.inference_mode()
    def token_nll(self, input_ids: Sequence[int], stride: int | None = None) -> np.ndarray:
        """Natural-log NLL of every token after the first (length n-1), over the whole prefix.

        The prompt is processed in the method's prefill chunks (`stride` is a memory knob for methods that allow
        splitting); the KV cache is carried so every token attends to its full prefix, and every token is scored.
        """
        ids = torch.tensor([list(input_ids)], dtype=torch.long, device=self.input_device)
        n = ids.shape[1]
        cache = self.new_cache()
        nll = np.empty(max(n - 1, 0), dtype=np.float32)
        start = 0
        for size in self.method.prefill_chunks(n, stride):
            hidden = self._hidden(ids[:, start:start + size], cache)[0]
            for b in range(0, size, LOGIT_BLOCK):
                pos = start + b  # absolute position of the first row of this block
                rows = hidden[b:b + LOGIT_BLOCK]
                targets = ids[0, pos + 1:pos + 1 + rows.shape[0]]
                rows = rows[: targets.shape[0]]
                if rows.shape[0] == 0:
                    continue
                logp = torch.log_softmax(self._logits(rows), dim=-1)
                nll[pos:pos + rows.shape[0]] = (-logp.gather(1, targets[:, None].to(logp.device))[:, 0]).cpu().numpy()
            start += size
        return nll
