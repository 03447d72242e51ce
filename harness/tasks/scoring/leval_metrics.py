"""L-Eval closed-ended ("exam") scoring, reproducing ``leval/Evaluation`` + GALI's ``leval_eval`` (``result.json``).

The answer parsers, the exact match and the 4-decimal rounding of each metric behave like the official ones (quirks
included), and the topic_retrieval / sci_fi task means are the unrounded means of those 4-decimal sub-scores, as in
the reference. Deliberate differences:

- routing uses the TASK NAME instead of a substring of the full output path (so an experiment name cannot mis-route
  a task);
- inputs on which the official code crashes (blank multiple-choice truth, sci_fi text without "[fact:", no rows)
  get a defined result and a logged warning;
- ``min_prefill_len`` (the ``result_o`` subset) scores the subset itself, not the reference's buggy mix with the
  full-set metrics (docs/tasks.md);
- ``strict=True`` selects the corrected parsers of :mod:`harness.tasks.scoring.leval_strict` (not comparable with
  published numbers).
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

WITH_OPTION_TASKS: tuple[str, ...] = ("coursera", "quality", "tpo")
SUPPORT_METRICS: tuple[str, ...] = ("f1", "rouge", "exam")
LEVAL_CLOSED_TASKS: tuple[str, ...] = ("coursera", "quality", "topic_retrieval_longchat", "tpo", "gsm100", "codeU",
                                       "sci_fi")

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_OPTION_LIKE = re.compile(r"\s*[A-Z](?=[\s.)])")
_ANSWER_IS = re.compile(r"The answer is (\S+)")
_CODE_FILLERS = ("will be", "of the code", "is", "would be", "the value of", "the result of", "printed")


# --------------------------------------------------------------------------------------------------------------------
# Answer parsing (official behaviour)
# --------------------------------------------------------------------------------------------------------------------


def process_gt_mc(response: str) -> str:
    """Option letters of a multiple-choice truth: its first whitespace token with every non-A–D character removed;
    "A" if nothing is left (the official "random guess")."""
    tokens = response.split()
    if not tokens:
        logger.warning("blank multiple-choice ground truth (the official code crashes); using 'A'")
        return "A"
    cleaned = re.sub(r"[^A-D]", "", tokens[0])
    return cleaned if cleaned else "A"


def process_output_mc(response: str, task: str) -> str:
    """Option letter(s) of a multiple-choice prediction, as the official parser finds them.

    "None" for a blank prediction; the prediction itself if it is a substring of "ABCD"; for tasks other than
    coursera the first A–D character *anywhere* (so "Based on ..." gives "B"). Otherwise (coursera, or no A–D at all):
    the leading A–D run if longer than one letter (sorted, de-duplicated); else that single leading letter plus every
    capital followed by whitespace/'.'/')' before "Question" (after dropping one character per leading letter), kept
    if A–D, sorted and de-duplicated; else the first contiguous A–D run; else "A".
    """
    if len(response.strip()) == 0:
        return "None"
    if response in "ABCD":
        return response
    if "coursera" not in task:
        for ch in response:
            if ch in "ABCD":
                return ch
    cleaned = ""
    rest = response
    for ch in response:
        if ch not in "ABCD":
            break
        cleaned += ch
        rest = rest[1:]
    if len(cleaned) > 1:
        return "".join(sorted(set(cleaned)))
    rest = rest.split("Question")[0]
    cleaned += " ".join(_OPTION_LIKE.findall(rest)).strip()
    cleaned = "".join(sorted(set(re.sub(r"[^A-D]", "", cleaned))))
    if len(cleaned) < 1:
        seen = False
        for ch in rest:
            if ch in "ABCD":
                cleaned += ch
                seen = True
            elif seen:
                break
    return cleaned if cleaned else "A"


def process_math(response: str) -> str:
    """GSM answer digits: the token after "The answer is ", else the last word with a digit in the first paragraph
    (words split on single spaces); then its digits up to the first '.' (signs, commas and decimals are dropped)."""
    match = _ANSWER_IS.search(response)
    if match:
        word = match.group(1)
    else:
        word = ""
        for candidate in response.split("\n\n")[0].split(" ")[::-1]:
            if any(ch.isdigit() for ch in candidate):
                word = candidate
                break
    digits = ""
    for ch in word:
        if ch.isdigit():
            digits += ch
        if ch == ".":
            break
    return digits


def process_gt_code(response: str) -> str:
    """CodeU normalisation: collapse whitespace; delete ',', "'", '\\' and '.0'; close up '] [', '[ [', '] ]'."""
    response = re.sub(r"\s+", " ", response)
    for old, new in ((",", ""), ("'", ""), ("\\", ""), (".0", ""), ("] [", "]["), ("[ [", "[["), ("] ]", "]]")):
        response = response.replace(old, new)
    return response


def _select_code_output(response: str, gt: str) -> str:
    keep = len(gt.split()) + 3
    if "the final output" in response:
        return " ".join(re.split(r"\s+", response.split("the final output")[-1])[:keep])
    return " ".join(re.split(r"\s+", response)[-keep:])


def process_output_code(response: str, gt: str) -> str:
    """CodeU prediction: :func:`process_gt_code`, then delete filler strings *anywhere* ("is" too, so "list" becomes
    "lt"); keep ``len(gt.split()) + 3`` tokens after the last "the final output", else the last that many tokens."""
    response = process_gt_code(response)
    for filler in _CODE_FILLERS:
        response = response.replace(filler, "")
    return _select_code_output(response, gt)


def process_gt_judge(response: str) -> list[str]:
    """sci_fi truth: lower-case, split on "[fact:"; [loyalty part stripped, fact part minus its last char stripped]."""
    parts = response.lower().split("[fact:")
    if len(parts) < 2:
        logger.warning("sci_fi text without '[fact:' (the official code crashes); fact part is empty")
        return [parts[0].strip(), ""]
    return [parts[0].strip(), parts[1][:-1].strip()]


def _first_judgement(text: str, is_judgement: Callable[[str, str], bool]) -> str:
    for word in text.split():
        if is_judgement("true", word):
            return "true"
        if is_judgement("false", word):
            return "false"
    return "<error>"


def process_output_judge(response: str) -> list[str]:
    """sci_fi prediction: split like the truth; in each part the first word *containing* true/false, else <error>."""
    loyalty, fact = process_gt_judge(response)
    return [_first_judgement(part, lambda label, word: label in word) for part in (loyalty, fact)]


# --------------------------------------------------------------------------------------------------------------------
# Exact match
# --------------------------------------------------------------------------------------------------------------------


def normalize_answer(s: str) -> str:
    """L-Eval EM normalisation: remove ASCII punctuation and lower-case articles, fix whitespace; NO lower-casing."""
    s = "".join(ch for ch in s if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """Official L-Eval EM of one pair.

    If the normalised truth consists only of A–D (option answers): 1 on equality, 0.25 if the prediction's letters
    are a subset of the truth's (partial credit for multi-answer questions), else 0. Otherwise 1 if
    ``float(pred) == float(gt)``; if either is not a number, 1 if the truth (lower-cased, spaces removed) is a
    substring of the prediction (same treatment), else 0.
    """
    norm_gt = normalize_answer(ground_truth)
    if all(ch in "ABCD" for ch in norm_gt):
        norm_pred = normalize_answer(prediction)
        if norm_pred == norm_gt:
            return 1
        if set(norm_pred).issubset(set(norm_gt)):
            return 0.25
        return 0
    try:
        return int(float(prediction) == float(ground_truth))
    except ValueError:
        return int(ground_truth.lower().replace(" ", "") in prediction.lower().replace(" ", ""))


def leval_exam_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``LEvalMetrics("exam").compute`` without the display keys: EM ×100, count and mean prediction length
    (of the *parsed* predictions), each rounded to 4 decimals; ``LEval_score`` = ``exact_match``."""
    n = len(predictions)
    if n == 0:
        logger.warning("no predictions to score (the official code divides by zero); scoring 0.0")
        return {"exact_match": 0.0, "num_predicted": 0, "mean_prediction_length_characters": 0.0, "LEval_score": 0.0}
    total = 0
    for prediction, ground_truths in zip(predictions, references):
        total += max(exact_match_score(prediction, gt) for gt in ground_truths)
    metrics = {
        "exact_match": round(100.0 * total / n, 4),
        "num_predicted": round(n, 4),
        "mean_prediction_length_characters": round(sum(len(p) for p in predictions) / n, 4),
    }
    metrics["LEval_score"] = metrics["exact_match"]
    return metrics


# --------------------------------------------------------------------------------------------------------------------
# Task scoring
# --------------------------------------------------------------------------------------------------------------------
