"""Data behind the RULER tasks: word lists (the `wonderwords` package), the essay haystack, SQuAD / HotpotQA.

- Word lists: wonderwords' noun / adjective / verb lists, as RULER reads them.
- Essay haystack: RULER uses Paul Graham essays, which cannot be redistributed; here the haystack is public-domain
  text: the PG19 test books (the `pg19` task's source), local text files, or the offline held-out Python text.
- QA: SQuAD 2.0 dev and HotpotQA dev (distractor) in their official JSON schemas (`data_dir`), or from the hub
  (SQuAD: the parquet copy `rajpurkar/squad_v2`; HotpotQA: the official JSON mirrored at `namlh2004/hotpotqa`, the
  copy RULER's download script falls back to).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import DataError
from harness.tasks import datasets as data
from harness.tasks._corpus import python_heldout_documents
from harness.tasks.data_identity import read_text_file

SQUAD_REPO = "rajpurkar/squad_v2"
SQUAD_PATTERN = "squad_v2/validation-*.parquet"
HOTPOTQA_REPO = "namlh2004/hotpotqa"
HOTPOTQA_FILE = "hotpot_dev_distractor_v1.json"
HOTPOTQA_REVISION = "7e54db4656209750ff487f6fdf8e39a66dba136b"
QA_LOCAL = {"squad": ["squad.json", "dev-v2.0.json"], "hotpotqa": ["hotpotqa.json", "hotpot_dev_distractor_v1.json"]}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# ----------------------------------------------------------------------------------------------------------- words
@functools.cache
def wonderwords_list(name: str) -> tuple[str, ...]:
    """One of wonderwords' word lists (`nounlist.txt`, `adjectivelist.txt`, `verblist.txt`), in file order."""
    from importlib import resources

    try:
        text = resources.files("wonderwords.assets").joinpath(name).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        raise DataError("RULER needs the word lists of the `wonderwords` package. Fix: pip install wonderwords "
                        "(a dependency of gali-harness)") from None
    return tuple(w.rstrip() for w in text.splitlines() if w.strip())


@functools.cache
def common_words() -> tuple[str, ...]:
    """RULER's cwe vocabulary: sorted set of nouns + adjectives + verbs (shuffled per example by the generator)."""
    return tuple(sorted(set(wonderwords_list("nounlist.txt") + wonderwords_list("adjectivelist.txt")
                            + wonderwords_list("verblist.txt"))))


# ----------------------------------------------------------------------------------------------------------- essay
def split_sentences(text: str) -> list[str]:
    """Sentences of whitespace-normalised text: split after `.`, `!` or `?` followed by whitespace (RULER uses
    nltk's punkt tokenizer; this rule needs no downloaded model)."""
    text = text.strip()
    return [s for s in _SENTENCE_END.split(text) if s] if text else []


def essay_words(source: str, files: list[str] | None, data_dir: str | None, min_words: int,
                download: bool = True) -> list[str]:
    """The essay haystack as a word list (whitespace split, like RULER), from the first documents of `source` until
    `min_words` words are collected (the generator repeats the list when it is shorter)."""
    if files:
        docs = data.load_text_files(files)
    elif source == "python_heldout":
        docs = python_heldout_documents()
    else:
        docs = data.load_pg19(data_dir, download=download)
    words: list[str] = []
    for doc in docs:
        words += doc.text.split()
        if len(words) >= min_words:
            break
    if not words:
        raise DataError(f"RULER essay haystack: the {'files' if files else source} text is empty. Fix: set "
                        f"task_options.haystack_files to text files, or haystack_source = \"python_heldout\"")
    return words


# -------------------------------------------------------------------------------------------------------------- QA
@dataclass(frozen=True)
class QASet:
    """RULER's QA structure: documents (sorted, unique) and questions pointing at them by index."""

    docs: list[str]
    questions: list[dict[str, Any]]  # query, outputs, context (gold doc indices), more_context (same-article docs)


def _squad_rows(obj: Any) -> list[dict[str, Any]]:
    """Official SQuAD 2.0 JSON -> flat rows (title, context, question, answers, impossible)."""
    rows = []
    for article in obj["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                rows.append({"title": article.get("title", ""), "context": para["context"],
                             "question": qa["question"], "answers": [a["text"] for a in qa["answers"]],
                             "impossible": bool(qa.get("is_impossible", not qa["answers"]))})
    return rows


