"""RULER generation: the 13 tasks, seeded determinism, lengths fitted in tokens, prompt structure per task family."""

from __future__ import annotations

import re
from collections import Counter
from random import Random

import pytest

from harness.core.errors import ConfigError, DataError
from harness.tasks import _ruler_gen as G
from harness.tasks._ruler_data import hotpotqa_set, load_qa, split_sentences, squad_set
from harness.tasks._ruler_spec import NOISE, RULER_TASKS, SPECS
from tests.tasks.conftest import FIXTURES, LLAMA3_NAME, make_task, rendered

ESSAY = [str(p) for p in sorted((FIXTURES / "pg19").glob("*.txt"))]


def ruler(tokenizer=None, **keys):
    options = {"lengths": [1536, 2048], "num_samples": 2, "haystack_files": ESSAY, **keys.pop("task_options", {})}
    return make_task(tokenizer, **{"task": "ruler", "max_pe": 2048, "data_dir": str(FIXTURES / "ruler"),
                                   "prompt_format": "raw", "task_options": options, **keys})


def test_thirteen_tasks_budgets_and_examples():
    task = ruler()
    assert task.subsets() == RULER_TASKS and len(RULER_TASKS) == 13
    budgets = {s: task.max_new_tokens(s) for s in RULER_TASKS}  # RULER's tokens_to_generate per family
    assert {budgets[s] for s in RULER_TASKS if s.startswith("niah")} == {128}
    assert (budgets["vt"], budgets["cwe"], budgets["fwe"], budgets["qa_1"], budgets["qa_2"]) == (30, 120, 50, 32, 32)
    assert [e.id for e in task.examples("vt")] == ["L1536-0000", "L1536-0001", "L2048-0000", "L2048-0001"]
    assert task.expected_count("vt") == 4 and ruler(test=True).expected_count("vt") == 1
    assert ruler(max_pe=70000, task_options={"lengths": None}).lengths() == [4096, 8192, 16384, 32768, 65536]


def test_validation():
    with pytest.raises(ConfigError, match="exceeds max_pe"):
        ruler(task_options={"lengths": [4096]})
    with pytest.raises(ConfigError, match="max_pe"):
        make_task(task="ruler")
    with pytest.raises(ConfigError, match="no room"):
        ruler(task_options={"lengths": [100]})


@pytest.mark.parametrize("subset", RULER_TASKS)
def test_prompt_fits_the_length_and_is_seeded(tok, subset):
    task = ruler(tok, task_options={"max_new_tokens": 8})
    for ex in task.examples(subset)[1:3]:  # one example at each length
        ids, sample, size = task.build(ex)
        length = ex.meta["length"]
        assert len(ids) + 8 <= length  # RULER: prompt (template and answer prefix included) + generation <= length
        assert len(ids) + 8 >= 0.85 * length  # and close to it (the haystack unit is a sentence, word or document)
        assert ids == task.encode(sample) and sample.outputs
    again = ruler(tok, task_options={"max_new_tokens": 8}).build(task.examples(subset)[1])
    other = ruler(tok, seed=7, task_options={"max_new_tokens": 8}).build(task.examples(subset)[1])
    assert again[0] == task.build(task.examples(subset)[1])[0]
    if subset not in ("qa_1", "qa_2"):  # QA picks question i for sample i (RULER); distractors may coincide
        assert other[1].outputs != again[1].outputs


def test_niah_single_noise_wording():
    s = G.niah(SPECS["niah_single_1"].args, 6, Random(0), G.Resources())
    key, value = re.search(r"special magic numbers for (\S+) is: (\d+)\.", s.text).groups()
    assert s.outputs == [value] and len(value) == 7 and re.fullmatch(r"[a-z]+-[a-z]+", key.lower())
    assert s.text.startswith("A special magic number is hidden within the following text. Make sure to memorize it. "
                             "I will quiz you about the number afterwards.\n")
    assert s.text.endswith(f"\nWhat is the special magic number for {key} mentioned in the provided text?")
    assert s.prefix == f" The special magic number for {key} mentioned in the provided text is"
    lines = s.text.split("\n")[1:-1]
    assert lines.count(NOISE) == 6 and len(lines) == 7  # six noise lines and the needle


