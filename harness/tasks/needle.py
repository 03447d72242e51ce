"""`needle`: the reference's synthetic pass-key grid (docs/reference/harness.md §2.4).

Lengths `min_k…max_k` step `gap` (thousands of tokens; or `task_options.lengths` in tokens), 16 depths
(i/16, i = 1..16), `times` trials per cell, the reference's filler, wording and scoring (key substring of the
answer). By default (`fit = "tokens"`) the filler of every trial is fitted so that the model input, in the configured
prompt format, has the stated number of tokens (the longest filler that does not exceed it: a few tokens below at
most); `fit = "reference"` keeps the reference's filler of int(3.75·L // 1024 · 1024) characters. Every trial is
recorded with its measured token length; `task_options.lengths` above `max_pe` are refused (the reference's
`min_k…max_k` grid may pass `max_pe`, as in its configs: a warning). Keys derive from the run seed and the
trial id.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import TOKENS, TOKENS0, domain
from harness.core.seeding import derive_seed
from harness.tasks.base import TASKS, Doc, Example, Task
from harness.tasks.figures import needle as figures
from harness.tasks.figures.style import number
from harness.tasks.prompting import encode_prompt, stop_token_ids
from harness.tasks.scoring.needle import aggregate_needle

log = logging.getLogger(__name__)

TASK_DESCRIPTION = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                    "I will quiz you about the important information there.")
GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"


def needle_line(key: int) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def garbage_chars(length: int, chars_per_token: float) -> int:
    """The reference's filler size int(3.75·L // 1024 · 1024); below 1024 tokens (where that is 0), int(ratio·L)."""
    n = int(chars_per_token * length // 1024 * 1024)
    return n if n > 0 else int(chars_per_token * length)


def build_prompt_at(key: int, n_prefix: int, n_garbage: int) -> str:
    """The reference prompt with `n_prefix` filler characters before the key line and `n_garbage - n_prefix` after;
    both filler slices start at the beginning of the repeated garbage (and may cut mid-word)."""
    reps = n_garbage // (len(GARBAGE) + 1) + 2
    garbage_inf = " ".join([GARBAGE] * reps)
    prefix = garbage_inf[:n_prefix]
    suffix = garbage_inf[: n_garbage - len(prefix)]
    return "\n".join([TASK_DESCRIPTION, prefix, needle_line(key), suffix, QUESTION])


def build_prompt(key: int, depth: float, n_garbage: int) -> str:
    """The needle prompt: the key line after `int(depth * n_garbage)` filler characters."""
    return build_prompt_at(key, int(depth * n_garbage), n_garbage)


class PassKeyRun(Task):
    """Prompting, filler fitting, generation and the substring check shared by `needle` and `passkey`."""

    metric = "pass rate (%)"

    def __init__(self, cfg: ExperimentConfig, options: Any, tokenizer: Any = None):
        super().__init__(cfg, options, tokenizer)
        self._hints: dict[int, int] = {}  # target tokens -> filler characters of the last fitted trial
        self._warned = False

    def encode_text(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, prompt, self.cfg.prompt_format, self.cfg.model, "passkey",
                             self.cfg.system_prompt)

    def target_tokens(self, example: Example) -> int | None:
        """The token length the filler is fitted to (None: the filler size is given in characters)."""
        return None

    def prompt_for(self, example: Example, n_garbage: int) -> str:
        """The example's prompt with `n_garbage` filler characters (for fitting)."""
        return example.inputs

    def encode(self, example: Example) -> list[int]:
        return self.prepare(example)[0]

    def prepare(self, example: Example) -> tuple[list[int], int | None]:
        """(input ids, fitted filler characters or None) of a trial; warns once about inputs longer than max_pe."""
        target = self.target_tokens(example)
        if target is None:
            ids, n = self.encode_text(example.inputs), None
        else:
            ids, n = self.fit_filler(lambda c: self.prompt_for(example, c), target)
        if self.cfg.max_pe and len(ids) > self.cfg.max_pe and not self._warned:
            self._warned = True
            log.warning("%s: the prompt of trial %s has %d tokens, more than max_pe = %d (runs beyond the target "
                        "window)", self.cfg.exp_name, example.id, len(ids), self.cfg.max_pe)
        return ids, n

    def fit_filler(self, make: Callable[[int], str], target: int) -> tuple[list[int], int]:
        """The longest filler (characters) whose encoded prompt has at most `target` tokens, and its ids: a bracket
        around the previous fit of this target (or 3.75 characters per token), then bisection."""
        memo: dict[int, list[int]] = {}

        def ids(n: int) -> list[int]:
            if n not in memo:
                memo[n] = self.encode_text(make(n))
            return memo[n]

        start = self._hints.get(target, int(3.75 * target))
        step = max(16, start // 64)
        lo, hi = start, None
        while len(ids(lo)) > target:
            if lo == 0:
                raise ConfigError("task_options.lengths", f"{target} tokens is shorter than the prompt without "
                                  f"filler ({len(ids(0))} tokens)", "use a longer length")
            hi, lo, step = lo, max(0, lo - step), step * 2
        if hi is None:
            hi = lo + step
            while len(ids(hi)) <= target:
                lo, hi, step = hi, hi + step, step * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if len(ids(mid)) <= target else (lo, mid)
        self._hints[target] = lo
        return ids(lo), lo

    def input_length(self, example: Example) -> int | None:
        return len(self.encode(example)) if self.tokenizer is not None else None

    def run(self, example: Example, engine: Any) -> dict[str, Any]:
        key = example.references[0]
        ids, n_garbage = self.prepare(example)
        budget = len(self.tokenizer(key, add_special_tokens=False)["input_ids"]) + self.options.extra_new_tokens
        gen = engine.generate(ids, budget, stop_token_ids(self.tokenizer, engine.model))
        out = {**gen.record_fields(), "references": example.references, "passed": key in gen.text}
        if n_garbage is not None:
            out.update(target_tokens=self.target_tokens(example), n_garbage=n_garbage)
        return out


@dataclass
class NeedleOptions:
    """[task_options] for needle."""

    lengths: list[int] | None = field(default=None, metadata=TOKENS)  # nominal token lengths; overrides min_k..
    fit: Literal["tokens", "reference"] = "tokens"  # filler fitted to the length in tokens, or 3.75 chars/token
    depths: int = field(default=16, metadata=domain(ge=1, le=10_000))  # depths i/depths, i = 1..depths (never 0%)
    depth_list: list[float] | None = field(default=None, metadata=domain(gt=0, le=1))  # overrides `depths`
    chars_per_token: float = field(default=3.75, metadata=domain(ge=0.1, le=100, why="filler characters per token"))
    key_min: int = field(default=50000, metadata=domain(ge=0, le=10**15))
    key_max: int = field(default=500000, metadata=domain(ge=0, le=10**15))
    extra_new_tokens: int = field(default=100, metadata=TOKENS0)  # the reference generates len(answer) + 100


@TASKS.register
class Needle(PassKeyRun):
    """Pass-key retrieval at several lengths and depths."""

    name = "needle"
    Options = NeedleOptions
    description = "synthetic pass-key grid (length x depth)"
    figures = (figures.plan,)

    @classmethod
    def summary_columns(cls, doc: Doc) -> dict[str, Any]:
        """`acc@<L>`: the pass rate at each length (`acc@<L>[subset]` when there are several subsets)."""
        subsets = doc.get("subsets") or {}
        single = len(subsets) == 1
        return {f"acc@{length}{'' if single else f'[{s}]'}": acc for s, m in subsets.items() for length, acc in
                (m.get("by_length") or {}).items()}

    @classmethod
    def length_row(cls, metrics: dict[str, Any]) -> tuple[str, dict[int, Any]] | None:
        """The pass rate at each length."""
        if not metrics.get("by_length"):
            return None
        return "needle_acc", {int(k): number(v) for k, v in metrics["by_length"].items()}

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: NeedleOptions) -> None:
        if not cfg.times:
            raise ConfigError("times", "needle needs the number of trials per (length, depth) cell", "add times = 4")
        if options.lengths is None and None in (cfg.min_k, cfg.max_k, cfg.gap):
            missing = [k for k in ("min_k", "max_k", "gap") if getattr(cfg, k) is None][0]
            raise ConfigError(missing, "needle needs min_k, max_k and gap (thousands of tokens)",
                              "add e.g. min_k = 1, max_k = 8, gap = 1, or task_options.lengths = [256, 512]")
        if options.lengths is not None and (not options.lengths or min(options.lengths) <= 0):
            raise ConfigError("task_options.lengths", "must be a non-empty list of positive token counts",
                              "e.g. lengths = [256, 512, 1024]")
        if options.depths <= 0:
            raise ConfigError("task_options.depths", "must be positive", "use 16 (the reference)")
        if options.depth_list is not None and (not options.depth_list
                                               or not all(0 < d <= 1 for d in options.depth_list)):
            raise ConfigError("task_options.depth_list", "must be a non-empty list of fractions in (0, 1]",
                              "e.g. depth_list = [0.25, 0.5, 1.0]")
        if options.key_min > options.key_max:
            raise ConfigError("task_options.key_min", "key_min > key_max", "make key_min <= key_max")
        if cfg.max_pe and options.lengths and max(options.lengths) > cfg.max_pe:
            raise ConfigError("task_options.lengths", f"a {max(options.lengths)}-token needle prompt exceeds "
                              f"max_pe = {cfg.max_pe}", f"lower the lengths or raise max_pe to {max(options.lengths)}")
        if cfg.max_pe and options.lengths is None and cfg.min_k is not None and cfg.max_k is not None and cfg.gap:
            longest = max(range(cfg.min_k * 1000, cfg.max_k * 1000 + 1, cfg.gap * 1000), default=0)
            if longest > cfg.max_pe:  # the reference's min_k/max_k grids do run past max_pe: keep them, loudly
                log.warning("%s: needle lengths up to %d tokens exceed max_pe = %d (the reference's min_k/max_k "
                            "grid runs them; task_options.lengths refuses such lengths)", cfg.source, longest,
                            cfg.max_pe)

    def target_tokens(self, example: Example) -> int | None:
        return int(example.meta["length"]) if self.options.fit == "tokens" else None

    def prompt_for(self, example: Example, n_garbage: int) -> str:
        return build_prompt(int(example.references[0]), example.meta["depth"] / 100, n_garbage)

    def lengths(self) -> list[int]:
        if self.options.lengths is not None:
            lengths = list(self.options.lengths)
        else:
            lengths = list(range(self.need("min_k") * 1000, self.need("max_k") * 1000 + 1, self.need("gap") * 1000))
        return lengths[:1] if self.cfg.test else lengths

    def depth_fractions(self) -> list[float]:
        """Needle depths as fractions of the filler (the reference: i/16 for i = 1..16)."""
        if self.options.depth_list is not None:
            return list(self.options.depth_list)
        return [i / self.options.depths for i in range(1, self.options.depths + 1)]

    def subsets(self) -> list[str]:
        return ["needle"]

    def max_new_tokens(self, subset: str) -> int | None:
        return 6 + self.options.extra_new_tokens

    def examples(self, subset: str) -> list[Example]:

        out = []
        for length in self.lengths():
            for depth in self.depth_fractions():
                for trial in range(self.need("times")):
                    eid = f"L{length}-D{depth * 100:g}-T{trial}"
                    rng = random.Random(derive_seed(self.cfg.seed, "needle-key", eid))
                    key = rng.randint(self.options.key_min, self.options.key_max)
                    prompt = build_prompt(key, depth, garbage_chars(length, self.options.chars_per_token))
                    out.append(Example(eid, subset, prompt, [str(key)],
                                       {"length": length, "depth": depth * 100, "trial": trial}))
        return out

    def expected_count(self, subset: str) -> int | None:
        return len(self.lengths()) * len(self.depth_fractions()) * (self.cfg.times or 0)

    def plan_chars(self, subset: str) -> int:
        """Characters of all prompts of the plan (checked against memory before they are built)."""
        per_cell = sum(garbage_chars(n, self.options.chars_per_token) for n in self.lengths())
        return per_cell * len(self.depth_fractions()) * (self.cfg.times or 0)

    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{"length": r["meta"]["length"], "depth": r["meta"]["depth"], "passed": bool(r["passed"]),
                 "tokens": r.get("prompt_len")} for r in records]
        agg = aggregate_needle(rows)

        def pct(s: dict[str, Any]) -> float | None:
            return round(100 * s["accuracy"], 2) if s["accuracy"] is not None else None

        return {"score": pct(agg["overall"]),
                "cells": {f"{c['length']}|{c['depth']:g}": pct(c) for c in agg["cells"]},
                "by_length": {str(c["length"]): pct(c) for c in agg["by_length"]},
                "by_depth": {f"{c['depth']:g}": pct(c) for c in agg["by_depth"]},
                "tokens_by_length": {str(c["length"]): c["mean_tokens"] for c in agg["by_length"]}}
