"""Needle grid and random-position pass-key: key placement, lengths, seeded keys, records of every trial."""

from __future__ import annotations

import pytest

from harness.core.errors import ConfigError
from harness.tasks.base import TASKS
from harness.tasks.needle import GARBAGE, QUESTION, TASK_DESCRIPTION, garbage_chars, needle_line
from tests.tasks.conftest import FakeEngine, make_task


def needle(tokenizer=None, **keys):
    return make_task(tokenizer, **{"task": "needle", "times": 2, "min_k": 1, "max_k": 32, "gap": 4, **keys})


def test_reference_grid():
    task = needle()
    # docs/reference/harness.md §2.4, README values
    assert task.lengths() == [1000, 5000, 9000, 13000, 17000, 21000, 25000, 29000]
    assert garbage_chars(1000, 3.75) == 3072 and garbage_chars(16000, 3.75) == 59392  # floor(3.75 L / 1024) * 1024
    exs = [e for e in needle(task_options={"lengths": [1000]}).examples("needle")]
    assert len(exs) == 16 * 2 and needle().expected_count("needle") == 8 * 16 * 2
    assert sorted({e.meta["depth"] for e in exs}) == [100 * i / 16 for i in range(1, 17)]  # 6.25 ... 100, never 0
    assert needle(test=True).lengths() == [1000]


def test_prompt_layout_and_key_depth():
    n_garbage = garbage_chars(5000, 3.75)
    for ex in needle(task_options={"lengths": [5000]}, times=1).examples("needle"):
        key = int(ex.references[0])
        assert 50000 <= key <= 500000
        prompt = ex.inputs
        assert prompt.startswith(TASK_DESCRIPTION + "\n") and prompt.endswith("\n" + QUESTION)
        line = "\n" + needle_line(key) + "\n"
        pos = prompt.index(line) - len(TASK_DESCRIPTION) - 1  # filler characters before the key line
        depth = ex.meta["depth"] / 100
        assert abs(pos - depth * n_garbage) <= len(GARBAGE)  # within one filler sentence of the requested depth
        # 4 newline separators: 2 inside `line`, 1 after the description, 1 before the question
        filler = len(prompt) - len(TASK_DESCRIPTION) - len(QUESTION) - len(line) - 2
        assert filler == n_garbage  # prefix + suffix = the configured filler size


def test_keys_are_reproducible_by_seed():
    keys = [e.references for e in needle(task_options={"lengths": [1000]}).examples("needle")]
    again = [e.references for e in needle(task_options={"lengths": [1000]}).examples("needle")]
    other = [e.references for e in needle(task_options={"lengths": [1000]}, seed=7).examples("needle")]
    assert keys == again and keys != other and len({k[0] for k in keys}) > 16


def test_every_trial_is_recorded_with_its_real_length(tok):
    task = needle(tok, task_options={"lengths": [300]}, times=2)
    exs = task.examples("needle")[:2]
    engine = FakeEngine("The pass key is 1")
    recs = [task.run(e, engine) for e in exs]
    for rec, call in zip(recs, engine.calls):
        assert rec["prompt_len"] == len(call["ids"]) and rec["prediction"] == "The pass key is 1"
        assert call["max_new_tokens"] == len(tok(rec["references"][0], add_special_tokens=False)["input_ids"]) + 100
    engine = FakeEngine(f"It is {exs[0].references[0]}.")
    assert task.run(exs[0], engine)["passed"]


def test_needle_score_cells():
    task = needle()
    recs = [{"meta": {"length": 1000, "depth": 50.0}, "passed": p, "prompt_len": 900} for p in (True, False)]
    recs += [{"meta": {"length": 2000, "depth": 100.0}, "passed": True, "prompt_len": 1800}]
    out = task.score("needle", recs)
    assert out["score"] == pytest.approx(66.67, abs=0.01)
    assert out["cells"] == {"1000|50": 50.0, "2000|100": 100.0}
    assert out["tokens_by_length"] == {"1000": 900.0, "2000": 1800.0}