def test_niah_multi_variants():
    essay = G.Resources(essay=lambda: ("It was late. The wind rose! Did it rain? " * 40).split())
    mv = G.niah(SPECS["niah_multivalue"].args, 200, Random(1), essay)
    key = re.search(r"magic numbers for (\S+) mentioned", mv.text).group(1)
    assert len(mv.outputs) == 4 and all(f"for {key} is: {v}." in mv.text for v in mv.outputs)
    assert mv.text.startswith("Some special magic numbers are hidden") and mv.prefix.endswith("text are")
    mq = G.niah(SPECS["niah_multiquery"].args, 200, Random(2), essay)
    query = re.search(r"magic numbers for (.+) mentioned in the provided text\?", mq.text).group(1)
    keys = re.fullmatch(r"(\S+), (\S+), (\S+), and (\S+)", query).groups()
    assert [re.search(rf"for {k} is: (\d+)\.", mq.text).group(1) for k in keys] == mq.outputs
    mk = G.niah(SPECS["niah_multikey_3"].args, 10, Random(3), essay)
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    lines = mk.text.split("\n")[1:-1]
    assert len(lines) == 11 and all(re.fullmatch(rf"One of the special magic uuids for {uuid} is: {uuid}\.", x)
                                    for x in lines)  # the haystack is made of needles
    assert re.fullmatch(uuid, mk.outputs[0]) and sum(mk.outputs[0] in x for x in lines) == 1
    mk1 = G.niah(SPECS["niah_multikey_1"].args, 200, Random(4), essay)
    assert mk1.text.count("One of the special magic numbers for") == 4 and len(mk1.outputs) == 1


def test_essay_needles_sit_between_sentences():
    words = ("It was late. The wind rose! Did it rain? " * 40).split()
    s = G.niah(SPECS["niah_single_2"].args, 100, Random(5), G.Resources(essay=lambda: words))
    context = s.text.split("\n")[1]
    sentences = split_sentences(context)
    needle = [x for x in sentences if x.startswith("One of the special magic numbers")]
    assert len(needle) == 1 and len(sentences) == len(split_sentences(" ".join(words[:100]))) + 1


def test_variable_tracking_chain_and_few_shot(tok):
    task = ruler(tok, task_options={"max_new_tokens": 8})
    ids, s, _ = task.build(task.examples("vt")[2])
    shot, _, main = s.text.rpartition("Memorize and track the chain(s)")
    assert shot.startswith("Memorize and track the chain(s)") and shot.endswith("\n")
    value = re.search(r"assigned the value (\d+) in the text above", main).group(1)
    names = s.outputs
    assert len(names) == 5 and all(re.fullmatch(r"[A-Z]{5}", n) for n in names)
    assert f"VAR {names[0]} = {value}" in main
    assert all(f"VAR {names[j + 1]} = VAR {names[j]} " in main for j in range(4))
    assert s.prefix == (" Answer: According to the chain(s) of variable assignment in the text above, 5 variables "
                        f"are assigned the value {value}, they are: ")
    shot_names = shot.strip().split()[-5:]  # the worked example's answer: three-letter names, randomised
    assert all(re.fullmatch(r"[A-Z]{3}", n) for n in shot_names) and "12345" not in shot


def test_common_words_counts():
    vocab = [f"w{i}" for i in range(500)]
    long = G.cwe(SPECS["cwe"].args, 60, Random(0), G.Resources(cwe_vocab=vocab), 4096)
    listing = long.text.rpartition("most often.\n")[2].split("\nQuestion")[0]
    counts = Counter(re.findall(r"\d+\. (\S+)", listing))
    assert all(counts[w] == 30 for w in long.outputs) and len(long.outputs) == 10
    assert sorted(counts[w] for w in counts if w not in long.outputs) == [3] * 50
    short = G.cwe(SPECS["cwe"].args, 20, Random(0), G.Resources(cwe_vocab=vocab), 2048)
    counts = Counter(re.findall(r"\d+\. (\S+)", short.text.rpartition("most often.\n")[2].split("\nQuestion")[0]))
    assert {counts[w] for w in short.outputs} == {6} and len(counts) == 20
    assert short.text.count("Question: What are the 10 most common words in the above list?") == 2  # one worked


