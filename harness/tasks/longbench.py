"""`longbench`: LongBench v1 as run by the reference harness (docs/reference/harness.md §2.1, §3.1, §7.1, §7.2).

Default subsets: the 16 English datasets (or, with `task_options.longbench_e = true`, the 13 LongBench-E `_e` files);
the 5 Chinese datasets can be selected with `subsets`. Per example: `dataset2prompt[name].format(**row)`, middle
truncation to `max_pe - max_new_tokens - 50` tokens, the prompt format (`reference`: Llama-2 `[INST]…[/INST]` /
Llama-3 chat with the pirate system prompt; the no-wrap datasets stay plain), greedy decoding with
`dataset2maxlen[name]` new tokens; samsum also stops at a newline and generates at least one token.

`prompt_format = "longbench"` reproduces THUDM/LongBench's own pred.py instead: the prompt is cut to the model's
max length of its `model2maxlen` table (`longbench_max_length`; no generation budget, no slack) and wrapped by its
`build_chat` for the model's family (harness.tasks.prompting.longbench_chat).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, DataError
from harness.core.params import TOKENS, TOKENS0
from harness.tasks import datasets as data
from harness.tasks._common import middle_truncate, prediction_text, table
from harness.tasks.base import TASKS, Example, Task
from harness.tasks.figures import bars
from harness.tasks.prompting import effective_format, encode_prompt, newline_token_id, stop_token_ids
from harness.tasks.scoring.longbench_metrics import DATASET2COUNT, DATASET2METRIC
from harness.tasks.scoring.longbench_score import score_dataset, score_longbench_e

log = logging.getLogger(__name__)

LONGBENCH_EN = ["narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum",
                "multi_news", "trec", "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc",
                "repobench-p"]
LONGBENCH_ZH = ["multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"]
LONGBENCH_E = ["qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec", "triviaqa",
               "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p"]


def base_dataset(subset: str) -> str:
    """`qasper_e` -> `qasper` (templates, generation lengths and metrics are those of the base dataset)."""
    return subset[:-2] if subset.endswith("_e") and subset[:-2] in LONGBENCH_E else subset


def longbench_max_length(max_pe: int) -> int:
    """THUDM/LongBench's `model2maxlen` rule: the window in thousands of tokens, times 1000, minus 500. For the
    models of its table at their windows (4096, 8192, 16384, 32768) this gives its values 3500, 7500, 15500, 31500."""
    return 1000 * (max_pe // 1000) - 500


def build_prompt(subset: str, row: dict[str, Any]) -> str:
    """The reference prompt: `dataset2prompt[dataset].format(**row)`."""
    return table("longbench_dataset2prompt")[base_dataset(subset)].format(**row)


@dataclass
class LongBenchOptions:
    """[task_options] for longbench."""

    longbench_e: bool = False  # run the 13 LongBench-E files (`<name>_e.jsonl`) instead of the 16 English sets
    repo_id: str = data.LONGBENCH_REPO
    archive: str = data.LONGBENCH_ARCHIVE
    revision: str | None = None
    truncation_slack: int = field(default=50, metadata=TOKENS0)  # kept free for the chat wrapper (reference: 50)
    max_new_tokens: int | None = field(default=None, metadata=TOKENS)  # overrides dataset2maxlen (not the reference)
    max_length: int | None = field(default=None, metadata=TOKENS)  # prompt_format "longbench": truncation length


_METRIC_NAMES = {"qa_f1_score": "F1", "qa_f1_zh_score": "F1", "rouge_score": "ROUGE-L", "rouge_zh_score": "ROUGE-L",
                 "classification_score": "accuracy", "retrieval_score": "accuracy", "retrieval_zh_score": "accuracy",
                 "count_score": "accuracy", "code_sim_score": "edit sim"}


def dataset_metric(dataset: str) -> str | None:
    """The name of LongBench's official metric of `dataset` (LongBench-E's `<name>_e` too)."""
    fn = DATASET2METRIC.get(dataset.removesuffix("_e"))
    return _METRIC_NAMES.get(getattr(fn, "__name__", ""), None) if fn else None


@TASKS.register
class LongBench(Task):
    """LongBench (and LongBench-E) with the reference prompts, truncation and metrics."""

    name = "longbench"
    Options = LongBenchOptions
    description = "LongBench v1: 16 English datasets (LongBench-E, Chinese sets selectable)"
    metric = "average score (0-100)"
    figures = (partial(bars.plan, "longbench", dataset_metric),)

    def __init__(self, cfg: ExperimentConfig, options: LongBenchOptions, tokenizer: Any = None):
        super().__init__(cfg, options, tokenizer)
        self._rows: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: LongBenchOptions) -> None:
        if not cfg.max_pe:
            raise ConfigError("max_pe", "longbench needs the target window (prompts are truncated to "
                              "max_pe - max_new_tokens - 50 tokens)", "add e.g. max_pe = 16384")
        if options.max_new_tokens is not None and options.max_new_tokens <= 0:
            raise ConfigError("task_options.max_new_tokens", "must be positive", "remove it to use dataset2maxlen")
        if options.truncation_slack < 0:
            raise ConfigError("task_options.truncation_slack", "must be >= 0", "use 50 (the reference)")
        if options.max_length is not None and options.max_length < 2:
            raise ConfigError("task_options.max_length", f"must be >= 2, got {options.max_length}",
                              "remove it to use LongBench's model2maxlen rule (1000 * (max_pe // 1000) - 500)")
        if cfg.prompt_format == "longbench":
            if options.max_length is None and longbench_max_length(cfg.max_pe) < 2:
                raise ConfigError("max_pe", f"{cfg.max_pe} leaves no prompt under LongBench's model2maxlen rule "
                                  "(1000 * (max_pe // 1000) - 500 < 2)", "raise max_pe or set task_options.max_length")
            return  # the budget does not depend on the generation length in this format
        names = cfg.subsets or ([f"{n}_e" for n in LONGBENCH_E] if options.longbench_e else LONGBENCH_EN)
        maxlen = table("longbench_dataset2maxlen")
        for name in names:
            base = base_dataset(name)
            if base not in maxlen:
                continue  # unknown names are reported by the runner with the list of valid ones
            gen = options.max_new_tokens or maxlen[base]
            if cfg.max_pe - gen - options.truncation_slack < 2:
                raise ConfigError("max_pe", f"{cfg.max_pe} leaves no room for the '{name}' prompt (max_pe - "
                                  f"max_new_tokens {gen} - {options.truncation_slack} < 2)",
                                  f"raise max_pe above {gen + options.truncation_slack + 2} or set "
                                  f"task_options.max_new_tokens")

    # ------------------------------------------------------------------------------------------------ subsets
    def subsets(self) -> list[str]:
        names = [f"{n}_e" for n in LONGBENCH_E] if self.options.longbench_e else list(LONGBENCH_EN)
        return names[:1] if self.cfg.test else names

    def available_subsets(self) -> list[str]:
        return LONGBENCH_EN + LONGBENCH_ZH + [f"{n}_e" for n in LONGBENCH_E]

    def max_new_tokens(self, subset: str) -> int:
        return self.options.max_new_tokens or int(table("longbench_dataset2maxlen")[base_dataset(subset)])

    def budget(self, subset: str) -> int:
        """Token budget of the truncated plain prompt: max_pe - max_new_tokens - slack (reference: 50); with
        prompt_format "longbench", `task_options.max_length` or LongBench's model2maxlen rule."""
        if self.cfg.prompt_format == "longbench":
            return int(self.options.max_length or longbench_max_length(self.need("max_pe")))
        return int(self.need("max_pe") - self.max_new_tokens(subset) - self.options.truncation_slack)

    # --------------------------------------------------------------------------------------------------- data
    def rows(self, subset: str, download: bool = True) -> list[dict[str, Any]]:
        if subset not in self._rows:
            o = self.options
            self._rows[subset] = data.load_longbench(subset, self.cfg.data_dir, o.repo_id, o.archive, o.revision,
                                                     download=download)
        return self._rows[subset]

    def examples(self, subset: str) -> list[Example]:
        rows = self.rows(subset)
        if self.cfg.test:
            rows = rows[:1]
        out: list[Example] = []
        seen: set[str] = set()
        for i, row in enumerate(rows):
            eid = str(row.get("_id") or f"{subset}-{i:04d}")
            if eid in seen:
                eid = f"{eid}-{i}"
            seen.add(eid)
            try:
                prompt = build_prompt(subset, row)
            except (KeyError, IndexError) as exc:
                raise DataError(f"LongBench '{subset}' row {i}: the prompt template needs field {exc}") from None
            refs = {"answers": list(row["answers"]), "all_classes": row.get("all_classes")}
            out.append(Example(eid, subset, prompt, refs, {"index": i, "length": row.get("length")}))
        return out

    # ---------------------------------------------------------------------------------------------------- run
    def prepare(self, example: Example) -> tuple[list[int], bool]:
        """(input ids, truncated) of one example: middle truncation, then the prompt format."""
        prompt, truncated = middle_truncate(self.tokenizer, example.inputs, self.budget(example.subset),
                                            clean_up=self.clean_up())
        ids = encode_prompt(self.tokenizer, prompt, self.cfg.prompt_format, self.cfg.model,
                            base_dataset(example.subset), self.cfg.system_prompt)
        return ids, truncated

    def clean_up(self) -> bool:
        """Decode like the reference's transformers 4.x (docs/tasks.md): in the reference and longbench formats."""
        return effective_format(self.cfg.prompt_format, self.tokenizer) in ("reference", "longbench")

    def input_length(self, example: Example) -> int | None:
        return len(self.prepare(example)[0]) if self.tokenizer is not None else None

    def run(self, example: Example, engine: Any) -> dict[str, Any]:
        ids, truncated = self.prepare(example)
        stops = stop_token_ids(self.tokenizer, engine.model)
        min_new = 0
        if base_dataset(example.subset) == "samsum":  # avoid endless "\nDialogue" continuations
            stops.append(newline_token_id(self.tokenizer))
            min_new = 1
        gen = engine.generate(ids, self.max_new_tokens(example.subset), stops, min_new)
        return {**gen.record_fields(), "prediction": prediction_text(self.tokenizer, gen, self.clean_up()),
                "answers": example.references["answers"],
                "all_classes": example.references["all_classes"], "length": example.meta["length"],
                "truncated": truncated}

    # ------------------------------------------------------------------------------------------------ scoring
    def expected_count(self, subset: str) -> int | None:
        if self.cfg.test:
            return 1
        try:
            return len(self.rows(subset, download=False))
        except DataError:
            return DATASET2COUNT.get(subset)  # the official counts (plain sets only)

    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        records = sorted(records, key=lambda r: (r.get("meta") or {}).get("index", 0))
        preds = [r["prediction"] for r in records]
        answers = [r["answers"] for r in records]
        classes = [r.get("all_classes") for r in records]
        all_classes = classes if any(classes) else None
        base = base_dataset(subset)
        out: dict[str, Any] = {"score": score_dataset(base, preds, answers, all_classes)}
        if subset.endswith("_e"):
            lengths = [int(r.get("length") or 0) for r in records]
            out["buckets"] = score_longbench_e(base, preds, answers, lengths, all_classes)
        out["truncated"] = sum(bool(r.get("truncated")) for r in records)
        return out
