"""`pg19`: language-model perplexity on the first `max_pe - 1` tokens of each document (docs/reference/harness.md
§2.3, §3.4).

Unlike the reference (which skips the first token of every `stride` chunk for the baselines), every method scores
every token of the prefix: `Engine.token_nll` carries the KV cache across the method's prefill chunks, so `stride` is
only a memory knob. Per-document NLL arrays are saved as `<exp>/nll/<subset>/<id>.npz` (numpy, no pickle) and
referenced from the record (`nll_file`, relative to the experiment directory).

Documents: the PG19 test split (hub parquet copy, or `data_dir/*.txt`), or `task_options.text_files` (paths/globs),
or `task_options.source = "python_heldout"` (offline held-out Python stdlib / pydoc text, for demos).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, DataError
from harness.core.params import TOKENS, domain
from harness.core.results import ExperimentDir
from harness.tasks import datasets as data
from harness.tasks._common import safe_name
from harness.tasks._corpus import python_heldout_documents
from harness.tasks.base import TASKS, Doc, Example, Task
from harness.tasks.figures.curves import plan_ppl
from harness.tasks.scoring.perplexity import aggregate_ppl, ppl_curve, reference_ppl_quirk

log = logging.getLogger(__name__)

PREFIX_MARGIN = 64  # extra tokens required before trusting the tokenisation of a character prefix


@dataclass
class PG19Options:
    """[task_options] for pg19."""

    source: Literal["pg19", "python_heldout"] = "pg19"
    text_files: list[str] | None = None  # local text files or globs (override `source`)
    repo_id: str = data.PG19_REPO
    pattern: str = data.PG19_PATTERN
    revision: str | None = None
    text_column: str = "text"
    ppl_lengths: list[int] | None = field(default=None, metadata=TOKENS)  # default: ppl_step, 2*ppl_step, ...
    ppl_step: int = field(default=1024, metadata=TOKENS)
    min_chars: int = field(default=0, metadata=domain(ge=0, le=2**40))  # skip shorter documents (reach every length)


def load_npz_nll(path: Path) -> np.ndarray:
    """The NLL array stored by the pg19 task (loaded without pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return np.asarray(z["nll"], dtype=np.float32)


@TASKS.register
class PG19(Task):
    """Per-token NLL over the whole prefix; PPL at several lengths."""

    name = "pg19"
    Options = PG19Options
    description = "PG19 test-split perplexity (or local / held-out text files)"
    metric = "perplexity (lower is better)"
    figures = (plan_ppl,)

    @classmethod
    def headline_metric(cls, doc: Doc) -> str:
        """The perplexity at the length the score is taken at."""
        length = next((m.get("score_length") for m in (doc.get("subsets") or {}).values() if m.get("score_length")),
                      None)
        return f"perplexity at {length} tokens (lower is better)" if length else cls.metric

    @classmethod
    def summary_columns(cls, doc: Doc) -> dict[str, Any]:
        """`ppl@<L>`: the token-weighted PPL at each length (`ppl@<L>[subset]` when there are several subsets)."""
        subsets = doc.get("subsets") or {}
        single = len(subsets) == 1
        return {f"ppl@{length}{'' if single else f'[{s}]'}": round(ppl, 4) for s, m in subsets.items()
                for length, ppl in ppl_curve(m.get("ppl") or {})}

    @classmethod
    def length_row(cls, metrics: dict[str, Any]) -> tuple[str, dict[int, Any]] | None:
        """The PPL at each length."""
        if not metrics.get("ppl"):
            return None
        return "ppl", {k: round(v, 4) for k, v in ppl_curve(metrics["ppl"])}

    def __init__(self, cfg: ExperimentConfig, options: PG19Options, tokenizer: Any = None):
        super().__init__(cfg, options, tokenizer)
        self._docs: list[data.Document] | None = None

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: PG19Options) -> None:
        if not cfg.max_pe or cfg.max_pe < 3:
            raise ConfigError("max_pe", "pg19 scores the first max_pe - 1 tokens of each document",
                              "add e.g. max_pe = 16384")
        if options.ppl_step <= 0:
            raise ConfigError("task_options.ppl_step", "must be positive", "use 1024 (the reference)")
        if options.ppl_lengths is not None and (not options.ppl_lengths or min(options.ppl_lengths) <= 0):
            raise ConfigError("task_options.ppl_lengths", "must be a non-empty list of positive token counts",
                              "e.g. ppl_lengths = [256, 512, 1024]")
        if options.ppl_lengths and max(options.ppl_lengths) > cfg.max_pe - 2:
            raise ConfigError("task_options.ppl_lengths", f"{max(options.ppl_lengths)} exceeds the {cfg.max_pe - 2} "
                              f"scored tokens of a max_pe = {cfg.max_pe} prefix", "lower it or raise max_pe")
        if options.text_files is not None and not options.text_files:
            raise ConfigError("task_options.text_files", "is empty", "list files or globs, or remove the key")

    def subsets(self) -> list[str]:
        if self.options.text_files:
            return ["text_files"]
        return [self.options.source]

    # --------------------------------------------------------------------------------------------------- data
    def documents(self, download: bool = True) -> list[data.Document]:
        if self._docs is None:
            o = self.options
            if o.text_files:
                docs = data.load_text_files(o.text_files)
            elif o.source == "python_heldout":
                docs = python_heldout_documents()
            else:
                docs = data.load_pg19(self.cfg.data_dir, o.repo_id, o.pattern, o.revision, o.text_column, download)
            docs = [d for d in docs if len(d.text) >= o.min_chars]
            if not docs:
                raise ConfigError("task_options.min_chars", f"no document has {o.min_chars} characters or more",
                                  "lower min_chars (0 keeps every document)", self.cfg.source)
            self._docs = docs[:1] if self.cfg.test else docs  # smoke mode: the first document only
        return self._docs

    def examples(self, subset: str) -> list[Example]:
        out, seen = [], set()
        for i, doc in enumerate(self.documents()):
            eid = safe_name(doc.name)
            if eid in seen:
                eid = f"{eid}-{i}"
            seen.add(eid)
            out.append(Example(eid, subset, doc.text, None, {"index": i, "doc": doc.name, **(doc.meta or {})}))
        return out

    def tokens(self, example: Example) -> list[int]:
        """The first `max_pe - 1` tokens of the document, BOS included (tokenising only a long enough prefix)."""
        n = self.need("max_pe") - 1
        text = example.inputs
        limit = 16 * (n + PREFIX_MARGIN)
        if len(text) > limit:
            ids = self.tokenizer(text[:limit])["input_ids"]
            if len(ids) >= n + PREFIX_MARGIN:
                return list(ids[:n])
        return list(self.tokenizer(text)["input_ids"][:n])

    def input_length(self, example: Example) -> int | None:
        return len(self.tokens(example)) if self.tokenizer is not None else None

    # ---------------------------------------------------------------------------------------------------- run
    def exp_dir(self) -> Path:
        return ExperimentDir(self.cfg.results_dir, self.cfg.exp_name).path

    def run(self, example: Example, engine: Any) -> dict[str, Any]:
        ids = self.tokens(example)
        if len(ids) < 2:
            raise ValueError(f"document {example.id} has fewer than 2 tokens")
        nll = np.asarray(engine.token_nll(ids, stride=self.cfg.stride), dtype=np.float32)
        rel = Path("nll") / safe_name(example.subset) / f"{example.id}.npz"
        path = self.exp_dir() / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, nll=nll)
        os.replace(tmp, path)
        mean = float(nll.mean())
        return {"prediction": None, "prompt_len": len(ids), "n_scored": int(nll.size), "mean_nll": round(mean, 6),
                "ppl": round(math.exp(mean), 4), "nll_file": rel.as_posix()}

    # ------------------------------------------------------------------------------------------------ scoring
    def expected_count(self, subset: str) -> int | None:
        try:
            return len(self.documents(download=False))
        except DataError:
            return None

    def load_nll(self, record: dict[str, Any]) -> np.ndarray:
        path = self.exp_dir() / record["nll_file"]
        if not path.is_file():
            raise DataError(f"{path}: NLL array of document {record['id']} is missing. Fix: rerun gali-run for this "
                            f"experiment with --overwrite (or restore the file)")
        return load_npz_nll(path)

    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        records = sorted(records, key=lambda r: (r.get("meta") or {}).get("index", 0))
        nlls = [self.load_nll(r) for r in records]
        table = aggregate_ppl(nlls, step=self.options.ppl_step, lengths=self.options.ppl_lengths)
        covered = [length for length, v in table.items() if v["n_docs"]]
        main = max(covered) if covered else None
        quirk = {k: v for k, v in reference_ppl_quirk(nlls).items() if v is not None}
        return {"score": round(table[main]["ppl_token_weighted"], 4) if main else None, "score_length": main,
                "ppl": {str(k): v for k, v in table.items()}, "reference_quirk": quirk,
                "tokens_scored": int(sum(a.size for a in nlls))}
