"""LongBench v1 metrics, reproducing the official ``metrics.py`` / ``eval.py`` (as vendored by GALI) number for number.

Every metric has the official name and signature ``fn(prediction, ground_truth, **kwargs) -> float``. Quirks that move
published numbers are kept on purpose (see each docstring); inputs on which the official code *crashes* get 0.0 and a
logged warning instead.
Corrected variants live in :mod:`harness.tasks.scoring.longbench_strict` and are never the default.
"""

from __future__ import annotations

import difflib
import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from harness.tasks.scoring import _rouge_v101

logger = logging.getLogger(__name__)

Metric = Callable[..., float]

_EN_PUNCT = frozenset(string.punctuation)
_ZH_PUNCT = frozenset(
    string.punctuation
    + "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》"
    + "「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"\d+")
_PARAGRAPH_EN = re.compile(r"Paragraph (\d+)")
_PARAGRAPH_ZH = re.compile(r"段落(\d+)")

# Recursion headroom of the official call sites (see harness.tasks.scoring._rouge_v101): rouge_zh_score adds one frame.
_HEADROOM_EN = _rouge_v101.OFFICIAL_HEADROOM
_HEADROOM_ZH = _rouge_v101.OFFICIAL_HEADROOM - 1


def _jieba_cut(text: str) -> list[str]:
    """``list(jieba.cut(text, cut_all=False))``, importing jieba lazily and muting its start-up chatter."""
    import jieba

    if not getattr(_jieba_cut, "_quiet", False):
        jieba.setLogLevel(logging.WARNING)
        _jieba_cut._quiet = True  # type: ignore[attr-defined]
    return list(jieba.cut(text, cut_all=False))


# --------------------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------------------


def normalize_answer(s: str) -> str:
    """Lower-case, delete ASCII punctuation, replace the words a/an/the by a space, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _EN_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def normalize_zh_answer(s: str) -> str:
    """Lower-case, delete ASCII and Chinese punctuation, delete all whitespace."""
    return "".join("".join(ch for ch in s.lower() if ch not in _ZH_PUNCT).split())


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------


def _token_f1(prediction: Sequence[str], ground_truth: Sequence[str]) -> float:
    """Multiset token F1 (the official ``f1_score``); 0 when nothing overlaps."""
    num_same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction)
    recall = 1.0 * num_same / len(ground_truth)
    return (2 * precision * recall) / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Token F1 of the normalised (:func:`normalize_answer`) whitespace tokens."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Token F1 over jieba tokens, each normalised by :func:`normalize_zh_answer`; empty tokens dropped."""
    pred = [t for t in (normalize_zh_answer(x) for x in _jieba_cut(prediction)) if len(t) > 0]
    gold = [t for t in (normalize_zh_answer(x) for x in _jieba_cut(ground_truth)) if len(t) > 0]
    return _token_f1(pred, gold)


def _rouge(prediction: str, ground_truth: str, headroom: int) -> float:
    try:
        return _rouge_v101.rouge_l_f(prediction, ground_truth, headroom)
    except Exception:  # the official code swallows every exception (empty text, RecursionError, ...)
        return 0.0


def rouge_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """ROUGE-L F of the ``rouge`` 1.0.1 package (summary level, set semantics, sentences split on '.').

    Any exception gives 0.0, including the package's ``RecursionError`` on very long sentences (LCS back-track deeper
    than ~989 steps at the official call site). Computed by the bit-identical re-implementation in
    :mod:`harness.tasks.scoring._rouge_v101`; pass ``backend="package"`` to call the package itself.
    """
    if kwargs.get("backend") == "package":
        try:
            return _rouge_v101.rouge_l_f_package(prediction, ground_truth, kwargs.get("headroom", _HEADROOM_EN))
        except Exception:
            return 0.0
    return _rouge(prediction, ground_truth, kwargs.get("headroom", _HEADROOM_EN))


def rouge_zh_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """:func:`rouge_score` of the jieba tokens joined by spaces (Chinese has no '.', so often one long sentence)."""
    pred = " ".join(_jieba_cut(prediction))
    gold = " ".join(_jieba_cut(ground_truth))
    return rouge_score(pred, gold, **{"headroom": _HEADROOM_ZH, **kwargs})


def classification_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """1/len(matches) if the ground truth is among the class names found in the prediction, else 0.

    Quirk kept: matches that are substrings of the ground truth (but not equal to it) are removed *while iterating
    the same list*, so the element after each removed one is skipped and may survive. Needs ``all_classes``.
    """
    all_classes = kwargs.get("all_classes")
    if all_classes is None:
        logger.warning("classification_score without all_classes (the official code crashes); scoring 0.0")
        return 0.0
    matches = [name for name in all_classes if name in prediction]
    for term in matches:
        if term in ground_truth and term != ground_truth:
            matches.remove(term)
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def _id_fraction(prediction: str, wanted: str) -> float:
    numbers = _NUMBER.findall(prediction)
    if not numbers:
        return 0.0
    return float(sum(1 for number in numbers if number == wanted) / len(numbers))


def _retrieval(prediction: str, ground_truth: str, pattern: re.Pattern[str]) -> float:
    found = pattern.findall(ground_truth)
    if not found:
        logger.warning("retrieval reference %r has no %r (the official code crashes); scoring 0.0",
                       ground_truth[:80], pattern.pattern)
        return 0.0
    return _id_fraction(prediction, found[0])


def retrieval_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Fraction of the numbers in the prediction equal to the first ``Paragraph N`` id of the reference."""
    return _retrieval(prediction, ground_truth, _PARAGRAPH_EN)


def retrieval_zh_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Fraction of the numbers in the prediction equal to the first ``段落N`` id of the reference."""
    return _retrieval(prediction, ground_truth, _PARAGRAPH_ZH)


def count_score(prediction: str, ground_truth: str | int, **kwargs: Any) -> float:
    """Fraction of the numbers in the prediction equal to ``str(ground_truth)``."""
    return _id_fraction(prediction, str(ground_truth))


def fuzz_ratio(s1: str, s2: str) -> int:
    """``fuzzywuzzy.fuzz.ratio`` without python-Levenshtein: difflib ratio x100, rounded half-to-even to an int.

    Same guards as fuzzywuzzy 0.18: None → 0, equal strings → 100 (even two empty ones), one empty → 0.
    """
    if s1 is None or s2 is None:
        return 0
    if s1 == s2:
        return 100
    if len(s1) == 0 or len(s2) == 0:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, s1, s2).ratio()))