def squad_set(rows: list[dict[str, Any]]) -> QASet:
    """RULER's read_squad on flat rows: answerable questions; other paragraphs of the same article are
    `more_context`."""
    docs = sorted({r["context"] for r in rows})
    index = {c: i for i, c in enumerate(docs)}
    by_title: dict[str, list[int]] = {}
    for r in rows:
        ids = by_title.setdefault(r["title"], [])
        if index[r["context"]] not in ids:
            ids.append(index[r["context"]])
    questions = [{"query": r["question"], "outputs": list(r["answers"]), "context": [index[r["context"]]],
                  "more_context": [i for i in by_title[r["title"]] if i != index[r["context"]]]}
                 for r in rows if not r["impossible"]]
    return QASet(docs, questions)


def hotpotqa_set(obj: list[dict[str, Any]]) -> QASet:
    """RULER's read_hotpotqa: documents are `title + "\\n" + "".join(sentences)`; every question keeps its 10
    paragraphs (gold and distractors) as context."""
    def doc(title: str, sents: list[str]) -> str:
        return f"{title}\n{''.join(sents)}"

    docs = sorted({doc(t, p) for d in obj for t, p in d["context"]})
    index = {c: i for i, c in enumerate(docs)}
    questions = [{"query": d["question"], "outputs": [d["answer"]],
                  "context": [index[doc(t, p)] for t, p in d["context"]]} for d in obj]
    return QASet(docs, questions)


def _missing(dataset: str, data_dir: str | None) -> str:
    names = " or ".join(QA_LOCAL[dataset])
    hub = f"{SQUAD_REPO}/{SQUAD_PATTERN}" if dataset == "squad" else f"{HOTPOTQA_REPO}/{HOTPOTQA_FILE}"
    where = f"no {names} in data_dir = \"{data_dir}\"" if data_dir else f"{hub} is not in the Hugging Face cache"
    return (f"RULER {dataset}: {where}. Fix: run `gali-data download ruler` (on a machine with "
            f"internet; `--to DIR` writes DIR/ruler/{QA_LOCAL[dataset][0]}), or put the official dev file there as "
            f"{QA_LOCAL[dataset][0]}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_text_file(path))  # recorded as the experiment's data
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}). Fix: re-download it (gali-data download ruler)") from None


def qa_raw(dataset: str, data_dir: str | None, download: bool = True) -> Any:
    """The official JSON object of `dataset` (SQuAD's {"data": [...]}, HotpotQA's list), or SQuAD rows from the hub
    parquet copy (a list of flat rows)."""
    if data_dir:
        root = Path(data_dir).expanduser()
        for name in QA_LOCAL[dataset]:
            if (root / name).is_file():
                return _read_json(root / name)
        raise DataError(_missing(dataset, data_dir))
    if dataset == "hotpotqa":
        return _read_json(data.hub_file(HOTPOTQA_REPO, HOTPOTQA_FILE, HOTPOTQA_REVISION, _missing(dataset, None),
                                        download))
    import pyarrow.parquet as pq

    rows = []
    for path in data.hub_files(SQUAD_REPO, SQUAD_PATTERN, None, _missing(dataset, None), download):
        for r in pq.read_table(path).to_pylist():
            answers = list((r.get("answers") or {}).get("text") or [])
            rows.append({"title": r["title"], "context": r["context"], "question": r["question"], "answers": answers,
                         "impossible": not answers})
    return rows


@functools.cache
def load_qa(dataset: str, data_dir: str | None, download: bool = True) -> QASet:
    """SQuAD (`squad`) or HotpotQA (`hotpotqa`) in RULER's structure."""
    raw = qa_raw(dataset, data_dir, download)
    try:
        if dataset == "squad":
            qa = squad_set(raw if isinstance(raw, list) else _squad_rows(raw))
        else:
            qa = hotpotqa_set(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"RULER {dataset}: the file is not in the official schema (missing {exc}). Fix: use the "
                        f"official dev file (gali-data download ruler)") from None
    if not qa.questions:
        raise DataError(f"RULER {dataset}: no answerable question in the file. Fix: use the official dev file")
    return qa
