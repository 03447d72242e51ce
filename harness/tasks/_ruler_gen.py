"""RULER's example generators, re-implemented: one function per task family, `size` haystack units in, a prompt out.

Every generator draws from the `random.Random` it is given (so an example is a function of its seed and size) and
returns a `Sample`: the task prompt (the user turn), RULER's answer prefix (appended after the prompt format's
assistant start) and the reference outputs. Structures follow RULER's `scripts/data/synthetic/*.py`: needle sentences,
haystacks, insertion depths, the variable-tracking few-shot example, the word-frequency distributions.
"""

from __future__ import annotations

import math
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import Any

from harness.tasks._ruler_data import QASet, split_sentences, wonderwords_list
from harness.tasks._ruler_spec import DEPTHS, DOCUMENT, NEEDLE, NOISE, TEMPLATES


@dataclass
class Sample:
    """One generated example."""

    text: str  # the task prompt (goes into the user turn)
    prefix: str  # RULER's answer prefix, appended after the assistant start
    outputs: list[str]  # references


@dataclass
class Resources:
    """What the generators read besides the RNG (loaded lazily by the task)."""

    essay: Callable[[], Sequence[str]] | None = None  # essay haystack words
    qa: Callable[[str], QASet] | None = None  # dataset name -> QA set
    cwe_vocab: Sequence[str] = ()  # shuffled common-words vocabulary
    vt_icl: str = ""  # the variable-tracking few-shot example (before per-sample randomisation)


# ------------------------------------------------------------------------------------------------------------ niah
def random_value(kind: str, rng: Random) -> str:
    """A needle key or value: a 7-digit number, an adjective-noun word pair, or a UUID4."""
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":  # uniform over RULER's adjective x noun pairs, without building the 6M-entry list
        return f"{rng.choice(wonderwords_list('adjectivelist.txt'))}-{rng.choice(wonderwords_list('nounlist.txt'))}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle type {kind!r}")


def _insert_in_essay(words: Sequence[str], n_words: int, inserts: list[str], rng: Random) -> str:
    """The first `n_words` essay words (repeated if needed), split into sentences, with `inserts` placed at sentence
    boundaries at random depths from DEPTHS (RULER's essay haystack)."""
    repeats = max(1, math.ceil(n_words / len(words)))
    text = " ".join((list(words) * repeats)[:n_words])
    sents = split_sentences(text)
    cuts = [0] + sorted(int(len(sents) * d / 100) for d in rng.sample(DEPTHS, len(inserts))) + [len(sents)]
    parts: list[str] = []
    for i in range(1, len(cuts)):
        parts.append(" ".join(sents[cuts[i - 1]:cuts[i]]))
        if i - 1 < len(inserts):
            parts.append(inserts[i - 1])
    return " ".join(parts)


def niah(args: dict[str, Any], size: int, rng: Random, res: Resources) -> Sample:
    """Needle in a haystack: `size` noise sentences / needle-like lines / essay words around the needles."""
    spec = TEMPLATES["niah"]
    n_keys = max(args["num_needle_k"], args["num_needle_q"])
    kind_v = args["type_needle_v"]
    keys, values, needles = [], [], []
    for _ in range(n_keys):
        keys.append(random_value(args["type_needle_k"], rng))
        values.append([random_value(kind_v, rng) for _ in range(args["num_needle_v"])])
        needles += [NEEDLE.format(type_needle_v=kind_v, key=keys[-1], value=v) for v in values[-1]]
    rng.shuffle(needles)
    haystack = args["type_haystack"]
    if haystack == "essay":
        assert res.essay is not None
        context = _insert_in_essay(res.essay(), size, needles, rng)
    else:
        size = max(size, len(needles))
        if haystack == "noise":
            lines = [NOISE] * size
        else:  # "needle": every filler line is a needle with a random key and value
            lines = [NEEDLE.format(type_needle_v=kind_v, key=random_value(args["type_needle_k"], rng),
                                   value=random_value(kind_v, rng)) for _ in range(size)]
        for index, line in zip(sorted(rng.sample(range(size), len(needles)), reverse=True), needles):
            lines.insert(index, line)
        context = "\n".join(lines)
    chosen = rng.sample(range(n_keys), args["num_needle_q"])
    queries = [keys[i] for i in chosen]
    answers = [v for i in chosen for v in values[i]]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    template, prefix, type_v = spec["template"], spec["answer_prefix"], kind_v
    if args["num_needle_q"] * args["num_needle_v"] == 1:  # RULER's singular wording
        template, prefix = (_singular(t) for t in (template, prefix))
        type_v = kind_v[:-1]
    return Sample(template.format(type_needle_v=type_v, context=context, query=query),
                  prefix.format(type_needle_v=type_v, query=query), answers)


