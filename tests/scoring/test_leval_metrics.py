"""L-Eval exam scoring: official parser quirks, exact match, and the result.json layouts."""

from __future__ import annotations

import logging

from harness.tasks.scoring import leval_metrics as le
from harness.tasks.scoring import leval_score as les
from harness.tasks.scoring.leval_strict import (
    process_math_strict,
    process_output_code_strict,
    process_output_judge_strict,
    process_output_mc_strict,
)

# ---------------------------------------------------------------------------------------------------- multiple choice


def test_process_gt_mc():
    assert le.process_gt_mc("B") == "B"
    assert le.process_gt_mc("ABD\nexplanation") == "ABD"
    assert le.process_gt_mc("(C) because") == "C"  # first token "(C)" → "C"
    assert le.process_gt_mc("none") == "A"  # no capital A–D: the official "random guess"


def test_process_output_mc_blank_and_substring():
    assert le.process_output_mc("", "quality") == "None"
    assert le.process_output_mc("  \n", "quality") == "None"
    assert le.process_output_mc("BC", "coursera") == "BC"  # substring of "ABCD" is returned as is


def test_process_output_mc_single_answer_takes_first_capital_anywhere():
    # the first A–D character, even inside a word
    assert le.process_output_mc("Based on the passage, the answer is C", "quality") == "B"
    assert le.process_output_mc("The answer: D", "tpo") == "D"
    # no A–D at all: falls through to the coursera logic and ends at the "A" default
    assert le.process_output_mc("none of them", "quality") == "A"


def test_process_output_mc_coursera_paths():
    assert le.process_output_mc("DB are correct", "coursera") == "BD"  # leading run, sorted
    # leading "C" (dropping one char from the rest), then " A" before ")" → "AC"
    assert le.process_output_mc("C. Option A) is also right", "coursera") == "AC"
    # capitals followed by space/'.'/')' before "Question": " A" and " C"
    assert le.process_output_mc("The correct options are A and C. Question 2: B", "coursera") == "AC"
    # no option-like capital: first contiguous A–D run, not sorted
    assert le.process_output_mc("option:DB!", "coursera") == "DB"
    assert le.process_output_mc("I think so", "coursera") == "A"


# ---------------------------------------------------------------------------------------------------- GSM


def test_process_math():
    assert le.process_math("so she has 18 left. The answer is 18.") == "18"
    assert le.process_math("The answer is $1,000.50") == "1000"  # digits of the token up to the first '.'
    # no "The answer is": last word with a digit in the first paragraph, read from the end
    assert le.process_math("She has 5 apples and 3 pears, so 8\n\nThe end 9") == "8"
    assert le.process_math("Total: 12.5kg") == "12"
    assert le.process_math("The answer is -7") == "7"  # sign dropped
    assert le.process_math("no numbers") == ""


def test_gsm_the_answer_is_scoring():
    rows = [
        {"gt": "Natalia sold 48/2 = 24 clips in May.\nThe answer is 72", "pred": "48 + 24 = 72. The answer is 72.",
         "evaluation": "exam"},
        {"gt": "The answer is 10", "pred": "I think 12\n\nThe answer is 10", "evaluation": "exam"},
    ]
    # row 1: 72 vs 72 → 1; row 2: "The answer is 10" found anywhere → 10 vs 10 → 1
    out = les.score_leval_task("gsm100", rows)
    assert out["gsm100"]["exact_match"] == 100.0
    assert out["gsm100"]["mean_prediction_length_characters"] == 2.0  # parsed predictions "72" and "10"


# ---------------------------------------------------------------------------------------------------- CodeU


def test_process_gt_code():
    assert le.process_gt_code("[1, 2,  3]") == "[1 2 3]"
    assert le.process_gt_code("'a', 'b'") == "a b"
    assert le.process_gt_code("[[1.0], [2.0]]") == "[[1][2]]"


def test_process_output_code_and_em():
    gt = "[1, 2, 3]"  # 3 tokens → keep the last 6
    pred = le.process_output_code("The output of the code is:\n[1, 2, 3]", gt)
    assert pred == "The output : [1 2 3]"
    assert le.exact_match_score(pred, le.process_gt_code(gt)) == 1  # "[123]" in "theoutput:[123]"


def test_codeu_is_removed_inside_words_quirk():
    gt = "['list']"
    pred = le.process_output_code("the final output is ['list']", gt)
    assert pred == " [lt]"  # "is" deleted inside "list"; 4 tokens kept after "the final output"
    assert le.exact_match_score(pred, le.process_gt_code(gt)) == 0
    strict = process_output_code_strict("the final output is ['list']", gt)
    assert le.exact_match_score(strict, le.process_gt_code(gt)) == 1


