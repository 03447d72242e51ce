"""`passkey` (legacy name `passkey_retreival`): the reference's random-position pass-key test
(docs/reference/harness.md §2.4).

`times` trials; each puts the key line after a random number of filler characters in `[0, n_garbage]` and draws the
key from `[1, 50000]`, both from a per-trial RNG seeded by the run seed and the trial id. The prompt, generation
budget (key tokens + 100) and substring scoring are the needle task's.

With `task_options.tokens = N` instead of `n_garbage`, each trial draws its insert position as a fraction of the
filler and the filler is fitted so that the model input has N tokens (at most; a few below), like the needle task.
`tokens` above `max_pe` are refused; a reference `n_garbage` whose prompt passes `max_pe` runs with a warning.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import TOKENS, TOKENS0, domain
from harness.core.seeding import derive_seed
from harness.tasks.base import TASKS, Example
from harness.tasks.needle import PassKeyRun, build_prompt_at


@dataclass
class PasskeyOptions:
    """[task_options] for passkey."""

    key_min: int = field(default=1, metadata=domain(ge=0, le=10**15))
    key_max: int = field(default=50000, metadata=domain(ge=0, le=10**15))
    extra_new_tokens: int = field(default=100, metadata=TOKENS0)  # the reference generates len(answer) + 100
    depth_bins: int = field(default=5, metadata=domain(ge=1, le=10_000))  # accuracy by insert position (report)
    tokens: int | None = field(default=None, metadata=TOKENS)  # fit the filler to N prompt tokens (not n_garbage)


@TASKS.register
class Passkey(PassKeyRun):
    """Pass-key retrieval with the key at a random position of `n_garbage` filler characters."""

    name = "passkey"
    aliases = ("passkey_retreival", "passkey_retrieval")
    Options = PasskeyOptions
    description = "synthetic pass-key test, random insert position (legacy passkey_retreival)"

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: PasskeyOptions) -> None:
        if not cfg.n_garbage and not options.tokens:
            raise ConfigError("n_garbage", "passkey needs the number of filler characters (or task_options.tokens)",
                              "add e.g. n_garbage = 60000, or tokens = 16000 under [task_options]")
        if options.tokens is not None and options.tokens <= 0:
            raise ConfigError("task_options.tokens", "must be positive", "e.g. tokens = 16000")
        if options.tokens and cfg.max_pe and options.tokens > cfg.max_pe:
            raise ConfigError("task_options.tokens", f"{options.tokens} tokens exceeds max_pe = {cfg.max_pe}",
                              f"lower tokens or raise max_pe to {options.tokens}")
        if not cfg.times:
            raise ConfigError("times", "passkey needs the number of trials", "add e.g. times = 20")
        if options.key_min > options.key_max:
            raise ConfigError("task_options.key_min", "key_min > key_max", "make key_min <= key_max")
        if options.depth_bins <= 0:
            raise ConfigError("task_options.depth_bins", "must be positive", "use e.g. 5")

    def subsets(self) -> list[str]:
        return ["passkey"]

    def max_new_tokens(self, subset: str) -> int | None:
        return len(str(self.options.key_max)) + 1 + self.options.extra_new_tokens

    def trials(self) -> int:
        return 1 if self.cfg.test else self.need("times")

    def plan_chars(self, subset: str) -> int:
        """Characters of all prompts of the plan (checked against memory before they are built)."""
        return self.trials() * int(self.cfg.n_garbage or 0)

    def examples(self, subset: str) -> list[Example]:

        tokens = self.options.tokens
        n_garbage = int(self.cfg.n_garbage or 0)
        out = []
        for trial in range(self.trials()):
            eid = f"T{trial}"
            rng = random.Random(derive_seed(self.cfg.seed, "passkey-key", eid))
            if tokens:  # the position as a fraction of the (fitted) filler
                fraction = rng.random()
                key = rng.randint(self.options.key_min, self.options.key_max)
                out.append(Example(eid, subset, "", [str(key)], {"tokens": tokens, "fraction": fraction,
                                                                 "trial": trial, "depth": round(100 * fraction, 2)}))
                continue
            position = rng.randint(0, n_garbage)  # the reference draws the position first, then the key
            key = rng.randint(self.options.key_min, self.options.key_max)
            out.append(Example(eid, subset, build_prompt_at(key, position, n_garbage), [str(key)],
                               {"n_garbage": n_garbage, "position": position, "trial": trial,
                                "depth": round(100 * position / n_garbage, 2)}))
        return out

    def target_tokens(self, example: Example) -> int | None:
        return example.meta.get("tokens")

    def prompt_for(self, example: Example, n_garbage: int) -> str:
        return build_prompt_at(int(example.references[0]), int(example.meta["fraction"] * n_garbage), n_garbage)

    def expected_count(self, subset: str) -> int | None:
        return self.trials()

    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        if not records:
            return {"score": None}
        bins = self.options.depth_bins
        by_bin: dict[int, list[bool]] = {}
        for r in records:
            b = min(int(r["meta"]["depth"] / 100 * bins), bins - 1)
            by_bin.setdefault(b, []).append(bool(r["passed"]))
        passed = [bool(r["passed"]) for r in records]
        width = 100 / bins
        return {"score": round(100 * sum(passed) / len(passed), 2),
                "by_depth": {f"{b * width:g}-{(b + 1) * width:g}": round(100 * sum(v) / len(v), 2)
                             for b, v in sorted(by_bin.items())},
                "mean_prompt_tokens": round(sum(r.get("prompt_len") or 0 for r in records) / len(records), 1)}