def first_code_line(prediction: str) -> str:
    """First line of ``prediction.lstrip('\\n')`` containing none of ```, ``#``, ``//``; "" when there is none."""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """fuzzywuzzy ``ratio(first_code_line(prediction), ground_truth) / 100`` (integer percent, pure difflib)."""
    return fuzz_ratio(first_code_line(prediction), ground_truth) / 100


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------

DATASET2METRIC: dict[str, Metric] = {
    "narrativeqa": qa_f1_score,
    "qasper": qa_f1_score,
    "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score,
    "hotpotqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "musique": qa_f1_score,
    "dureader": rouge_zh_score,
    "gov_report": rouge_score,
    "qmsum": rouge_score,
    "multi_news": rouge_score,
    "vcsum": rouge_zh_score,
    "trec": classification_score,
    "triviaqa": qa_f1_score,
    "samsum": rouge_score,
    "lsht": classification_score,
    "passage_retrieval_en": retrieval_score,
    "passage_count": count_score,
    "passage_retrieval_zh": retrieval_zh_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}

DATASET2COUNT: dict[str, int] = {name: 200 for name in DATASET2METRIC} | {
    "multifieldqa_en": 150,
    "lcc": 500,
    "repobench-p": 500,
}

FIRST_LINE_DATASETS: frozenset[str] = frozenset({"trec", "triviaqa", "samsum", "lsht"})

LONGBENCH_E_BUCKETS: tuple[str, ...] = ("0-4k", "4-8k", "8k+")