# ---------------------------------------------------------------------------------------------------- sci_fi judge


def test_judge_parsing():
    assert le.process_gt_judge("True [fact: False]") == ["true", "false"]
    # "untrue" contains "true": the official parser reads it as true
    assert le.process_output_judge("It is untrue... [fact: The statement is TRUE.]") == ["true", "true"]
    assert le.process_output_judge("No idea [fact: maybe]") == ["<error>", "<error>"]
    assert process_output_judge_strict("It is untrue, so false [fact: TRUE.]") == ["false", "true"]


def test_judge_without_fact_warns(caplog):
    with caplog.at_level(logging.WARNING):
        assert le.process_output_judge("true") == ["true", "<error>"]
    assert "[fact:" in caplog.text


# ---------------------------------------------------------------------------------------------------- exact match


def test_exact_match_partial_credit_and_case():
    assert le.exact_match_score("A", "AC") == 0.25  # {A} ⊆ {A, C}
    assert le.exact_match_score("AC", "AC") == 1
    assert le.exact_match_score("AB", "AC") == 0
    assert le.exact_match_score("None", "A") == 0
    assert le.exact_match_score("ab", "AB") == 0  # options are compared without lower-casing


def test_exact_match_numbers_and_substring():
    assert le.exact_match_score("18", "18.0") == 1  # float comparison
    assert le.exact_match_score("1e1", "10") == 1
    assert le.exact_match_score("19", "18") == 0
    assert le.exact_match_score("I think it is tom hanks!", "Tom Hanks") == 1  # lower-cased, spaces removed
    assert le.exact_match_score("", "18") == 0


def test_exact_match_empty_truth_is_option_branch():
    # normalize("") = "" consists only of A–D (vacuously): equal → 1, else subset of the empty set only if empty
    assert le.exact_match_score("", "") == 1
    assert le.exact_match_score("the", "") == 1  # "the" normalises to "" too
    assert le.exact_match_score("x", "") == 0


# ---------------------------------------------------------------------------------------------------- task layouts


def _rows(pairs, **extra):
    return [{"query": "q", "gt": gt, "prompt": "p", "pred": pred, "evaluation": "exam", **extra} for gt, pred in pairs]


def test_ordinary_task_metrics():
    rows = _rows([("A", "A"), ("B", "Based on it"), ("C", "D"), ("D", "")])
    # parsed preds "A", "B" (first capital anywhere), "D", "None": EM = 100 * 2 / 4; lengths 1+1+1+4 = 7 → 1.75
    assert les.score_leval_task("quality", rows) == {"quality": {
        "exact_match": 50.0, "num_predicted": 4, "mean_prediction_length_characters": 1.75, "LEval_score": 50.0}}


def test_coursera_partial_credit_and_rounding():
    rows = _rows([("AC", "A"), ("B", "B"), ("D", "C")])
    # 0.25 + 1 + 0 = 1.25 of 3 → 41.66666… → 41.6667
    m = les.score_leval_task("coursera", rows)["coursera"]
    assert m["exact_match"] == 41.6667 and m["LEval_score"] == 41.6667


def test_topic_split_by_index_mod_3():
    pairs = [("Dinosaurs", "The topic is dinosaurs"), ("Rome", "Rome"), ("Ships", "trains"),
             ("Cats", "cats"), ("Moon", "sun"), ("Tea", "coffee")]
    out = les.score_leval_task("topic_retrieval_longchat", _rows(pairs))
    # slot 1 (rows 0, 3): both right (lower-cased substring) → 100; slot 2 (rows 1, 4): 50; slot 3 (rows 2, 5): 0
    assert out["topic_retrieval_longchat_1"]["exact_match"] == 100.0
    assert out["topic_retrieval_longchat_2"]["exact_match"] == 50.0
    assert out["topic_retrieval_longchat_3"]["exact_match"] == 0.0
    assert out["topic_retrieval_longchat"] == {"LEval_score": 50.0}
    assert list(out) == ["topic_retrieval_longchat_1", "topic_retrieval_longchat_2", "topic_retrieval_longchat_3",
                         "topic_retrieval_longchat"]


def test_topic_skipped_rows_keep_their_index_slot():
    rows = _rows([("a1", "a1"), ("b1", "x"), ("c1", "x"), ("a2", "a2")])
    rows[1]["evaluation"] = "llm"  # skipped, but still consumes index 1
    out = les.score_leval_task("topic_retrieval_longchat", rows)
    assert out["topic_retrieval_longchat_1"]["num_predicted"] == 2  # rows 0 and 3
    assert out["topic_retrieval_longchat_2"]["num_predicted"] == 0  # empty slot: defined 0.0 (reference crashes)
    assert out["topic_retrieval_longchat_3"]["num_predicted"] == 1