def test_frequent_words_zipf():
    s = G.fwe(SPECS["fwe"].args, 600, Random(0), G.Resources(), 4096, 50)
    coded = s.text.split("coded words. ")[1].split("\nQuestion")[0].split()
    counts = Counter(coded)
    assert counts.most_common(1)[0][0] == "..." and counts["..."] == int(600 / G.zeta(2.0))  # 364 = 600 * 6 / pi^2
    assert [w for w, _ in counts.most_common(4)[1:]] == s.outputs
    assert [counts[w] for w in s.outputs] == [int(600 * k ** -2 / G.zeta(2.0)) for k in (2, 3, 4)]
    assert abs(G.zeta(2.0) - 3.141592653589793 ** 2 / 6) < 1e-12


def test_qa_sets_from_official_schemas():
    squad = load_qa("squad", str(FIXTURES / "ruler"))
    assert len(squad.docs) == 6 and len(squad.questions) == 7  # 8 questions, the unanswerable one skipped
    q = squad.questions[0]
    assert q["outputs"] == ["grey granite", "granite"] and len(q["more_context"]) == 1  # same-article paragraph
    hotpot = load_qa("hotpotqa", str(FIXTURES / "ruler"))
    assert len(hotpot.questions) == 3 and all(len(q["context"]) == 4 for q in hotpot.questions)
    assert hotpot.docs[hotpot.questions[0]["context"][0]] == ("Martha Reed\nMartha Reed was a lighthouse keeper. She "
                                                               "kept the Port Elm light until 1961.")
    flat = squad_set([{"title": "t", "context": "c1", "question": "q", "answers": ["a"], "impossible": False},
                      {"title": "t", "context": "c2", "question": "r", "answers": [], "impossible": True}])
    assert flat.questions == [{"query": "q", "outputs": ["a"], "context": [0], "more_context": [1]}]
    assert hotpotqa_set([]).questions == []
    with pytest.raises(DataError, match="gali-data download ruler"):
        load_qa("squad", str(FIXTURES / "pg19"))


def test_qa_prompt_contains_gold_documents():
    data = load_qa("hotpotqa", str(FIXTURES / "ruler"))
    s = G.qa(SPECS["qa_2"].args, 5, Random(0), G.Resources(qa=lambda name: data), 1)
    assert s.outputs == ["Bramford"] and s.prefix == " Answer:"
    assert all(data.docs[i] in s.text for i in data.questions[1]["context"])
    assert re.findall(r"Document (\d+):\n", s.text) == ["1", "2", "3", "4", "5"]
    assert s.text.endswith("Question: Which town was the birthplace of the teacher of Anna Voss?")


def test_chat_format_puts_the_answer_prefix_after_the_assistant_turn(tok3):
    task = ruler(tok3, prompt_format="chat_template", model=LLAMA3_NAME, task_options={"max_new_tokens": 8})
    ids, s, _ = task.build(task.examples("niah_single_1")[0])
    text = tok3.apply_chat_template([{"role": "user", "content": s.text}], add_generation_prompt=True,
                                    tokenize=False)
    assert ids == rendered(tok3, text + s.prefix)
    assert tok3.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n" + s.prefix)


@pytest.mark.parametrize("path", sorted(p for d in ("ruler", "longbench_v2") for p in
                                        (FIXTURES.parents[2] / "configs" / d).glob("*.toml")), ids=lambda p: p.stem)
def test_example_configs_resolve(path):
    from harness.core.config import from_dict, read_toml
    from harness.stages.resolve import resolve

    cfg = resolve(from_dict(read_toml(path), source=str(path)), window=cfg_window(path), peek=False)
    assert cfg.task == path.parent.name and cfg.exp_name.endswith(cfg.method)


def cfg_window(path) -> int:
    return 256 if path.stem.startswith("lab") else 8192


def test_gali_data_ruler_offline(capsys, monkeypatch):
    from harness.cli.data import main, squad_json
    from harness.tasks._ruler_data import _squad_rows

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["where", "ruler", "longbench_v2"]) == 0
    out = capsys.readouterr().out
    assert "<data_dir>/squad.json" in out and "<data_dir>/data.json" in out
    assert main(["download", "ruler"]) == 2  # nothing cached, nothing downloaded: one message, exit 2
    assert "gali-data download ruler" in capsys.readouterr().err
    rows = [{"title": "t", "context": "c1 x", "question": "q", "answers": ["x"], "impossible": False},
            {"title": "t", "context": "c2", "question": "r", "answers": [], "impossible": True},
            {"title": "u", "context": "c3", "question": "s", "answers": ["c"], "impossible": False}]
    assert squad_set(_squad_rows(squad_json(rows))) == squad_set(rows)  # hub parquet -> official JSON round trip
