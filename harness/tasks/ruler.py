"""`ruler`: the 13 tasks of RULER (NVIDIA/RULER `synthetic.yaml`), generated locally, lengths in the model's tokens.

Subsets are RULER's task names (`niah_single_1` ... `qa_2`). Each has `num_samples` examples at every length of
`task_options.lengths` (default: RULER's 4K ... 128K up to `max_pe`). Examples are generated when they run (they need
the tokenizer): like RULER, the haystack size of a (task, length) is the largest whose prompt, in the configured
prompt format with the answer prefix, plus the task's `max_new_tokens` fits the length (binary search on a probe
example); an example whose own draw comes out longer is regenerated with proportionally fewer units (RULER removes
`incremental` units, e.g. 500 essay words, which can drop far below the length). Each example's
RNG derives from the run seed, the task and the example id, so runs are reproducible and shards independent.
Records carry the measured `prompt_len`, the `target_length` and the `outputs`; scoring is RULER's.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.params import TOKENS, domain
from harness.core.seeding import derive_seed
from harness.tasks import _ruler_gen as G
from harness.tasks._ruler_data import common_words, essay_words, load_qa
from harness.tasks._ruler_spec import EFFECTIVE_THRESHOLD, RULER_LENGTHS, RULER_TASKS, SPECS
from harness.tasks.base import TASKS, Doc, Example, ReportTable, Task
from harness.tasks.figures.curves import plan_ruler
from harness.tasks.prompting import effective_format, encode_plain, encode_prompt, stop_token_ids
from harness.tasks.reports import ruler_length_table
from harness.tasks.scoring.ruler import score_task
from harness.tasks.scoring.ruler import summarize as summarize_ruler

log = logging.getLogger(__name__)

VT_ICL_LENGTH = 500  # RULER builds the variable-tracking few-shot example at max_seq_length 500


@dataclass
class RulerOptions:
    """[task_options] for ruler."""

    #: target lengths in tokens (prompt + max_new_tokens); default RULER's <= max_pe
    lengths: list[int] | None = field(default=None, metadata=TOKENS)
    #: examples per task and length (RULER: 500)
    num_samples: int = field(default=500, metadata=domain(ge=1, le=1_000_000))
    haystack_source: Literal["pg19", "python_heldout"] = "pg19"  # essay haystack (RULER: Paul Graham essays)
    haystack_files: list[str] | None = None  # local text files / globs for the essay haystack (override the source)
    #: overrides RULER's per-task budget (128/30/120/50/32) for every task
    max_new_tokens: int | None = field(default=None, metadata=TOKENS)
    #: effective length: longest length whose average stays >= this
    threshold: float = field(default=EFFECTIVE_THRESHOLD, metadata=domain(ge=0, le=100))


def incremental(subset: str, length: int) -> int:
    """RULER's `incremental` haystack units: the probe size that estimates tokens per unit for the search."""
    spec = SPECS[subset]
    if spec.family == "niah":
        if spec.args["type_haystack"] == "essay":
            return 500
        return 5 if length < 4096 else 25
    if spec.family == "variable_tracking":
        return 5 if length < 4096 else 10
    if spec.family == "freq_words_extraction":
        return max(1, length // 32)
    return 10


@TASKS.register
class Ruler(Task):
    """RULER's synthetic benchmark: retrieval (niah), multi-hop tracing (vt), aggregation (cwe, fwe) and QA."""

    name = "ruler"
    Options = RulerOptions
    description = "RULER: 13 synthetic tasks at lengths in the model's tokens (generated offline)"
    metric = "average string-match score (0-100) over tasks and lengths"
    tables = (ReportTable("ruler_by_length", ruler_length_table),)
    figures = (plan_ruler,)

    @classmethod
    def summary_columns(cls, doc: Doc) -> dict[str, Any]:
        """`acc@<L>`: the average over the RULER tasks at each length."""
        by_length = (doc.get("summary") or {}).get("by_length") or {}
        return {f"acc@{length}": value for length, value in by_length.items()}

    def __init__(self, cfg: ExperimentConfig, options: RulerOptions, tokenizer: Any = None):
        super().__init__(cfg, options, tokenizer)
        self._sizes: dict[tuple[str, int], int] = {}
        self._built: dict[tuple[str, str], tuple[list[int], G.Sample, int]] = {}

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: RulerOptions) -> None:
        if not cfg.max_pe:
            raise ConfigError("max_pe", "ruler needs the target window (lengths above it are refused)",
                              "add e.g. max_pe = 16384")
        if options.lengths is not None:
            if not options.lengths or min(options.lengths) <= 0:
                raise ConfigError("task_options.lengths", "must be a non-empty list of positive token counts",
                                  "e.g. lengths = [4096, 8192]")
            if max(options.lengths) > cfg.max_pe:
                raise ConfigError("task_options.lengths", f"{max(options.lengths)} tokens exceeds max_pe = "
                                  f"{cfg.max_pe}", f"lower the lengths or raise max_pe to {max(options.lengths)}")
        if options.num_samples <= 0:
            raise ConfigError("task_options.num_samples", "must be positive", "use e.g. 100 (RULER: 500)")
        if options.max_new_tokens is not None and options.max_new_tokens <= 0:
            raise ConfigError("task_options.max_new_tokens", "must be positive", "remove it for RULER's budgets")
        longest_budget = options.max_new_tokens or max(spec.max_new_tokens for spec in SPECS.values())
        shortest = min(options.lengths or [n for n in RULER_LENGTHS if n <= cfg.max_pe] or [cfg.max_pe])
        if shortest <= longest_budget:
            raise ConfigError("task_options.lengths", f"{shortest} tokens leaves no room for the prompt next to "
                              f"{longest_budget} generated tokens", "use longer lengths or set max_new_tokens")

    # ------------------------------------------------------------------------------------------------ subsets
    def subsets(self) -> list[str]:
        return RULER_TASKS[:1] if self.cfg.test else list(RULER_TASKS)

    def available_subsets(self) -> list[str]:
        return list(RULER_TASKS)

    def lengths(self) -> list[int]:
        lengths = self.options.lengths or [n for n in RULER_LENGTHS if n <= self.need("max_pe")] or [
            self.need("max_pe")]
        return sorted(lengths)[:1] if self.cfg.test else sorted(lengths)

    def samples(self) -> int:
        return 1 if self.cfg.test else self.options.num_samples

    def max_new_tokens(self, subset: str) -> int:
        return self.options.max_new_tokens or SPECS[subset].max_new_tokens

    def examples(self, subset: str) -> list[Example]:
        return [Example(f"L{length}-{i:04d}", subset, {"length": length, "index": i}, None,
                        {"length": length, "index": i})
                for length in self.lengths() for i in range(self.samples())]

    def expected_count(self, subset: str) -> int | None:
        return len(self.lengths()) * self.samples()

    # ------------------------------------------------------------------------------------------------- prompts
    def encode(self, sample: G.Sample) -> list[int]:
        """Token ids of a sample: the prompt in the configured format, then RULER's answer prefix (RULER: model
        template around the task prompt, answer prefix after it)."""
        tok, cfg = self.tokenizer, self.cfg
        fmt = effective_format(cfg.prompt_format, tok)
        if fmt == "raw":
            return encode_plain(tok, sample.text + sample.prefix)
        if fmt == "chat_template":
            msgs = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
            rendered = tok.apply_chat_template(msgs + [{"role": "user", "content": sample.text}],
                                               add_generation_prompt=True, tokenize=False)
            return list(tok(rendered + sample.prefix, add_special_tokens=False)["input_ids"])
        ids = encode_prompt(tok, sample.text, fmt, cfg.model, None, cfg.system_prompt)
        return ids + list(tok(sample.prefix, add_special_tokens=False)["input_ids"])

    @functools.cached_property
    def resources(self) -> G.Resources:
        o, cfg = self.options, self.cfg
        longest = max(self.lengths())
        vocab = list(common_words())
        Random(cfg.seed).shuffle(vocab)  # RULER shuffles its cwe vocabulary once with the run seed
        res = G.Resources(essay=functools.cache(lambda: essay_words(o.haystack_source, o.haystack_files,
                                                                    cfg.data_dir, 2 * longest)),
                          qa=lambda name: load_qa(name, cfg.data_dir), cwe_vocab=vocab)
        return res

    def generate(self, subset: str, size: int, rng: Random, length: int, index: int) -> G.Sample:
        spec, res = SPECS[subset], self.resources
        if spec.family == "niah":
            return G.niah(spec.args, size, rng, res)
        if spec.family == "variable_tracking":
            if not res.vt_icl:
                res.vt_icl = self.vt_example()
            return G.vt(spec.args, size, rng, res)
        if spec.family == "common_words_extraction":
            return G.cwe(spec.args, size, rng, res, length)
        if spec.family == "freq_words_extraction":
            return G.fwe(spec.args, size, rng, res, length, self.max_new_tokens(subset) or 0)
        return G.qa(spec.args, size, rng, res, index)

    def vt_example(self) -> str:
        """The variable-tracking few-shot example: as many noise lines as fit VT_ICL_LENGTH tokens (plain text)."""

        args, seed = SPECS["vt"].args, derive_seed(self.cfg.seed, "vt", "icl")

        def make(n: int) -> G.Sample:
            return G.vt(args, n, Random(seed), G.Resources(), icl=True)

        n = self._search(lambda n: len(encode_plain(self.tokenizer, G.icl_text(make(n)))), VT_ICL_LENGTH, 5)
        return G.icl_text(make(n))

    def _search(self, tokens: Any, budget: int, step: int) -> int:
        """RULER's binary search: the largest size whose `tokens(size)` <= budget, searched between 1 and three
        times the estimate from a probe of `step` units (doubled while it still fits; 1 when nothing fits)."""
        per_unit = max(tokens(step) / step, 1e-3)
        low, high, best = 1, max(int(3 * budget / per_unit), 2 * step), None
        while tokens(high) <= budget:  # fixed prompt parts (few-shot examples) inflate the estimate per unit
            low, best, high = high + 1, high, 2 * high
        while low <= high:
            mid = (low + high) // 2
            if tokens(mid) <= budget:
                best, low = mid, mid + 1
            else:
                high = mid - 1
        return best or 1

    def fitted_size(self, subset: str, length: int) -> int:
        """Haystack units of (task, length): the largest whose probe example fits `length` with max_new_tokens."""
        key = (subset, length)
        if key not in self._sizes:

            seed, budget = derive_seed(self.cfg.seed, subset, f"fit-L{length}"), length - self.max_new_tokens(subset)
            self._sizes[key] = self._search(
                lambda n: len(self.encode(self.generate(subset, n, Random(seed), length, 0))), budget,
                incremental(subset, length))
            log.debug("ruler %s @ %d tokens: %d haystack units", subset, length, self._sizes[key])
        return self._sizes[key]

    def build(self, example: Example) -> tuple[list[int], G.Sample, int]:
        """(input ids, sample, haystack size) of an example; regenerated with fewer units while too long."""
        key = (example.subset, example.id)
        if key not in self._built:

            length, index = example.meta["length"], example.meta["index"]
            seed = derive_seed(self.cfg.seed, example.subset, example.id)
            budget = length - self.max_new_tokens(example.subset)
            size = self.fitted_size(example.subset, length)
            while True:
                sample = self.generate(example.subset, size, Random(seed), length, index)
                ids = self.encode(sample)
                if len(ids) <= budget or size <= 1:
                    break
                size = max(1, size - max(1, -(-(len(ids) - budget) * size // len(ids))))
            if len(ids) > budget:
                log.warning("ruler %s/%s: the shortest prompt has %d tokens, over the %d-token budget of length %d",
                            example.subset, example.id, len(ids), budget, length)
            self._built = {key: (ids, sample, size)}  # keep one: dry-run and run touch an example once
        return self._built[key]

    def input_length(self, example: Example) -> int | None:
        return len(self.build(example)[0]) if self.tokenizer is not None else None

    # ---------------------------------------------------------------------------------------------------- run
    def run(self, example: Example, engine: Any) -> dict[str, Any]:
        ids, sample, size = self.build(example)
        gen = engine.generate(ids, self.max_new_tokens(example.subset), stop_token_ids(self.tokenizer, engine.model))
        return {**gen.record_fields(), "outputs": sample.outputs, "target_length": example.meta["length"],
                "haystack_size": size}

    # ------------------------------------------------------------------------------------------------ scoring
    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        return score_task(records, SPECS[subset].metric)

    def summarize(self, per_subset: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return summarize_ruler(per_subset, self.options.threshold)