def passkey(tokenizer=None, **keys):
    return make_task(tokenizer, **{"task": "passkey_retreival", "times": 20, "n_garbage": 4000, **keys})


def test_passkey_alias_and_validation():
    assert TASKS.canonical("passkey_retreival") == "passkey" == passkey().name
    with pytest.raises(ConfigError, match="n_garbage"):
        make_task(task="passkey", times=3)
    with pytest.raises(ConfigError, match="times"):
        make_task(task="passkey", n_garbage=100)


def test_passkey_random_positions_and_keys():
    exs = passkey().examples("passkey")
    assert len(exs) == 20 and passkey(test=True).expected_count("passkey") == 1
    positions = []
    for ex in exs:
        key = int(ex.references[0])
        assert 1 <= key <= 50000
        line = "\n" + needle_line(key) + "\n"
        pos = ex.inputs.index(line) - len(TASK_DESCRIPTION) - 1
        assert pos == ex.meta["position"] and 0 <= pos <= 4000
        assert len(ex.inputs) - len(TASK_DESCRIPTION) - len(QUESTION) - len(line) - 2 == 4000
        positions.append(pos)
    assert len(set(positions)) > 10  # random, not fixed depths
    assert [e.references for e in passkey().examples("passkey")] == [e.references for e in exs]
    assert [e.references for e in passkey(seed=1).examples("passkey")] != [e.references for e in exs]


def test_passkey_score():
    cases = ((5.0, True), (15.0, False), (95.0, True))
    recs = [{"meta": {"depth": d}, "passed": p, "prompt_len": 10} for d, p in cases]
    out = passkey().score("passkey", recs)
    assert out["score"] == pytest.approx(66.67, abs=0.01) and out["by_depth"] == {"0-20": 50.0, "80-100": 100.0}


@pytest.mark.parametrize("length", [200, 300, 457])
def test_needle_prompt_has_the_stated_token_length(tok, length):
    task = needle(tok, task_options={"lengths": [length], "depths": 4}, times=2)
    for ex in task.examples("needle"):
        ids, n_garbage = task.prepare(ex)
        assert length - 4 <= len(ids) <= length  # the longest filler that fits: at most a few tokens short
        assert ex.references[0] in tok.decode(ids) and n_garbage > 0
        rec = task.run(ex, FakeEngine("no"))
        assert rec["prompt_len"] == len(ids) and rec["target_tokens"] == length and rec["n_garbage"] == n_garbage
    reference = needle(tok, task_options={"lengths": [length], "fit": "reference"}, times=1)
    ex = reference.examples("needle")[0]
    assert reference.prepare(ex) == (list(tok(ex.inputs)["input_ids"]), None)  # the 3.75 chars/token filler


def test_needle_lengths_above_max_pe_are_refused():
    with pytest.raises(ConfigError, match="exceeds max_pe"):
        needle(max_pe=1024, task_options={"lengths": [512, 2048]})
    assert needle(max_pe=2048, task_options={"lengths": [512, 2048]}).lengths() == [512, 2048]
    with pytest.raises(ConfigError, match="exceeds max_pe"):
        passkey(max_pe=1024, task_options={"tokens": 4096})


def test_passkey_fitted_to_tokens(tok):
    task = passkey(tok, n_garbage=None, times=4, task_options={"tokens": 320})
    for ex in task.examples("passkey"):
        ids, n_garbage = task.prepare(ex)
        assert 316 <= len(ids) <= 320
        prompt = tok.decode(ids, skip_special_tokens=True)
        line = "\n" + needle_line(int(ex.references[0])) + "\n"
        position = prompt.index(line) - len(TASK_DESCRIPTION) - 1
        assert position == int(ex.meta["fraction"] * n_garbage)  # the drawn depth of the fitted filler


def test_heatmap_ticks_show_measured_tokens():
    from harness.tasks.figures.needle import needle_tick_labels

    doc = {"subsets": {"needle": {"tokens_by_length": {"1000": 998.5, "2000": None}}}}
    assert needle_tick_labels(doc, [1000.0, 2000.0]) == ["998", "2k"]