def _singular(text: str) -> str:
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        text = text.replace(old, new)
    return text


# ------------------------------------------------------------------------------------------------ variable tracking
def _chain(num_hops: int, rng: Random, icl: bool) -> tuple[list[str], list[str]]:
    """(variable names, assignment lines) of one chain: `VAR A = <value>`, `VAR B = VAR A `, ..."""
    k = 3 if icl else 5
    names: list[str] = []
    while len(names) < num_hops + 1:
        name = "".join(rng.choices(string.ascii_uppercase, k=k))
        if name not in names:
            names.append(name)
    value = "12345" if icl else str(rng.randint(10000, 99998))
    lines = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(num_hops)]
    return names, lines


def vt(args: dict[str, Any], size: int, rng: Random, res: Resources, icl: bool = False) -> Sample:
    """Variable tracking on the noise haystack (one chain of `num_hops` assignments), preceded by the few-shot
    example with fresh names and value (unless this is the few-shot example itself)."""
    spec = TEMPLATES["variable_tracking"]
    hops = args["num_hops"] if not icl else min(10, args["num_hops"])
    chains = [_chain(hops, rng, icl) for _ in range(args["num_chains"])]
    lines = [NOISE] * max(size, hops + 1)
    for _, chain in chains:
        positions = sorted(rng.sample(range(len(lines)), len(chain)))
        for j, pos in enumerate(positions):
            lines.insert(pos + j, chain[j])
    context = "\n".join(lines).replace(". \n", ".\n")
    value = chains[0][1][0].split("=")[-1].strip()
    text = spec["template"].format(context=context, query=value)
    prefix = spec["answer_prefix"].format(num_v=hops + 1, query=value)
    if not icl and res.vt_icl:
        text = randomize_icl(res.vt_icl, hops, rng) + "\n" + text
    return Sample(text, prefix, chains[0][0])


def randomize_icl(example: str, num_hops: int, rng: Random) -> str:
    """RULER's randomize_icl: new random names for the example's answer variables and a new value for 12345."""
    for name in example.strip().split()[-num_hops - 1:]:
        example = example.replace(name, "".join(rng.choices(string.ascii_uppercase, k=len(name))))
    return example.replace("12345", str(rng.randint(10000, 99998)))


def icl_text(sample: Sample) -> str:
    """The few-shot block: the example's prompt, answer prefix and answer, then a newline."""
    return sample.text + sample.prefix + " " + " ".join(sample.outputs) + "\n"


