"""`needle`: the reference's synthetic pass-key grid (harness.md §2.4).

Lengths `min_k…max_k` step `gap` (thousands of nominal tokens; or `task_options.lengths` in tokens), 16 depths
(i/16, i = 1..16), `times` trials per cell, the reference's filler, wording and scoring (key substring of the
answer). Every trial is recorded with its real token length; keys derive from the run seed and the trial id.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.prompting import encode_prompt, stop_token_ids
from harness.tasks.base import TASKS, Example, Task

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
    """Prompting, generation and the substring check shared by the pass-key tasks (`needle`, `passkey`)."""

    def encode(self, example: Example) -> list[int]:
        return encode_prompt(self.tokenizer, example.inputs, self.cfg.prompt_format, self.cfg.model, "passkey",
                             self.cfg.system_prompt)

    def input_length(self, example: Example) -> int | None:
        return len(self.encode(example)) if self.tokenizer is not None else None

    def run(self, example: Example, engine: Any) -> dict[str, Any]:
        key = example.references[0]
        budget = len(self.tokenizer(key, add_special_tokens=False)["input_ids"]) + self.options.extra_new_tokens
        gen = engine.generate(self.encode(example), budget, stop_token_ids(self.tokenizer, engine.model))
        return {**gen.record_fields(), "references": example.references, "passed": key in gen.text}


@dataclass
class NeedleOptions:
    """[task_options] for needle."""

    lengths: list[int] | None = None  # nominal token lengths; overrides min_k/max_k/gap
    depths: int = 16  # depths i/depths for i = 1..depths (the reference never tests 0%)
    depth_list: list[float] | None = None  # explicit depth fractions in (0, 1]; overrides `depths`
    chars_per_token: float = 3.75
    key_min: int = 50000
    key_max: int = 500000
    extra_new_tokens: int = 100  # the reference generates len(answer tokens) + 100


@TASKS.register
class Needle(PassKeyRun):
    """Pass-key retrieval at several lengths and depths."""

    name = "needle"
    Options = NeedleOptions
    description = "synthetic pass-key grid (length x depth)"

    @classmethod
    def validate(cls, cfg: Any, options: NeedleOptions) -> None:
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

    def lengths(self) -> list[int]:
        if self.options.lengths is not None:
            lengths = list(self.options.lengths)
        else:
            lengths = list(range(self.cfg.min_k * 1000, self.cfg.max_k * 1000 + 1, self.cfg.gap * 1000))
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
        from harness.runner import derive_seed  # noqa: PLC0415

        out = []
        for length in self.lengths():
            for depth in self.depth_fractions():
                for trial in range(self.cfg.times):
                    eid = f"L{length}-D{depth * 100:g}-T{trial}"
                    rng = random.Random(derive_seed(self.cfg.seed, "needle-key", eid))
                    key = rng.randint(self.options.key_min, self.options.key_max)
                    prompt = build_prompt(key, depth, garbage_chars(length, self.options.chars_per_token))
                    out.append(Example(eid, subset, prompt, [str(key)],
                                       {"length": length, "depth": depth * 100, "trial": trial}))
        return out

    def expected_count(self, subset: str) -> int | None:
        return len(self.lengths()) * len(self.depth_fractions()) * (self.cfg.times or 0)

    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        from harness.scoring.needle import aggregate_needle  # noqa: PLC0415

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
