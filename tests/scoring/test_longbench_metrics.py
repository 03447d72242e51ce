"""LongBench v1 metrics: hand-computed cases, official quirks, and parity with the rouge / fuzzywuzzy packages."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import textwrap
import warnings

import pytest

from harness.tasks.scoring import _rouge_v101
from harness.tasks.scoring import longbench_metrics as lb
from harness.tasks.scoring import longbench_score as lbs
from harness.tasks.scoring.longbench_strict import (
    STRICT_DATASET2METRIC,
    classification_score_strict,
    code_sim_score_strict,
    lcs_length,
    rouge_score_strict,
)

F_ONE = 2.0 * ((1.0 * 1.0) / (1.0 + 1.0 + 1e-8))  # rouge 1.0.1's F when p = r = 1


def _package_rouge(hyp: str, ref: str) -> float:
    """The official call: default Rouge() (rouge-1, rouge-2, rouge-l), any exception → 0.0."""
    from rouge import Rouge

    try:
        return Rouge().get_scores([hyp], [ref], avg=True)["rouge-l"]["f"]
    except Exception:
        return 0.0


# ---------------------------------------------------------------------------------------------------- normalisation


def test_normalize_answer_punctuation_articles_case():
    # lower → "the cat's  hat!" → drop punct → "the cats  hat" → articles → " cats  hat" → collapse
    assert lb.normalize_answer("The Cat's  hat!") == "cats hat"


def test_normalize_answer_unicode():
    # "é" is a word character, so "thé" keeps its "th"; only the standalone "an" goes; "’" is not ASCII punctuation
    assert lb.normalize_answer("Thé Café’s, an idea") == "thé café’s idea"


def test_normalize_zh_answer():
    assert lb.normalize_zh_answer("  北京，Ｈi! 。") == "北京ｈi"


# ---------------------------------------------------------------------------------------------------- F1


def test_qa_f1_hand_computed():
    # pred tokens [quick, brown, fox], gold [quick, brown, dog, jumps]: 2 shared, p = 2/3, r = 1/2
    p, r = 2 / 3, 1 / 2
    assert lb.qa_f1_score("The quick brown fox.", "quick brown dog jumps") == pytest.approx(2 * p * r / (p + r))
    assert 2 * p * r / (p + r) == pytest.approx(4 / 7)


def test_qa_f1_multiset_and_empty():
    # pred [x, y, y] vs gold [y]: overlap min(2, 1) = 1 → p = 1/3, r = 1 → F1 = 0.5
    assert lb.qa_f1_score("x y y", "y") == pytest.approx(0.5)
    assert lb.qa_f1_score("", "anything") == 0.0
    assert lb.qa_f1_score("The", "a") == 0.0  # both normalise to nothing


def test_qa_f1_zh():
    assert lb.qa_f1_zh_score("北京。", "北京") == pytest.approx(1.0)  # "。" normalises to "" and is dropped
    assert lb.qa_f1_zh_score("上海", "北京") == 0.0


# ---------------------------------------------------------------------------------------------------- ROUGE-L


def test_rouge_identical():
    assert lb.rouge_score("the cat sat", "the cat sat") == F_ONE


def test_rouge_set_semantics_hand_computed():
    # ref words {a, b} (m = 2), hyp words {a} (n = 1), union of LCS words {a}: r = 1/2, p = 1
    assert lb.rouge_score("a a a", "a b") == 2.0 * ((1.0 * 0.5) / (1.0 + 0.5 + 1e-8))
    # two hypothesis sentences each matching "a b": distinct words only, so p = r = 1 (textbook ROUGE-L: 2/3)
    assert lb.rouge_score("a b. a b", "a b") == F_ONE
    assert rouge_score_strict("a b. a b", "a b") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_rouge_tie_breaking_hand_computed():
    # ref [a, b] vs hyp sentence [b, a]: the back-track goes left on ties and keeps "b".
    # "b a. a": second sentence adds "a" → union {a, b} → p = r = 1
    assert lb.rouge_score("b a. a", "a b") == F_ONE
    # "b a. b": union stays {b} → llcs 1, m = n = 2 → p = r = 1/2
    assert lb.rouge_score("b a. b", "a b") == 2.0 * ((0.5 * 0.5) / (0.5 + 0.5 + 1e-8))


def test_rouge_empty_and_dots_only_score_zero():
    assert lb.rouge_score("", "a reference") == 0.0
    assert lb.rouge_score("...", "a reference") == 0.0  # no sentence after splitting on '.'
    assert lb.rouge_score("a hypothesis", "") == 0.0


def test_rouge_recursion_error_on_long_sentence():
    # hyp: "zzz" + k distinct words (one sentence), ref "zzz": llcs 1, m = 1, n = k + 1 → F = 2 (1/n) / (1 + 1/n)
    short = "zzz " + " ".join(f"w{i}" for i in range(899))
    p = 1 / 900
    assert lb.rouge_score(short, "zzz") == 2.0 * ((p * 1.0) / (p + 1.0 + 1e-8))
    long = "zzz " + " ".join(f"w{i}" for i in range(1200))  # back-track of 1202 calls > ~989: RecursionError → 0
    assert lb.rouge_score(long, "zzz") == 0.0
    # the same words split into sentences are fine
    assert lb.rouge_score(long.replace(" w5", ". w5"), "zzz") > 0


def test_rouge_matches_package_on_random_texts():
    rng = random.Random(7)
    tokens = ["a", "b", "c", "d", "é", "The", "the", ".", ". ", " ", "\n", "..", "x.y", "\t", "日本"]
    for _ in range(1500):
        hyp = " ".join(rng.choice(tokens) for _ in range(rng.randint(0, 25)))
        ref = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 25)))
        if rng.random() < 0.5:
            hyp, ref = ref, hyp
        assert lb.rouge_score(hyp, ref) == _package_rouge(hyp, ref), (hyp, ref)


def test_rouge_package_backend_is_stack_independent():
    words = "zzz " + " ".join(f"h{i}" for i in range(_rouge_v101.OFFICIAL_HEADROOM - 8))

    def nested(depth: int) -> float:
        return lb.rouge_score(words, "zzz", backend="package") if depth == 0 else nested(depth - 1)

    assert nested(0) == nested(250) == lb.rouge_score(words, "zzz")


OFFICIAL_CHAIN = textwrap.dedent(
    """
    import json, sys
    from rouge import Rouge

    def rouge_score(prediction, ground_truth, **kwargs):  # LongBench metrics.py
        rouge = Rouge()
        try:
            scores = rouge.get_scores([prediction], [ground_truth], avg=True)
        except:
            return 0.0
        return scores["rouge-l"]["f"]

    def scorer(cases):  # eval.py: scorer ...
        return [rouge_score(h, r) for h, r in cases]

    def longbench_eval(cases):  # ... called from longbench_eval, called from <module>
        return scorer(cases)

    print(json.dumps(longbench_eval(json.load(open(sys.argv[1])))))
    """
)


def test_rouge_recursion_threshold_matches_official_script(tmp_path):
    rng = random.Random(3)
    cases = [("zzz " + " ".join(f"h{i}" for i in range(m - 1)), "zzz") for m in range(984, 995)]
    for _ in range(4):  # long single sentences whose back-track depth straddles the limit
        vocab = [f"v{i}" for i in range(rng.choice([3, 40]))]
        cases.append((" ".join(rng.choice(vocab) for _ in range(rng.randint(480, 520))),
                      " ".join(rng.choice(vocab) for _ in range(rng.randint(480, 520)))))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "official.py").write_text(OFFICIAL_CHAIN)
    proc = subprocess.run([sys.executable, str(tmp_path / "official.py"), str(tmp_path / "cases.json")],
                          capture_output=True, text=True, check=True)
    official = json.loads(proc.stdout)
    assert 0 < sum(v == 0.0 for v in official) < len(official)  # the threshold is inside the range tested
    assert [lb.rouge_score(h, r) for h, r in cases] == official
    assert [lb.rouge_score(h, r, backend="package") for h, r in cases] == official


def test_rouge_zh_uses_jieba_words():
    assert lb.rouge_zh_score("我爱北京", "我爱北京") == pytest.approx(1.0)
    assert lb.rouge_zh_score("", "我爱北京") == 0.0


# ---------------------------------------------------------------------------------------------------- classification


def test_classification_remove_while_iterating_quirk():
    # matches [a, ab, abc]; removing "a" shifts the list so "ab" is never examined and survives → 1/2
    classes = ["a", "ab", "abc"]
    assert lb.classification_score("abc", "abc", all_classes=classes) == 0.5
    assert classification_score_strict("abc", "abc", all_classes=classes) == 1.0


def test_classification_two_classes_mentioned_and_missing():
    classes = ["Location", "Person", "Number"]
    assert lb.classification_score("Person or Location", "Person", all_classes=classes) == 0.5
    assert lb.classification_score("Number", "Person", all_classes=classes) == 0.0
    assert lb.classification_score("", "Person", all_classes=classes) == 0.0


def test_classification_without_classes_warns(caplog):
    with caplog.at_level(logging.WARNING):
        assert lb.classification_score("Person", "Person") == 0.0
    assert "all_classes" in caplog.text


# ---------------------------------------------------------------------------------------------------- retrieval, count


def test_retrieval_paragraph_ids():
    assert lb.retrieval_score("Paragraph 12 and Paragraph 3", "Paragraph 12") == 0.5
    assert lb.retrieval_score("The answer is Paragraph 12", "Paragraph 12") == 1.0
    assert lb.retrieval_score("Paragraph 12", "Paragraph 1") == 0.0  # whole numbers, not substrings
    assert lb.retrieval_score("no idea", "Paragraph 1") == 0.0
    # first id of the reference only
    assert lb.retrieval_score("3", "Paragraph 3, see also Paragraph 4") == 1.0


def test_retrieval_reference_without_id_warns(caplog):
    with caplog.at_level(logging.WARNING):
        assert lb.retrieval_score("Paragraph 1", "no id here") == 0.0
    assert "Paragraph" in caplog.text


def test_retrieval_zh_and_count():
    assert lb.retrieval_zh_score("段落3，段落5", "段落3") == 0.5
    # numbers [5, 12]: one equals 5
    assert lb.count_score("There are 5 unique paragraphs out of 12", 5) == 0.5
    assert lb.count_score("five", "5") == 0.0


# ---------------------------------------------------------------------------------------------------- code


def test_code_sim_skips_fences_and_comments():
    pred = "```python\n# add one\n// js comment\n    return x + 1\nmore"
    assert lb.first_code_line(pred) == "    return x + 1"
    assert lb.code_sim_score(pred, "    return x + 1") == 1.0


def test_code_sim_hand_computed_ratios():
    # difflib: "abc" matches → 2*3/8 = 0.75
    assert lb.code_sim_score("abcd", "abce") == 0.75
    # one matching char of 16 → 12.5 → rounded half-to-even to 12
    assert lb.code_sim_score("abcdefgh", "hijklmno") == 0.12
    # everything commented out → "" vs truth → 0; "" vs "" → fuzzywuzzy says 100
    assert lb.code_sim_score("# only a comment", "x = 1") == 0.0
    assert lb.code_sim_score("", "") == 1.0
    assert code_sim_score_strict("abcdefgh", "hijklmno") == 0.125


def test_fuzz_ratio_matches_pure_python_fuzzywuzzy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fuzzywuzzy import fuzz
    import difflib

    if fuzz.SequenceMatcher is not difflib.SequenceMatcher:
        pytest.skip("python-Levenshtein is installed; fuzzywuzzy is not in pure-python mode")
    rng = random.Random(11)
    alphabet = "ab cd_(){}=+x\t"
    for _ in range(500):
        s1 = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        s2 = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        assert lb.fuzz_ratio(s1, s2) == fuzz.ratio(s1, s2)


# ---------------------------------------------------------------------------------------------------- dataset scoring


def test_tables():
    assert len(lb.DATASET2METRIC) == 21
    assert lb.DATASET2COUNT["multifieldqa_en"] == 150 and lb.DATASET2COUNT["lcc"] == 500
    assert lb.DATASET2COUNT["repobench-p"] == 500 and lb.DATASET2COUNT["narrativeqa"] == 200
    assert lb.FIRST_LINE_DATASETS == {"trec", "triviaqa", "samsum", "lsht"}
    assert set(STRICT_DATASET2METRIC) == set(lb.DATASET2METRIC)
    changed = {k for k in lb.DATASET2METRIC if STRICT_DATASET2METRIC[k] is not lb.DATASET2METRIC[k]}
    assert changed == {"gov_report", "qmsum", "multi_news", "samsum", "dureader", "vcsum", "trec", "lsht", "lcc",
                       "repobench-p"}
    assert lbs.STRICT_DATASET2METRIC is STRICT_DATASET2METRIC


def test_score_dataset_first_line_and_max_over_refs():
    classes = ["Person", "Location"]
    preds = ["\nPerson\nLocation", "Location", "Person Location"]
    answers = [["Person"], ["Person"], ["Person"]]
    # scores 1 (first line only), 0, 1/2 → 100 * 1.5 / 3 = 50.0
    assert lbs.score_dataset("trec", preds, answers, classes) == 50.0
    # max over references: second example matches its second reference
    assert lbs.score_dataset("triviaqa", ["Paris", "Rome"], [["Paris"], ["Milan", "rome"]], None) == 100.0
    # rounding: 1 of 3 → 33.33
    assert lbs.score_dataset("passage_count", ["1", "2", "2"], [["1"], ["1"], ["1"]], None) == 33.33


def test_score_dataset_multiline_only_cut_for_first_line_sets():
    # narrativeqa keeps the whole prediction: tokens [paris, is, capital] vs [paris] → p = 1/3, r = 1 → F1 = 0.5
    assert lbs.score_dataset("narrativeqa", ["Paris\nis capital"], [["Paris"]]) == 50.0
    assert lbs.score_dataset("triviaqa", ["Paris\nis capital"], [["Paris"]]) == 100.0


def test_score_dataset_per_example_classes_and_empty(caplog):
    preds, answers = ["cat", "dog"], [["cat"], ["dog"]]
    assert lbs.score_dataset("lsht", preds, answers, [["cat", "ca"], ["dog"]]) == 100.0
    with caplog.at_level(logging.WARNING):
        assert lbs.score_dataset("qasper", [], []) == 0.0
    assert "no predictions" in caplog.text
    with caplog.at_level(logging.WARNING):
        assert lbs.score_dataset("qasper", [None, "x"], [["x"], ["x"]]) == 50.0
    assert "non-string prediction" in caplog.text
    with pytest.raises(KeyError):
        lbs.score_dataset("not_a_dataset", ["x"], [["x"]])


def test_score_dataset_strict_differs_only_where_quirky():
    classes = ["a", "ab", "abc"]
    assert lbs.score_dataset("trec", ["abc"], [["abc"]], classes) == 50.0
    assert lbs.score_dataset("trec", ["abc"], [["abc"]], classes, strict=True) == 100.0
    assert lbs.score_dataset("qasper", ["x y"], [["y"]], strict=True) == lbs.score_dataset("qasper", ["x y"], [["y"]])


def test_score_longbench_e_buckets():
    preds = ["1", "1", "0", "1"]
    answers = [["1"]] * 4
    lengths = [100, 5000, 9000, 3999]
    # 0-4k: examples 1 and 4 (both right) → 100; 4-8k: example 2 → 100; 8k+: example 3 (wrong) → 0
    assert lbs.score_longbench_e("passage_count", preds, answers, lengths) == {"0-4k": 100.0, "4-8k": 100.0, "8k+": 0.0}
    out = lbs.score_longbench_e("passage_count_e", ["1"], [["1"]], [4000])
    assert out == {"0-4k": None, "4-8k": 100.0, "8k+": None}


def test_lcs_length_matches_dynamic_programming():
    def dp(a, b):
        prev = [0] * (len(b) + 1)
        for x in a:
            cur = [0]
            for j, y in enumerate(b, 1):
                cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[-1]))
            prev = cur
        return prev[-1]

    rng = random.Random(5)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == dp(a, b)
    # textbook ROUGE-L: LCS("a b c d", "a c e") = 2 → p = 2/4, r = 2/3 → F = 4/7
    assert rouge_score_strict("a b c d", "a c e") == pytest.approx(4 / 7)
