"""L-Eval: system prompts, per-task message formats in each prompt format, word truncation, sci_fi fact query."""

from __future__ import annotations

import json

import pytest

from harness.tasks._common import word_truncate
from harness.tasks.leval import LEVAL_TASKS, body, llama2_message
from tests.tasks.conftest import FIXTURES, LLAMA3_NAME, FakeEngine, llama3_render, make_task, plain, rendered

LE = str(FIXTURES / "leval")
PIRATE = "You are a pirate chatbot who always responds in pirate speak!"
EXAM_SYS = ("Now you are given a very long document. Please follow the instruction based on this document. For "
            "multi-choice questions, there is only a sinlge correct option. Please only provide the letter "
            "corresponding to the answer (like A or B) when answering. For other questions, please directly give the "
            "concise and accurate answer. ")
SYS = {  # docs/reference/harness.md §7.3, typos and trailing spaces included
    "gsm100": "Given several question answer pairs, you need to follow a similar format to answer the last question. "
              "Make sure the response is end with The answer is _ . ",
    "topic_retrieval_longchat": "Below is a record of our previous conversation on many different topics. You are "
                                "the ASSISTANT, and I am the USER. At the beginning of each topic, the USER will say "
                                "'I would like to discuss the topic of <TOPIC>'. Memorize each <TOPIC>. At the end "
                                "of the record, I will ask you to retrieve the first/second/third topic names. Now "
                                "the record start. ",
    "coursera": "Now you are given a very long document. Please follow the instruction based on this document. For "
                "multi-choice questions, there could be a sinlge correct option or multiple correct options. Please "
                "only provide the letter corresponding to the answer (like A or AB) when answering. ",
    "codeU": "Now you are given a code base consisting of a large amount of functions and the corresponding comments. "
             "In the end, I will call some functions defined in the code base. Please carefully read these codes and "
             "comments and answer the question.",
    "sci_fi": "Now you are given a scientific fiction. I will ask you some questions and the answer should be \"True\" "
              "or \"False\". Notice that you should answer the question based on the evidence in the document "
              "instead of your background knowledge.",
    "quality": EXAM_SYS,
    "tpo": EXAM_SYS,
}
EXAM_Q = ".  Please directly give the answer without any additional output or explanation "


def fixture(task: str) -> dict:
    return json.loads((FIXTURES / "leval" / f"{task}.jsonl").read_text().splitlines()[0])


def expected_bodies(task: str) -> tuple[str, str]:
    """(Llama-2 reference string, message body without Llama-2 tags) for document 0, question 0, by hand."""
    row = fixture(task)
    doc, inst = row["input"], row["instructions"][0]
    head = "[INST]<<SYS>>\n" + SYS[task] + "\n<</SYS>>\n\n"
    if task in ("gsm100", "codeU"):
        return head + doc + "\n\n" + inst, doc + "\n\n" + inst
    if task == "topic_retrieval_longchat":
        return head + doc + "\n\n" + inst + "[/INST]", doc + "\n\n" + inst
    exam = "Document is as follows. " + doc + " \nQuestion: " + inst + EXAM_Q
    return head + exam + "[/INST]\nAnswer:", exam + "\nAnswer:"


def le(tokenizer=None, **keys):
    return make_task(tokenizer, **{"task": "leval", "max_pe": 16384, "data_dir": LE, **keys})


def test_task_list_and_counts():
    task = le()
    assert task.subsets() == ["coursera", "quality", "topic_retrieval_longchat", "tpo", "gsm100", "codeU", "sci_fi"]
    assert task.max_new_tokens("tpo") == 512
    assert [e.id for e in task.examples("topic_retrieval_longchat")] == \
        ["d000-q00", "d000-q01", "d000-q02", "d001-q00", "d001-q01", "d001-q02"]
    assert task.expected_count("topic_retrieval_longchat") == 6
    smoke = le(test=True)  # document 0 of each task, all its questions
    assert len(smoke.examples("topic_retrieval_longchat")) == 3 and len(smoke.examples("quality")) == 1


@pytest.mark.parametrize("task", LEVAL_TASKS)
def test_messages_in_every_format(task, tok, tok3):
    llama2, user = expected_bodies(task)
    t = le(tok, prompt_format="reference")
    ex = t.examples(task)[0]
    document, truncated = t.document(task, 0)
    assert not truncated
    assert t.encode(task, document, ex.inputs) == plain(tok, llama2)
    t3 = le(tok3, prompt_format="reference", model=LLAMA3_NAME)
    assert t3.encode(task, document, ex.inputs) == rendered(tok3, llama3_render(user, SYS[task]))
    tc = le(tok3, prompt_format="chat_template", system_prompt="not used for L-Eval questions")
    assert tc.encode(task, document, ex.inputs) == rendered(tok3, llama3_render(user, SYS[task]))
    assert le(tok3, prompt_format="raw").encode(task, document, ex.inputs) == plain(tok3, SYS[task] + "\n\n" + user)