def test_min_prefill_len_subset_keeps_topic_slots():
    rows = _rows([("a", "a"), ("b", "b"), ("c", "x"), ("d", "d")])
    for row, n in zip(rows, [10, 5000, 5000, 5000]):
        row["prefill_len"] = n
    out = les.score_leval_task("topic_retrieval_longchat", rows, min_prefill_len=4096)
    assert out["topic_retrieval_longchat_1"]["num_predicted"] == 1  # only row 3 remains in slot 1
    assert out["topic_retrieval_longchat_3"]["exact_match"] == 0.0


def test_sci_fi_loyalty_fact_split():
    rows = _rows([("True [fact: False]", "True [fact: False]"),
                  ("False [fact: True]", "I believe it's true. [fact: true]")])
    out = les.score_leval_task("sci_fi", rows)
    # loyalty: true/true → 1, false vs true → 0 → 50; fact: false/false → 1, true/true → 1 → 100; mean 75
    assert out["sci_fi_loyalty"]["exact_match"] == 50.0
    assert out["sci_fi_loyalty"]["mean_prediction_length_characters"] == 4.0  # "true", "true"
    assert out["sci_fi_fact"]["exact_match"] == 100.0
    assert out["sci_fi"] == {"LEval_score": 75.0}


def test_codeu_task_routing_and_prediction_key():
    rows = [{"gt": "[1, 2]", "llama_pred": "Output: [1, 2]", "evaluation": "exam"}]
    assert les.score_leval_task("codeU", rows)["codeU"]["exact_match"] == 100.0


def test_routing_uses_task_name_not_path():
    # an experiment path containing "coursera" cannot turn quality into the multi-answer parser any more
    assert les._route("quality") == "mc" and les._route("gsm100") == "math" and les._route("codeU") == "code"
    assert les._route("topic_retrieval_longchat") == "topic" and les._route("sci_fi") == "judge"
    assert les._route("narrative") == "raw"


def test_empty_rows():
    assert les.score_leval_task("quality", []) == {}


def test_strict_mode_changes_only_parsing():
    rows = _rows([("C", "Based on the text, C"), ("B", "B")])
    assert les.score_leval_task("quality", rows)["quality"]["exact_match"] == 50.0  # "Based" → B
    assert les.score_leval_task("quality", rows, strict=True)["quality"]["exact_match"] == 100.0


def test_strict_parsers():
    assert process_output_mc_strict("The answer is A and C", "coursera") == "AC"
    assert process_output_mc_strict("A good choice is (B).", "quality") == "B"  # article "A" ignored
    assert process_output_mc_strict("xyz", "quality") == "None"  # no random guess
    assert process_math_strict("The answer is 1,000.") == "1000"
    assert process_math_strict("so -3.5 apples\n\nlater 7") == "-3.5"
    assert process_math_strict("the answer is: $18.00") == "18"


def test_task_means_are_not_rounded_again():
    """The reference divides the sum of the 4-decimal sub-scores by 3 (topic) or 2 (sci_fi) and stops there."""
    # topic: slot 1 = 1/3 right → 33.3333, slots 2 and 3 all right → 100.0 each
    pairs = [("a", "a"), ("b", "b"), ("c", "c"), ("d", "x"), ("e", "e"), ("f", "f"), ("g", "x"), ("h", "h"),
             ("i", "i")]
    out = les.score_leval_task("topic_retrieval_longchat", _rows(pairs))
    assert out["topic_retrieval_longchat_1"]["exact_match"] == 33.3333
    assert out["topic_retrieval_longchat"]["LEval_score"] == (33.3333 + 100.0 + 100.0) / 3  # 77.77776666…
    assert out["topic_retrieval_longchat"]["LEval_score"] != 77.7778
    # sci_fi: loyalty 1/3 right → 33.3333, fact all right → 100.0: mean 66.66665, not rounded to 4 decimals
    rows = _rows([("True [fact: True]", "true [fact: true]"), ("True [fact: True]", "false [fact: true]"),
                  ("True [fact: True]", "false [fact: true]")])
    out = les.score_leval_task("sci_fi", rows)
    assert (out["sci_fi_loyalty"]["exact_match"], out["sci_fi_fact"]["exact_match"]) == (33.3333, 100.0)
    assert out["sci_fi"]["LEval_score"] == (33.3333 + 100.0) / 2 == 66.66665
