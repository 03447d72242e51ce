"""LongBench v2: official prompts, truncation, answer extraction, accuracies (plain and compensated), CoT, e2e."""

from __future__ import annotations

import json

import pytest

from harness.cli.collect import main as collect_main
from harness.cli.evaluate import main as eval_main
from harness.cli.run import main as run_main
from harness.core.errors import ConfigError, DataError
from harness.tasks.longbench_v2 import PROMPT_0SHOT, fill
from harness.tasks.scoring.longbench_v2 import accuracy_table, extract_answer
from tests.tasks.conftest import FIXTURES, FakeEngine, make_task, plain

DATA = FIXTURES / "longbench_v2"
ROW = {"context": "  Some text.\n", "question": " Q? ", "choice_A": "a ", "choice_B": "b", "choice_C": "c",
       "choice_D": " d", "answer": "B"}


def lb2(tokenizer=None, **keys):
    return make_task(tokenizer, **{"task": "longbench_v2", "max_pe": 400, "data_dir": str(DATA),
                                   "prompt_format": "raw", **keys})


def test_official_prompt_text():
    assert fill(PROMPT_0SHOT, ROW) == (
        "Please read the following text and answer the question below.\n\n<text>\nSome text.\n</text>\n\n"
        "What is the correct answer to this question: Q?\nChoices:\n(A) a\n(B) b\n(C) c\n(D) d\n\n"
        'Format your response as follows: "The correct answer is (insert answer here)".')


def test_answer_extraction():
    assert extract_answer("**The correct answer is (C)**") == "C"
    assert extract_answer("The correct answer is D, because") == "D"
    assert extract_answer("The correct answer is B. No: The correct answer is (A)") == "A"  # parenthesised first
    assert extract_answer("the correct answer is (A)") is None and extract_answer("(E)") is None


def test_accuracy_table_plain_and_compensated():
    recs = [{"pred": "A", "answer": "A", "difficulty": "easy", "length": "short", "domain": "x"},
            {"pred": "B", "answer": "C", "difficulty": "hard", "length": "medium", "domain": "x"},
            {"pred": None, "answer": "D", "difficulty": "hard", "length": "long", "domain": "y"},
            {"pred": "D", "answer": "D", "difficulty": "hard", "length": "long", "domain": "y"}]
    plain_t = accuracy_table(recs)
    assert (plain_t["overall"], plain_t["easy"], plain_t["hard"]) == (50.0, 100.0, 33.3)
    assert (plain_t["short"], plain_t["medium"], plain_t["long"]) == (100.0, 0.0, 50.0)
    assert plain_t["by_domain"] == {"x": 50.0, "y": 50.0}
    comp = accuracy_table(recs, compensated=True)  # the unanswered question counts 0.25
    assert comp["overall"] == 56.2 and comp["long"] == 62.5 and comp["hard"] == 41.7


def test_examples_filters_and_validation():
    task = lb2()
    exs = task.examples("longbench_v2")
    assert [e.id for e in exs] == [f"fx-000{i}" for i in range(1, 7)] and task.expected_count("longbench_v2") == 6
    assert exs[0].references == "A" and exs[0].meta["difficulty"] == "easy"
    assert len(lb2(task_options={"length_categories": ["long"]}).examples("longbench_v2")) == 2
    assert task.max_new_tokens("longbench_v2") == 128
    assert lb2(max_pe=2000, task_options={"cot": True}).max_new_tokens("longbench_v2") == 1024
    with pytest.raises(ConfigError, match="length_categories"):
        lb2(task_options={"length_categories": ["huge"]})
    with pytest.raises(ConfigError, match="no room"):
        lb2(max_pe=150)
    with pytest.raises(DataError, match="gali-data download longbench_v2"):
        lb2(data_dir=str(FIXTURES / "ruler")).examples("longbench_v2")


def test_middle_truncation_keeps_both_ends(tok):
    task = lb2(tok, max_pe=301)  # budget b = 301 - 128 - 50 = 123: first 61 and last 62 tokens
    prompt = fill(PROMPT_0SHOT, task.examples("longbench_v2")[0].inputs)
    ids = plain(tok, prompt)
    assert len(ids) > 123
    text, truncated = task.truncate(prompt)
    assert truncated and text == tok.decode(ids[:61] + ids[-62:], skip_special_tokens=True)
    assert task.truncate("short")[1] is False


def test_run_records_and_cot_second_turn(tok):
    task = lb2(tok, max_pe=2000)
    ex = task.examples("longbench_v2")[1]
    rec = task.run(ex, FakeEngine("I think **The correct answer is (C)**"))
    assert rec["pred"] == "C" and rec["judge"] and rec["answer"] == "C" and not rec["truncated"]
    cot = lb2(tok, max_pe=2000, task_options={"cot": True})
    engine = FakeEngine("The correct answer is (A)")
    rec = cot.run(ex, engine)
    assert [c["max_new_tokens"] for c in engine.calls] == [1024, 128]
    first, second = (tok.decode(c["ids"]) for c in engine.calls)
    assert first.endswith("Let\u2019s think step by step:") and ex.inputs["context"][:40] in first
    assert "The text is too long and omitted here." in second and ex.inputs["context"][:40] not in second
    assert "Let\u2019s think step by step: The correct answer is (A)\n\nBased on the above" in second
    assert rec["response_cot"] == "The correct answer is (A)" and rec["pred"] == "A" and not rec["judge"]


def test_run_eval_collect_on_fixtures(tmp_path, tiny_model_dir, capsys):
    results = tmp_path / "results"
    cfg = tmp_path / "lb2.toml"
    cfg.write_text(f'task = "longbench_v2"\nmodel = "{tiny_model_dir}"\nmethod = "original"\nexp_name = "v2"\n'
                   f'max_pe = 300\nresults_dir = "{results}"\ndata_dir = "{DATA}"\n'
                   "[task_options]\nmax_new_tokens = 3\ncompensated = true\n")
    assert run_main(["--cfg", str(cfg), "--dry-run"]) == 0
    assert "  longbench_v2: 6 examples tokens min/median/max=247/247/247 max_new_tokens=3" in capsys.readouterr().out
    assert run_main(["--cfg", str(cfg)]) == 0
    assert eval_main(["--all", "--results-dir", str(results)]) == 0
    metrics = json.loads((results / "v2" / "scores.json").read_text())["subsets"]["longbench_v2"]
    assert metrics["n_scored"] == 6 and metrics["complete"] and metrics["compensated"]
    assert metrics["counts"] == {"overall": 6, "easy": 3, "hard": 3, "short": 2, "medium": 2, "long": 2}
    assert metrics["truncated"] == 6  # the fixture contexts exceed 300 - 3 - 50 tokens
    assert collect_main(["--all", "--results-dir", str(results), "--no-plots"]) == 0
    header = (results / "summary" / "longbench_v2_categories.md").read_text().splitlines()[0]
    assert header.startswith("| experiment | model | method | overall | easy | hard | short | medium | long |")
    assert "Code Repository Understanding" in header
