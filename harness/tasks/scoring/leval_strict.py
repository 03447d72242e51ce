"""STRICT (non-official) L-Eval answer parsers, used by ``score_leval_task(..., strict=True)``. Never the default;
numbers are NOT comparable with published L-Eval results.

Corrections compared with the official parsers in :mod:`harness.tasks.scoring.leval_metrics`:

- multiple choice: only *standalone* option letters count (the official parser takes the first A–D character
  anywhere, so "Based on the text, C" answers "B"), explicit "answer is X" statements win, the article "A"
  followed by a lower-case word (other than and/or) is not an option, and no letter means "None" (scored 0)
  instead of a random-guess "A";
- GSM: the number keeps its sign and decimals, thousands separators are dropped, "the answer is" matches in any case,
  and the fallback is the last number of the first paragraph (values compare as floats);
- CodeU: filler phrases ("is", "will be", ...) are removed as whole words only, so "list" stays "list" (the official
  parser deletes "is" inside words of the prediction but not of the truth);
- sci_fi: a judgement is a whole word true/false ("untrue" is not "true").

The ground-truth side uses the official parsers except for GSM, where the same strict number parser is applied.
"""

from __future__ import annotations

import re

from harness.tasks.scoring.leval_metrics import _select_code_output, process_gt_code, process_gt_judge

_LETTER = r"\(?(?:[B-D]|A(?!\s+(?!(?:and|or)\b)[a-z]))\)?"
_SEP = r"(?:\s*(?:,|/|&|\band\b)\s*|\s+)"
_LIST = rf"{_LETTER}(?:{_SEP}{_LETTER})*(?![A-Za-z])"
_ANSWER_PHRASE = re.compile(rf"(?i:\banswers?)(?:\s+(?i:is|are))?\s*[:\-]?\s*({_LIST})")
_LEADING = re.compile(rf"^\s*({_LIST})")
_STANDALONE = re.compile(rf"(?<![A-Za-z]){_LETTER}(?![A-Za-z])")
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
_ANSWER_NUMBER = re.compile(rf"(?i:the answer is)\s*[:=]?\s*\$?\s*({_NUMBER})")
_ANY_NUMBER = re.compile(_NUMBER)
_CODE_FILLERS = re.compile(r"\b(?:will be|of the code|is|would be|the value of|the result of|printed)\b")
_JUDGEMENT = re.compile(r"[^a-z]*(true|false)[^a-z]*")


def _letters(span: str) -> list[str]:
    return re.findall(r"[A-D]", span)


def process_output_mc_strict(response: str, task: str) -> str:
    """STRICT option parser: explicit "answer is X" > leading option letters > standalone letters before "Question".

    Single-answer tasks return the first letter found; coursera (multi-answer) returns all letters of the winning
    rule, sorted and de-duplicated. "None" when no option letter is found.
    """
    text = response.strip()
    if not text:
        return "None"
    head = text.split("Question")[0]
    letters: list[str] = []
    for pattern in (_ANSWER_PHRASE, _LEADING):
        match = pattern.search(head)
        if match:
            letters = _letters(match.group(1))
            break
    if not letters:
        letters = [ch for m in _STANDALONE.finditer(head) for ch in _letters(m.group(0))]
    if not letters:
        return "None"
    if "coursera" in task:
        return "".join(sorted(set(letters)))
    return letters[0]


def _canonical_number(token: str) -> str:
    token = token.replace(",", "")
    try:
        value = float(token)
    except ValueError:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def process_math_strict(response: str) -> str:
    """STRICT GSM parser: signed/decimal number after "the answer is" (any case), else the last number of the first
    paragraph; canonical form ("1,000.0" → "1000", "-2.50" → "-2.5"); "" if there is none."""
    match = _ANSWER_NUMBER.search(response)
    if match:
        return _canonical_number(match.group(1))
    numbers = _ANY_NUMBER.findall(response.split("\n\n")[0])
    return _canonical_number(numbers[-1]) if numbers else ""


def process_output_code_strict(response: str, gt: str) -> str:
    """STRICT CodeU parser: official normalisation and token selection, fillers removed as whole words only."""
    return _select_code_output(_CODE_FILLERS.sub("", process_gt_code(response)), gt)


def process_output_judge_strict(response: str) -> list[str]:
    """STRICT sci_fi parser: first whole-word true/false in the loyalty and the fact part, else "<error>"."""
    out = []
    for part in process_gt_judge(response):
        label = "<error>"
        for word in part.split():
            match = _JUDGEMENT.fullmatch(word)
            if match:
                label = match.group(1)
                break
        out.append(label)
    return out