def test_reference_str_format_quirk():
    # braces in a codeU document make str.format fail: the raw message is kept
    doc = "def f():\n    return {'a': 1}"
    assert llama2_message("codeU", doc, "Q?").endswith(doc + "\n\nQ?")
    # doubled braces without single ones format successfully and change the text (as in the reference)
    assert llama2_message("gsm100", "x = {{1}}", "Q?").endswith("x = {1}\n\nQ?")
    assert body("gsm100", "x = {{1}}", "Q?", quirks=True) == "x = {1}\n\nQ?"
    assert body("gsm100", "x = {{1}}", "Q?", quirks=False) == "x = {{1}}\n\nQ?"  # other formats: literal text
    assert body("quality", "a {inst} b", "Q", quirks=False) == \
        "Document is as follows. a {inst} b \nQuestion: Q" + EXAM_Q + "\nAnswer:"


def test_routing_ignores_the_experiment_name(tok):
    a = le(tok, prompt_format="reference", exp_name="codeU-gsm-topic-sci_fi-coursera")
    b = le(tok, prompt_format="reference", exp_name="plain")
    for task in LEVAL_TASKS:
        ex = a.examples(task)[0]
        assert a.encode(task, a.document(task, 0)[0], ex.inputs) == b.encode(task, b.document(task, 0)[0], ex.inputs)


class WordTokenizer:
    """Token count = 2 per space-separated piece + BOS (hand-computable truncation)."""

    def __call__(self, text, **kw):
        return {"input_ids": [0] + [1, 2] * len(text.split(" "))}


def test_word_truncation_from_both_ends():
    words = [f"w{i}" for i in range(1000)]
    doc = " ".join(words)
    # max_prefill 400, slack 50: keep 400 pieces (801 tokens > 350), then 150 pieces (301 tokens <= 350)
    kept, truncated = word_truncate(WordTokenizer(), doc, 400, 50, 250)
    assert truncated and kept == " ".join(words[:150])
    kept, _ = word_truncate(WordTokenizer(), doc, 400, 50, 250, keep_end=True)
    assert kept == " ".join(words[-150:])
    short = " ".join(words[:100])  # 201 tokens: untouched
    assert word_truncate(WordTokenizer(), short, 400, 50, 250) == (short, False)


def test_codeu_keeps_the_end_and_others_the_start(tok):
    t = le(tok, max_pe=512 + 50 + 40)  # 40-token documents at most
    code, truncated = t.document("codeU", 0)
    full = fixture("codeU")["input"]
    assert truncated and full.endswith(code) and len(tok(code)["input_ids"]) <= 40
    prose, truncated = t.document("quality", 0)
    assert truncated and fixture("quality")["input"].startswith(prose) and len(tok(prose)["input_ids"]) <= 40


def test_sci_fi_fact_query(tok, tok3):
    inst = fixture("sci_fi")["instructions"][0]
    fact = ("Water flows uphill on Tuesdays. Answer this question based on the real-world knowledge and facts up until "
            "your last trainingPlease directly answer without any additional output or explanation. \nAnswer:")
    assert le(tok, prompt_format="reference").encode_fact(inst) == plain(tok, fact)  # Llama-2: no [INST]
    assert le(tok3, prompt_format="reference", model=LLAMA3_NAME).encode_fact(inst) == \
        rendered(tok3, llama3_render(fact, PIRATE))
    assert le(tok3, prompt_format="chat_template").encode_fact(inst) == rendered(tok3, llama3_render(fact))
    engine = FakeEngine("True")
    t = le(tok)
    rec = t.run(t.examples("sci_fi")[0], engine)
    assert rec["prediction"] == "True [fact: True]" and rec["gt"] == "True [fact: False]"
    assert [c["max_new_tokens"] for c in engine.calls] == [512, 512]
    assert engine.calls[1]["ids"] == plain(tok, fact)


def test_scoring(tok):
    t = le(tok)

    def recs(task, preds):
        exs = t.examples(task)
        return [{"prediction": p, "gt": e.references, "evaluation": "exam", "meta": e.meta}
                for e, p in zip(exs, preds)]

    assert t.score("quality", recs("quality", ["B", "C"]))["score"] == 50.0
    assert t.score("coursera", recs("coursera", ["B", "A"]))["score"] == 62.5  # 0.25 partial credit + 1
    out = t.score("topic_retrieval_longchat", recs("topic_retrieval_longchat",
                                                   ["Lighthouses", "x", "clocks", "birds", "bread", "x"]))
    assert out["score"] == pytest.approx((100 + 50 + 50) / 3, abs=1e-3)
    out = t.score("sci_fi", recs("sci_fi", ["True [fact: False]", "True [fact: False]"]))
    assert out["detail"]["sci_fi_loyalty"]["exact_match"] == 50.0 and out["score"] == 75.0
    assert t.score("gsm100", recs("gsm100", ["so The answer is 3"]))["score"] == 100.0
