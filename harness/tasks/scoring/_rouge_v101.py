"""ROUGE-L F of the ``rouge`` package 1.0.1, as LongBench v1 calls it, bit for bit but faster.

LongBench's ``rouge_score`` calls ``Rouge().get_scores([pred], [gt], avg=True)["rouge-l"]["f"]``. In ``rouge`` 1.0.1
that is *summary-level* ROUGE-L with set semantics (``exclusive=True``):

- each text is split on ``"."``; empty pieces are dropped, each piece is whitespace-collapsed (``" ".join(split())``)
  and split into words on ``" "``;
- ``m`` / ``n`` = number of *distinct* words of the reference / hypothesis;
- for every (reference sentence, hypothesis sentence) pair an LCS is reconstructed by a recursive back-track
  (diagonal on equal words, else up if ``table[i-1][j] > table[i][j-1]``, else left) and its *reference* words are
  added to one global set; ``llcs`` = size of that set;
- ``f = 2 * ((p * r) / (p + r + 1e-8))`` with ``r = llcs / m``, ``p = llcs / n``.

Failure modes kept as in the package: no sentence on either side raises ``ValueError``; a back-track deeper than the
interpreter's recursion budget raises ``RecursionError`` (LongBench turns both into a score of 0.0).

The package's depth limit depends on the caller's stack. This module pins it to the official call site:
GALI's ``eval.py`` run as a script on CPython 3.11 with the default recursion limit 1000 (``<module>`` →
``longbench_eval`` → ``scorer`` → ``rouge_score``) leaves :data:`OFFICIAL_HEADROOM` nested frames below
``rouge_score`` (one less below ``rouge_zh_score``'s inner call). Measured with a standalone script; upstream
LongBench's ``eval.py`` (no ``longbench_eval`` frame) has one more frame of headroom: sentences one word longer survive.

:func:`rouge_l_f` is a re-implementation (same words, same tie-breaking, same float expression) that skips sentence
pairs which cannot change the result; :func:`rouge_l_f_package` calls the package itself with the recursion budget
pinned to the same value. Tests check that both agree.
"""

from __future__ import annotations

import sys
from typing import cast

# Nested frames available below the official ``rouge_score`` frame (see module docstring).
OFFICIAL_HEADROOM = 995
# Frames the package spends between ``rouge_score`` and the first ``_recon`` call:
# get_scores, _get_avg_scores, <lambda>, rouge_l_summary_level, _union_lcs, _recon_lcs.
_PACKAGE_FRAMES = 6


def _sentences(text: str) -> list[list[str]]:
    """The package's preprocessing: split on '.', drop empty pieces, collapse whitespace, split words on ' '."""
    return [" ".join(piece.split()).split(" ") for piece in text.split(".") if len(piece) > 0]


def _word_masks(words: list[str]) -> dict[str, int]:
    """Bit mask of the positions of each word (bit j set where ``words[j] == word``)."""
    masks: dict[str, int] = {}
    for j, word in enumerate(words):
        masks[word] = masks.get(word, 0) | (1 << j)
    return masks


def _lcs_backtrack(x: list[str], y: list[str], y_masks: dict[str, int]) -> tuple[set[str], int]:
    """Words of ``x`` on the package's LCS back-track of (x, y), and the number of ``_recon`` calls it makes.

    The LCS table is kept as bit-parallel rows (Hyyrö 2004): bit ``j`` of ``rows[i]`` is 0 exactly where
    ``table[i][j+1] = table[i][j] + 1``, so ``table[i][j] = j - popcount(rows[i] & (2**j - 1))``. The back-track
    reads the table cells it needs from those rows and follows the package's rule.
    """
    m = len(y)
    full = (1 << m) - 1
    rows = [full]
    v = full
    for token in x:
        u = v & y_masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
        rows.append(v)
    words: set[str] = set()
    i, j, calls = len(x), m, 1
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            words.add(x[i - 1])
            i -= 1
            j -= 1
        else:
            up = j - (rows[i - 1] & ((1 << j) - 1)).bit_count()  # table[i-1][j]
            left = j - 1 - (rows[i] & ((1 << (j - 1)) - 1)).bit_count()  # table[i][j-1]
            if up > left:
                i -= 1
            else:
                j -= 1
        calls += 1
    return words, calls


def rouge_l_f(hypothesis: str, reference: str, headroom: int = OFFICIAL_HEADROOM) -> float:
    """``rouge`` 1.0.1 summary-level ROUGE-L F of one pair; raises ValueError/RecursionError like the package.

    ``headroom`` is the number of nested frames the official call site leaves below ``rouge_score``.
    """
    hyp = _sentences(hypothesis)
    ref = _sentences(reference)
    if len(hyp) <= 0 or len(ref) <= 0:
        raise ValueError("Collections must contain at least 1 sentence.")
    max_calls = headroom - _PACKAGE_FRAMES
    m = len({w for sent in ref for w in sent})
    n = len({w for sent in hyp for w in sent})
    hyp_sets = [set(sent) for sent in hyp]
    hyp_masks: list[dict[str, int] | None] = [None] * len(hyp)
    union: set[str] = set()
    for x in ref:
        x_set = set(x)
        for k, (y, y_set) in enumerate(zip(hyp, hyp_sets)):
            deep = len(x) + len(y) + 1 > max_calls  # the back-track makes at most len(x)+len(y) calls
            common = x_set & y_set
            if not deep and common <= union:
                continue  # cannot add a word and cannot overflow the stack
            if deep and not common:
                calls, words = len(y) + 1, set()  # all-zero table: the back-track only moves left
            else:
                masks = hyp_masks[k]
                if masks is None:
                    masks = hyp_masks[k] = _word_masks(y)
                words, calls = _lcs_backtrack(x, y, masks)
            if calls > max_calls:
                raise RecursionError("maximum recursion depth exceeded (rouge 1.0.1 _recon)")
            union |= words
    llcs = len(union)
    r_lcs = llcs / m
    p_lcs = llcs / n
    return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))


def _probe_headroom() -> int:
    """Number of nested Python calls possible below the caller's frame (measured by recursing until failure)."""
    count = 0

    def dive() -> None:
        nonlocal count
        count += 1
        dive()

    try:
        dive()
    except RecursionError:
        pass
    return count + 1  # the frame of _probe_headroom itself sits below the caller as well


def rouge_l_f_package(hypothesis: str, reference: str, headroom: int = OFFICIAL_HEADROOM) -> float:
    """ROUGE-L F from the ``rouge`` package itself, with the recursion budget pinned to ``headroom``.

    Not thread-safe: it changes the interpreter-wide recursion limit for the duration of the call.
    """
    from rouge import Rouge

    scorer = Rouge(metrics=["rouge-l"])
    old_limit = sys.getrecursionlimit()
    delta = headroom - _probe_headroom()
    sys.setrecursionlimit(old_limit + delta)
    try:
        scores = scorer.get_scores([hypothesis], [reference], avg=True)
    finally:
        sys.setrecursionlimit(old_limit)
    return cast(dict[str, dict[str, float]], scores)["rouge-l"]["f"]
