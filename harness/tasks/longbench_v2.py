"""`longbench_v2`: LongBench v2's 503 multiple-choice questions (THUDM/LongBench, v2 `pred.py` / `prompts/`).

One subset, `longbench_v2`. Per question: the official 0-shot prompt (or, with `task_options.cot = true`, the 0-shot
chain-of-thought prompt, then the official answer prompt with the reasoning and without the document), middle
truncation of the prompt's tokens (first ⌊b/2⌋ and last ⌈b/2⌉ of b = max_pe − max_new_tokens − slack, decoded without
special tokens, as pred.py does with its max_len), the prompt format (the official code sends one user message to a
chat model), greedy decoding (pred.py samples at temperature 0.1), the official answer extraction and accuracy
overall, easy / hard, short / medium / long and per domain; `compensated = true` scores unanswered questions 0.25.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, DataError
from harness.core.params import TOKENS, TOKENS0
from harness.tasks import datasets as data
from harness.tasks.base import TASKS, Example, ReportTable, Task
from harness.tasks.data_identity import read_text_file
from harness.tasks.prompting import encode_prompt, stop_token_ids
from harness.tasks.reports import longbench_v2_table
from harness.tasks.scoring.longbench_v2 import accuracy_table, extract_answer

log = logging.getLogger(__name__)

LONGBENCH_V2_REPO = "THUDM/LongBench-v2"
LONGBENCH_V2_FILE = "data.json"
FIELDS = ("_id", "domain", "difficulty", "length", "question", "choice_A", "choice_B", "choice_C", "choice_D",
          "answer", "context")
LENGTHS = ("short", "medium", "long")

_CHOICES = ("What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n"
            "(D) $C_D$\n\n")
PROMPT_0SHOT = ("Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
                + _CHOICES + 'Format your response as follows: "The correct answer is (insert answer here)".')
PROMPT_COT = ("Please read the following text and answer the questions below.\n\n<text>\n$DOC$\n</text>\n\n"
              + _CHOICES + "Let\u2019s think step by step:")
PROMPT_COT_ANSWER = ("Please read the following text and answer the questions below.\n\nThe text is too long and "
                     "omitted here.\n\n" + _CHOICES + "Let\u2019s think step by step: $COT$\n\nBased on the above, "
                     'what is the single, most likely answer choice? Format your response as follows: "The correct '
                     'answer is (insert answer here)".')


def fill(template: str, row: dict[str, Any], cot: str = "") -> str:
    """The official prompt: `$DOC$`, `$Q$`, `$C_A$`…`$C_D$` replaced by the stripped fields (then `$COT$`)."""
    text = template.replace("$DOC$", row["context"].strip()).replace("$Q$", row["question"].strip())
    for letter in "ABCD":
        text = text.replace(f"$C_{letter}$", row[f"choice_{letter}"].strip())
    return text.replace("$COT$", cot)


@dataclass
class LongBenchV2Options:
    """[task_options] for longbench_v2."""

    cot: bool = False  # 0-shot chain of thought (reasoning, then the official answer prompt)
    compensated: bool = False  # unanswered questions score 0.25 (result.py's `compensated`)
    length_categories: list[str] | None = None  # keep only these of "short", "medium", "long"
    max_new_tokens: int = field(default=128, metadata=TOKENS)  # the answer (pred.py: 128)
    cot_max_new_tokens: int = field(default=1024, metadata=TOKENS)  # the reasoning with cot = true (pred.py: 1024)
    truncation_slack: int = field(default=50, metadata=TOKENS0)  # tokens kept free for the chat wrapper
    repo_id: str = LONGBENCH_V2_REPO
    filename: str = LONGBENCH_V2_FILE
    revision: str | None = None


def load_rows(data_dir: str | None, opts: LongBenchV2Options, download: bool = True) -> list[dict[str, Any]]:
    """The questions of `data.json` (a JSON list) from `data_dir` or the Hugging Face dataset."""
    if data_dir:
        path = Path(data_dir).expanduser() / opts.filename
        if not path.is_file():
            raise DataError(f"LongBench v2: {path} not found (data_dir = \"{data_dir}\"). Fix: put {opts.filename} "
                            f"of the Hugging Face dataset {opts.repo_id} there (`gali-data download longbench_v2 "
                            f"--to DIR` writes DIR/longbench_v2/{opts.filename}), or remove data_dir")
    else:
        missing = (f"LongBench v2: {opts.filename} of the Hugging Face dataset {opts.repo_id} is not in the HF cache "
                   f"({data.hub_cache_dir()}). Fix: run `gali-data download longbench_v2` (on a machine with "
                   f"internet; or `--to DIR` and set data_dir = \"DIR/longbench_v2\")")
        path = data.hub_file(opts.repo_id, opts.filename, opts.revision, missing, download)
    try:
        rows = json.loads(read_text_file(path))  # recorded as the experiment's data
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}). Fix: download it again") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of questions. Fix: use the published {opts.filename}")
    data.require_fields(rows, FIELDS, str(path))
    return rows


@TASKS.register
class LongBenchV2(Task):
    """LongBench v2 multiple choice with the official prompts, truncation and answer extraction."""

    name = "longbench_v2"
    Options = LongBenchV2Options
    description = "LongBench v2: 503 long-context multiple-choice questions (0-shot or CoT)"
    metric = "accuracy (%)"
    tables = (ReportTable("longbench_v2_categories", longbench_v2_table),)

    def __init__(self, cfg: ExperimentConfig, options: LongBenchV2Options, tokenizer: Any = None):
        super().__init__(cfg, options, tokenizer)
        self._rows: list[dict[str, Any]] | None = None

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: LongBenchV2Options) -> None:
        if not cfg.max_pe:
            raise ConfigError("max_pe", "longbench_v2 truncates prompts to max_pe - max_new_tokens - slack tokens",
                              "add e.g. max_pe = 131072")
        for key in ("max_new_tokens", "cot_max_new_tokens"):
            if getattr(options, key) <= 0:
                raise ConfigError(f"task_options.{key}", "must be positive", "use the official 128 / 1024")
        bad = [c for c in options.length_categories or [] if c not in LENGTHS]
        if bad or options.length_categories == []:
            raise ConfigError("task_options.length_categories", f"unknown categories {bad}" if bad else "is empty",
                              "use some of short, medium, long (or remove the key)")
        if cfg.max_pe - cls.generation_budget(options) - options.truncation_slack < 2:
            raise ConfigError("max_pe", f"{cfg.max_pe} leaves no room for the prompt next to "
                              f"{cls.generation_budget(options)} generated tokens", "raise max_pe")

    @staticmethod
    def generation_budget(options: LongBenchV2Options) -> int:
        return options.cot_max_new_tokens if options.cot else options.max_new_tokens

    def subsets(self) -> list[str]:
        return ["longbench_v2"]

    def max_new_tokens(self, subset: str) -> int | None:
        return self.generation_budget(self.options)

    def budget(self) -> int:
        return int(self.need("max_pe") - self.generation_budget(self.options) - self.options.truncation_slack)

    def rows(self, download: bool = True) -> list[dict[str, Any]]:
        if self._rows is None:
            rows = load_rows(self.cfg.data_dir, self.options, download)
            if self.options.length_categories:
                rows = [r for r in rows if r["length"] in self.options.length_categories]
            self._rows = rows[:1] if self.cfg.test else rows
        return self._rows

    def examples(self, subset: str) -> list[Example]:
        keep = ("domain", "sub_domain", "difficulty", "length")
        return [Example(str(r["_id"]), subset, r, r["answer"], {"index": i, **{k: r.get(k) for k in keep}})
                for i, r in enumerate(self.rows())]

    def expected_count(self, subset: str) -> int | None:
        try:
            return len(self.rows(download=False))
        except DataError:
            return None if self.options.length_categories or self.cfg.test else 503

    # ---------------------------------------------------------------------------------------------------- run
    def truncate(self, prompt: str) -> tuple[str, bool]:
        """pred.py's truncation: if the prompt has more than b tokens (tokenizer's specials included), keep the
        first b // 2 and the last ceil(b / 2), decoded without special tokens."""
        ids = self.tokenizer(prompt)["input_ids"]
        b = self.budget()
        if len(ids) <= b:
            return prompt, False
        return self.tokenizer.decode(ids[: b // 2] + ids[-(b - b // 2):], skip_special_tokens=True), True

    def encode(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, prompt, self.cfg.prompt_format, self.cfg.model, None,
                             self.cfg.system_prompt)

    def input_length(self, example: Example) -> int | None:
        if self.tokenizer is None:
            return None
        return len(self.encode(self.truncate(fill(PROMPT_COT if self.options.cot else PROMPT_0SHOT,
                                                  example.inputs))[0]))

    def run(self, example: Example, engine: Any) -> dict[str, Any]:
        row, stops = example.inputs, stop_token_ids(self.tokenizer, engine.model)
        template = PROMPT_COT if self.options.cot else PROMPT_0SHOT
        prompt, truncated = self.truncate(fill(template, row))
        gen = engine.generate(self.encode(prompt), self.generation_budget(self.options), stops)
        out: dict[str, Any] = {}
        if self.options.cot:  # the reasoning, then the answer prompt without the document (pred.py)
            out["response_cot"] = gen.text.strip()
            reasoning_tokens = gen.new_tokens
            answer_prompt, _ = self.truncate(fill(PROMPT_COT_ANSWER, row, out["response_cot"]))
            gen = engine.generate(self.encode(answer_prompt), self.options.max_new_tokens, stops)
            out["cot_tokens"] = reasoning_tokens
        response = gen.text.strip()
        pred = extract_answer(response)
        return {**gen.record_fields(), **out, "response": response, "pred": pred, "answer": row["answer"],
                "judge": pred == row["answer"], "truncated": truncated}

    # ------------------------------------------------------------------------------------------------ scoring
    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{"pred": r.get("pred"), "answer": r.get("answer"), **(r.get("meta") or {})} for r in records]
        table = accuracy_table(rows, self.options.compensated)
        other = accuracy_table(rows, not self.options.compensated)
        out = {"score": table.pop("overall"), **table, "compensated": self.options.compensated,
               "score_compensated" if not self.options.compensated else "score_plain": other["overall"],
               "unanswered": sum(r["pred"] is None for r in rows),
               "truncated": sum(bool(r.get("truncated")) for r in records)}
        return out

    def summarize(self, per_subset: dict[str, dict[str, Any]]) -> dict[str, Any]:
        metrics = next(iter(per_subset.values()), {})
        return {"average": metrics.get("score"),
                **{k: metrics.get(k) for k in ("easy", "hard", "short", "medium", "long")}}