# ----------------------------------------------------------------------------------------------------------- words
def _numbered(words: Sequence[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


def _cwe_list(vocab: Sequence[str], n: int, common_repeats: int, uncommon_repeats: int, n_common: int,
              rng: Random) -> tuple[str, list[str]]:
    if n <= len(vocab):
        chosen = rng.sample(list(vocab), n)
    else:  # more distinct words than the lists hold (very long contexts): add numbered compound words
        chosen = rng.sample(list(vocab), len(vocab)) + [f"{rng.choice(vocab)}-{i}" for i in range(n - len(vocab))]
    common, uncommon = chosen[:n_common], chosen[n_common:]
    words = common * common_repeats + uncommon * uncommon_repeats
    rng.shuffle(words)
    return _numbered(words), common


def cwe(args: dict[str, Any], size: int, rng: Random, res: Resources, length: int) -> Sample:
    """Common-words extraction: `size` distinct words, 10 of them repeated more often, after one worked example."""
    spec = TEMPLATES["common_words_extraction"]
    n_cw = args["num_cw"]
    if length < 4096:  # RULER's short-context setting
        shot_ctx, shot_ans = _cwe_list(res.cwe_vocab, 20, 3, 1, n_cw, rng)
        context, answer = _cwe_list(res.cwe_vocab, size, 6, 1, n_cw, rng)
    else:
        shot_ctx, shot_ans = _cwe_list(res.cwe_vocab, 40, 10, 3, n_cw, rng)
        context, answer = _cwe_list(res.cwe_vocab, size, args["freq_cw"], args["freq_ucw"], n_cw, rng)
    shot = spec["template"].format(context=shot_ctx) + spec["answer_prefix"] + " " + _numbered(shot_ans)
    return Sample(shot + "\n" + spec["template"].format(context=context), spec["answer_prefix"], answer)


def zeta(alpha: float, terms: int = 100) -> float:
    """Riemann zeta(alpha) for alpha > 1 (Euler-Maclaurin; relative error < 1e-12 for alpha >= 1.1)."""
    n = terms
    total = sum(k ** -alpha for k in range(1, n))
    return total + n ** (1 - alpha) / (alpha - 1) + n ** -alpha / 2 + alpha * n ** (-alpha - 1) / 12 \
        - alpha * (alpha + 1) * (alpha + 2) * n ** (-alpha - 3) / 720


def fwe(args: dict[str, Any], size: int, rng: Random, res: Resources, length: int, max_new: int) -> Sample:
    """Frequent-words extraction: `size` coded words drawn from a Zipf(alpha) law over a random 6-letter vocabulary
    of (length - max_new) // 50 words; the top one is '...' (noise), the answer is ranks 2-4."""
    spec = TEMPLATES["freq_words_extraction"]
    alpha = float(args["alpha"])
    vocab_size = max(4, (length - max_new) // 50)
    vocab: set[str] = set()
    while len(vocab) < vocab_size:
        vocab.add("".join(rng.choices(string.ascii_lowercase, k=6)))
    ranked = sorted(vocab)
    rng.shuffle(ranked)
    ranked[0] = "..."
    z = zeta(alpha)
    words = [w for k, w in enumerate(ranked, 1) for _ in range(int(size * k ** -alpha / z))]
    rng.shuffle(words)
    return Sample(spec["template"].format(context=" ".join(words)), spec["answer_prefix"], ranked[1:4])


# -------------------------------------------------------------------------------------------------------------- qa
def qa(args: dict[str, Any], size: int, rng: Random, res: Resources, index: int) -> Sample:
    """Question `index` of SQuAD / HotpotQA with its gold paragraph(s) among `size` documents (same-article paragraphs
    first, then random distractors), shuffled and numbered."""
    assert res.qa is not None
    spec = TEMPLATES["qa"]
    data = res.qa(args["dataset"])
    q = data.questions[index % len(data.questions)]
    gold, more = list(q["context"]), list(q.get("more_context", []))
    if size < len(data.docs):
        if size - len(gold) > len(more):
            taken = set(gold + more)
            pool = [i for i in range(len(data.docs)) if i not in taken]
            chosen = gold + more + rng.sample(pool, min(len(pool), size - len(gold) - len(more)))
        else:
            chosen = gold + rng.sample(more, max(0, size - len(gold)))
        docs = [data.docs[i] for i in chosen]
    else:
        docs = (list(data.docs) * math.ceil(size / len(data.docs)))[:size]
    rng.shuffle(docs)
    context = "\n\n".join(DOCUMENT.format(i=i + 1, document=d) for i, d in enumerate(docs))
    return Sample(spec["template"].format(context=context, query=q["query"]), spec["answer_prefix"],
                  list(q["outputs"]))
