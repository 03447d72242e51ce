"""STRICT (non-official) LongBench metrics: the official quirks fixed. Never the default; numbers are NOT comparable
with published LongBench results. Use ``score_dataset(..., strict=True)`` or :data:`STRICT_DATASET2METRIC`.

What changes compared with :mod:`harness.tasks.scoring.longbench_metrics`:

- ``classification_score_strict``: substring-of-the-truth matches are filtered *without* the remove-while-iterating
  bug, so every such match is dropped.
- ``rouge_score_strict`` / ``rouge_zh_score_strict``: textbook ROUGE-L F1 (Lin 2004, beta = 1) from the LCS of the
  whole whitespace-token sequences: no '.' sentence split, no set de-duplication, no recursion limit, no 1e-8 fudge.
- ``code_sim_score_strict``: difflib similarity without fuzzywuzzy's integer rounding and without difflib's
  "popular character" auto-junk heuristic (which distorts lines of 200+ characters).

All other datasets use the official metric unchanged.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from harness.tasks.scoring.longbench_metrics import DATASET2METRIC, Metric, _jieba_cut, first_code_line, logger


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Hyyrö 2004; no recursion, O(len(a)·len(b)/64))."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for j, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l_f1(prediction_tokens: Sequence[str], reference_tokens: Sequence[str]) -> float:
    """Textbook ROUGE-L F1 of two token sequences; 0.0 when either is empty or nothing overlaps."""
    lcs = lcs_length(prediction_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(prediction_tokens)
    recall = lcs / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def rouge_score_strict(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """STRICT: textbook ROUGE-L F1 over whitespace tokens (case-sensitive, like the official package)."""
    return rouge_l_f1(prediction.split(), ground_truth.split())


def rouge_zh_score_strict(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """STRICT: textbook ROUGE-L F1 over jieba tokens (whitespace tokens dropped)."""
    pred = [t for t in _jieba_cut(prediction) if t.strip()]
    gold = [t for t in _jieba_cut(ground_truth) if t.strip()]
    return rouge_l_f1(pred, gold)


def classification_score_strict(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """STRICT: like the official metric, but every match that is a proper substring of the truth is dropped."""
    all_classes = kwargs.get("all_classes")
    if all_classes is None:
        logger.warning("classification_score_strict without all_classes; scoring 0.0")
        return 0.0
    matches = [name for name in all_classes if name in prediction]
    matches = [name for name in matches if not (name in ground_truth and name != ground_truth)]
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def code_sim_score_strict(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """STRICT: unrounded difflib ratio (autojunk off) of the first code line and the truth; 1.0 if both empty."""
    line = first_code_line(prediction)
    if line == ground_truth:
        return 1.0
    return difflib.SequenceMatcher(None, line, ground_truth, autojunk=False).ratio()


_REPLACED: dict[Metric, Metric] = {
    DATASET2METRIC["gov_report"]: rouge_score_strict,
    DATASET2METRIC["dureader"]: rouge_zh_score_strict,
    DATASET2METRIC["trec"]: classification_score_strict,
    DATASET2METRIC["lcc"]: code_sim_score_strict,
}

#: STRICT (non-official) dataset → metric table. Not comparable with published LongBench numbers.
STRICT_DATASET2METRIC: dict[str, Metric] = {name: _REPLACED.get(fn, fn) for name, fn in DATASET2METRIC.items()}
