"""PG19 perplexity aggregation (clean and reference-quirk) and pass-key/needle aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.tasks.scoring.needle import aggregate_needle, needle_passed, record_passed
from harness.tasks.scoring.perplexity import aggregate_ppl, evaluation_lengths, reference_ppl_quirk

LN2, LN4 = math.log(2.0), math.log(4.0)


def test_evaluation_lengths():
    assert evaluation_lengths(3000) == [1024, 2048]
    assert evaluation_lengths(1000) == []
    assert evaluation_lengths(2048, step=1024) == [1024, 2048]


def test_aggregate_ppl_excludes_short_documents():
    doc_a = np.full(2048, LN2)  # PPL 2 at every length
    doc_b = [LN4] * 1500  # PPL 4, too short for 2048
    out = aggregate_ppl([doc_a, doc_b])
    assert sorted(out) == [1024, 2048]
    # L = 1024: mean of PPLs (2 + 4) / 2 = 3; token-weighted exp((1024 ln2 + 1024 ln4) / 2048) = 2 ** 1.5
    assert out[1024]["ppl_mean_of_docs"] == pytest.approx(3.0)
    assert out[1024]["ppl_token_weighted"] == pytest.approx(2 ** 1.5)
    assert (out[1024]["n_docs"], out[1024]["n_excluded"]) == (2, 0)
    # L = 2048: doc_b excluded (no division by L for a shorter document)
    assert out[2048]["ppl_mean_of_docs"] == pytest.approx(2.0)
    assert out[2048]["ppl_token_weighted"] == pytest.approx(2.0)
    assert (out[2048]["n_docs"], out[2048]["n_excluded"]) == (1, 1)


def test_aggregate_ppl_uses_prefix_only_and_explicit_lengths():
    doc = np.concatenate([np.full(1024, LN2), np.full(1024, LN4)])
    out = aggregate_ppl([doc], max_length=3072)
    assert out[1024]["ppl_mean_of_docs"] == pytest.approx(2.0)  # only the first 1024 tokens
    assert out[2048]["ppl_mean_of_docs"] == pytest.approx(2 ** 1.5)  # exp((ln2 + ln4) / 2)
    assert out[3072] == {"ppl_mean_of_docs": None, "ppl_token_weighted": None, "n_docs": 0, "n_excluded": 1}
    assert list(aggregate_ppl([doc], lengths=[10])) == [10]


def test_reference_quirk_slack_and_division_by_length():
    doc_a = np.full(2048, LN2)
    doc_c = np.full(2030, LN4)  # 2048 <= 2030 + 20: included at 2048, yet divided by 2048
    doc_short = np.full(1000, LN2)  # 1024 <= 1020? no → never included
    out = reference_ppl_quirk([doc_a, doc_c, doc_short])
    assert len(out) == 64 and list(out)[:2] == ["1024", "2048"] and list(out)[-1] == "65536"
    assert out["1024"] == pytest.approx((2 + 4) / 2, rel=1e-5)
    assert out["2048"] == pytest.approx((2 + 4 ** (2030 / 2048)) / 2, rel=1e-5)
    assert out["3072"] is None
    clean = aggregate_ppl([doc_a, doc_c, doc_short])
    assert clean[2048]["ppl_mean_of_docs"] == pytest.approx(2.0)  # the clean scorer drops doc_c at 2048
    assert clean[1024]["n_excluded"] == 1


def test_reference_quirk_float64_option():
    out = reference_ppl_quirk([np.full(1024, LN2)], max_step=2, dtype=np.float64)
    assert out == {"1024": pytest.approx(2.0, rel=1e-12), "2048": None}


# ---------------------------------------------------------------------------------------------------- needle


def test_needle_passed_substring():
    assert needle_passed("The pass key is 123456.", 123456)
    assert needle_passed("key 1234", "123")  # substring, as in the reference
    assert not needle_passed("", 5)
    assert record_passed({"passed": False, "prediction": "5", "answer": 5}) is False
    with pytest.raises(KeyError):
        record_passed({"prediction": "5"})


def test_aggregate_needle_cells_and_overall():
    records = [
        {"length": 1000, "depth": 0.5, "tokens": 1010, "prediction": "It is 42", "answer": 42},
        {"length": 1000, "depth": 0.5, "tokens": 1030, "prediction": "no", "answer": 42},
        {"length": 1000, "depth": 1.0, "tokens": 1000, "passed": True},
        {"length": 5000, "depth": 0.5, "passed": False},
    ]
    out = aggregate_needle(records)
    # 2 of 4 trials pass
    assert out["overall"]["n"] == 4 and out["overall"]["accuracy"] == 0.5
    assert out["cells"][0] == {"length": 1000, "depth": 0.5, "n": 2, "passed": 1, "accuracy": 0.5,
                               "mean_tokens": 1020.0}
    assert out["cells"][1]["accuracy"] == 1.0
    assert out["cells"][2] == {"length": 5000, "depth": 0.5, "n": 1, "passed": 0, "accuracy": 0.0,
                               "mean_tokens": None}
    assert [r["accuracy"] for r in out["by_length"]] == [pytest.approx(2 / 3), 0.0]
    assert [(r["depth"], r["accuracy"]) for r in out["by_depth"]] == [(0.5, pytest.approx(1 / 3)), (1.0, 1.0)]


def test_aggregate_needle_empty():
    assert aggregate_needle([]) == {"overall": {"n": 0, "passed": 0, "accuracy": None, "mean_tokens": None},
                                    "cells": [], "by_length": [], "by_depth": []}
