"""LongBench: exact prompts per dataset and format, middle truncation, generation settings, scoring, subsets."""

from __future__ import annotations

import pytest

from harness.core.errors import ConfigError
from harness.tasks._common import middle_truncate, table
from harness.tasks.longbench import LONGBENCH_E, LONGBENCH_EN, LONGBENCH_ZH
from harness.tasks.prompting import REFERENCE_LLAMA3_SYSTEM, newline_token_id
from tests.tasks.conftest import (
    FIXTURES,
    LLAMA3_NAME,
    FakeEngine,
    llama3_render,
    make_task,
    plain,
    rendered,
)

LB = str(FIXTURES / "longbench")
QA_HEAD = ("Answer the question based on the given passages. Only give me the answer and do not output any other "
           "words.\n\n")
QA_MID = ("\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other "
          "words.\n\nQuestion: ")
QASPER_RULES = ("as concisely as you can, using a single phrase or sentence if possible. If the question cannot be "
                "answered based on the information in the article, write \"unanswerable\". If the question is a "
                "yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.")
ZH_CTX = "灯塔看守人每天晚上数经过北角的船只。"


def multi(ds: str) -> str:
    return (QA_HEAD + "The following are given passages.\nPassage 1:\nCTX-" + ds + " The mill stands in Arden.\n"
            "Passage 2:\nArden is in the north." + QA_MID + "Q-" + ds + ": Where does the mill stand?\nAnswer:")


# Fixture example 0 of every dataset, filled into the §7.1 templates by hand.
EXPECTED = {
    "narrativeqa": "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
                   "question asconcisely as you can, using a single phrase if possible. Do not provide any "
                   "explanation.\n\nStory: CTX-narrativeqa: The keeper's dog was called Pepper.\n\nNow, answer the "
                   "question based on the story asconcisely as you can, using a single phrase if possible. Do not "
                   "provide any explanation.\n\nQuestion: Q-narrativeqa: What was the dog called?\n\nAnswer:",
    "qasper": "You are given a scientific article and a question. Answer the question " + QASPER_RULES +
              "\n\nArticle: CTX-qasper: The keeper's dog was called Pepper.\n\n Answer the question based on the "
              "above article " + QASPER_RULES + "\n\nQuestion: Q-qasper: What was the dog called?\n\nAnswer:",
    "multifieldqa_en": "Read the following text and answer briefly.\n\nCTX-multifieldqa_en: The keeper's dog was "
                       "called Pepper.\n\nNow, answer the following question based on the above text, only give me "
                       "the answer and do not output any other words.\n\nQuestion: Q-multifieldqa_en: What was the "
                       "dog called?\nAnswer:",
    "hotpotqa": multi("hotpotqa"),
    "2wikimqa": multi("2wikimqa"),
    "musique": multi("musique"),
    "gov_report": "You are given a report by a government agency. Write a one-page summary of the report.\n\n"
                  "Report:\nCTX-gov_report: The agency reviewed 12 bridges and found 3 unsafe.\n\nNow, write a "
                  "one-page summary of the report.\n\nSummary:",
    "qmsum": "You are given a meeting transcript and a query containing a question or instruction. Answer the query "
             "in one or more sentences.\n\nTranscript:\nCTX-qmsum: Anna: we need a new budget. Ben: agreed.\n\nNow, "
             "answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: Q-qmsum: "
             "What did they agree on?\nAnswer:",
    "multi_news": "You are given several news passages. Write a one-page summary of all news. \n\nNews:\nCTX-"
                  "multi_news: The agency reviewed 12 bridges and found 3 unsafe.\n\nNow, write a one-page summary "
                  "of all the news.\n\nSummary:",
    "trec": "Please determine the type of the question below. Here are some examples of questions.\n\nQuestion: What "
            "city is the capital of France?\nType: City\nQuestion: Who wrote Hamlet?\nType: Individual\nQuestion: "
            "When did the war end?\nType:",
    "triviaqa": "Answer the question based on the given passage. Only give me the answer and do not output any other "
                "words. The following are some examples.\n\nPassage: The Nile is long.\nQuestion: Which river is "
                "long?\nAnswer: The Nile\n\nPassage: Everest is high.\nQuestion: Which mountain is high?\nAnswer:",
    "samsum": "Summarize the dialogue into a few short sentences. The following are some examples.\n\nDialogue: Ann: "
              "lunch? Bob: yes, at noon.\nSummary: Ann and Bob will have lunch at noon.\n\nDialogue: Cy: movie "
              "tonight? Di: sure.\nSummary:",
    "passage_count": "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please "
                     "carefully read these paragraphs and determine how many unique paragraphs there are after "
                     "removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n"
                     "Paragraph 1: The cat sleeps.\n\nParagraph 2: The dog runs.\n\nParagraph 3: The cat sleeps.\n\n"
                     "Please enter the final count of unique paragraphs after removing duplicates. The output format "
                     "should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",
    "passage_retrieval_en": "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which "
                            "paragraph the abstract is from.\n\nParagraph 1: The mill burned in 1850.\n\nParagraph 2: "
                            "The bridge was built in 1900.\n\nThe following is an abstract.\n\nA bridge was "
                            "constructed at the turn of the century.\n\nPlease enter the number of the paragraph that "
                            "the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", "
                            "etc.\n\nThe answer is: ",
    "lcc": "Please complete the code given below. \ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n"
           "Next line of code:\n",
    "repobench-p": "Please complete the code given below. \n# path: util/math.py\ndef mul(a, b):\n    return a * b\n"
                   "# path: main.py\nfrom util.math import mul\nresult = Next line of code:\n",
    "multifieldqa_zh": "阅读以下文字并用中文简短回答：\n\n" + ZH_CTX + "CTX-multifieldqa_zh：狗叫胡椒。\n\n"
                       "现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n"
                       "问题：Q-multifieldqa_zh：狗叫什么？\n回答：",
    "dureader": "请基于给定的文章回答下述问题。\n\n文章：" + ZH_CTX + "CTX-dureader：磨坊在阿登。\n\n"
                "请基于上述文章回答下面的问题。\n\n问题：Q-dureader：磨坊在哪里？\n回答：",
    "vcsum": "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n" + ZH_CTX +
             "CTX-vcsum：安娜：我们需要新预算。本：同意。\n\n会议总结：",
    "lsht": "请判断给定新闻的类别，下面是一些例子。\n\n" + ZH_CTX +
            "新闻：球队赢得了比赛。\n类别：体育\n新闻：股市今天上涨。\n类别：",
    "passage_retrieval_zh": "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n" + ZH_CTX +
                            "段落1：磨坊在1850年烧毁。\n\n段落2：桥建于1900年。\n\n下面是一个摘要\n\n"
                            "世纪之交建造了一座桥。\n\n请输入摘要所属段落的编号。"
                            "答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：",
}
MAXLEN = {"narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "multifieldqa_zh": 64, "hotpotqa": 32,
          "2wikimqa": 32, "musique": 32, "dureader": 128, "gov_report": 512, "qmsum": 512, "multi_news": 512,
          "vcsum": 512, "trec": 64, "triviaqa": 32, "samsum": 128, "lsht": 64, "passage_count": 32,
          "passage_retrieval_en": 32, "passage_retrieval_zh": 32, "lcc": 64, "repobench-p": 64}
NO_WRAP = {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}


def lb(tokenizer=None, **keys):
    base = {"task": "longbench", "max_pe": 16384, "data_dir": LB}
    return make_task(tokenizer, **{**base, **keys})


def test_tables_are_complete():
    assert set(table("longbench_dataset2prompt")) == set(EXPECTED) == set(LONGBENCH_EN + LONGBENCH_ZH)
    assert table("longbench_dataset2maxlen") == MAXLEN


def test_default_subsets_and_variants():
    assert lb().subsets() == LONGBENCH_EN and len(LONGBENCH_EN) == 16
    e = lb(task_options={"longbench_e": True}).subsets()
    assert e == [f"{n}_e" for n in LONGBENCH_E] and len(e) == 13
    assert set(LONGBENCH_ZH) <= set(lb().available_subsets())
    smoke = lb(test=True)
    assert smoke.subsets() == ["narrativeqa"] and len(smoke.examples("narrativeqa")) == 1


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_prompt_strings_and_ids_in_every_format(dataset, tok, tok3):
    task = lb(tok)
    ex = task.examples(dataset)[0]
    assert ex.inputs == EXPECTED[dataset]
    assert task.max_new_tokens(dataset) == MAXLEN[dataset]
    wrapped = dataset not in NO_WRAP
    # reference, Llama-2: "[INST]" + prompt + "[/INST]" (BOS from the tokenizer); no-wrap sets stay plain
    ids, truncated = lb(tok, prompt_format="reference").prepare(ex)
    assert not truncated
    assert ids == plain(tok, "[INST]" + EXPECTED[dataset] + "[/INST]" if wrapped else EXPECTED[dataset])
    # reference, Llama-3: chat template with the pirate system prompt
    ids, _ = lb(tok3, prompt_format="reference", model=LLAMA3_NAME).prepare(ex)
    want = rendered(tok3, llama3_render(EXPECTED[dataset], REFERENCE_LLAMA3_SYSTEM)) if wrapped \
        else plain(tok3, EXPECTED[dataset])
    assert ids == want
    # chat_template: no system prompt by default; raw: plain
    ids, _ = lb(tok3, prompt_format="chat_template").prepare(ex)
    assert ids == (rendered(tok3, llama3_render(EXPECTED[dataset])) if wrapped else plain(tok3, EXPECTED[dataset]))
    assert lb(tok3, prompt_format="raw").prepare(ex)[0] == plain(tok3, EXPECTED[dataset])


def test_longbench_e_uses_the_base_templates(tok):
    task = lb(tok, task_options={"longbench_e": True})
    ex = task.examples("qasper_e")[0]
    assert ex.inputs == EXPECTED["qasper"] and task.max_new_tokens("qasper_e") == 128


def test_truncation_budget_is_max_pe_minus_max_new_tokens_minus_50():
    # docs/reference/harness.md §2.1: max_pe 16384, narrativeqa (128) -> threshold 16206, half 8103
    assert lb().budget("narrativeqa") == 16206
    assert lb(max_pe=4096).budget("gov_report") == 4096 - 512 - 50


def test_middle_truncation_keeps_half_from_each_end(tok):
    prompt = lb(tok).examples("narrativeqa")[1].inputs  # the long fixture example
    ids = tok(prompt)["input_ids"]
    n = len(ids)
    assert middle_truncate(tok, prompt, n) == (prompt, False)  # exactly at the budget: untouched
    text, truncated = middle_truncate(tok, prompt, n - 1)
    half = (n - 1) // 2
    assert truncated and text == tok.decode(ids[:half], skip_special_tokens=True) + \
        tok.decode(ids[-half:], skip_special_tokens=True)
    budget = 101
    text, _ = middle_truncate(tok, prompt, budget)
    assert text.startswith(tok.decode(ids[1:50])) and text.endswith(tok.decode(ids[-50:]))  # BOS + 49 | 50
    assert abs(len(tok(text)["input_ids"]) - 100) <= 3  # re-tokenised: approximately 2 * half


def test_task_truncates_to_the_budget(tok):
    # max_pe 250, max_new_tokens 16, slack 50 -> budget 184 tokens of plain prompt
    task = lb(tok, max_pe=250, prompt_format="raw", task_options={"max_new_tokens": 16})
    assert task.budget("narrativeqa") == 184
    ids, truncated = task.prepare(task.examples("narrativeqa")[1])
    assert truncated and abs(len(ids) - 184) <= 3


def test_too_small_max_pe_is_a_config_error():
    with pytest.raises(ConfigError, match="max_pe"):
        lb(max_pe=500, subsets=["gov_report"])  # 500 - 512 - 50 < 0
    with pytest.raises(ConfigError, match="max_pe"):
        make_task(task="longbench")


def test_generation_settings(tok3):
    engine = FakeEngine("Pepper")
    task = lb(tok3)
    rec = task.run(task.examples("narrativeqa")[0], engine)
    call = engine.calls[-1]
    assert call["max_new_tokens"] == 128 and call["min_new_tokens"] == 0
    assert tok3.convert_tokens_to_ids("<|eot_id|>") in call["stop_ids"] and newline_token_id(tok3) not in \
        call["stop_ids"]
    assert rec["answers"] == ["Pepper"] and rec["length"] == 40 and rec["prompt_len"] == len(call["ids"])
    task.run(task.examples("samsum")[0], engine)  # samsum: newline stops, at least one new token
    assert newline_token_id(tok3) in engine.calls[-1]["stop_ids"] and engine.calls[-1]["min_new_tokens"] == 1
    rec = task.run(task.examples("trec")[0], engine)
    assert rec["all_classes"][:3] == ["Abbreviation", "Animal", "City"]


def test_scoring_uses_the_official_metrics(tok):
    task = lb(tok)
    recs = [{"prediction": "Pepper.", "answers": ["Pepper"], "meta": {"index": 0}},
            {"prediction": "salt", "answers": ["Pepper"], "meta": {"index": 1}}]
    assert task.score("narrativeqa", recs)["score"] == 50.0
    classes = ["City", "Date", "Number"]
    recs = [{"prediction": "Date\nmore", "answers": ["Date"], "all_classes": classes, "meta": {"index": 0}},
            {"prediction": "City or Date", "answers": ["Date"], "all_classes": classes, "meta": {"index": 1}}]
    assert task.score("trec", recs)["score"] == 75.0  # 1 + 1/2 (two classes named)
    recs = [{"prediction": "2", "answers": ["2"], "length": 2500, "meta": {"index": 0}},
            {"prediction": "3", "answers": ["2"], "length": 9500, "meta": {"index": 1}}]
    out = task.score("passage_count_e", recs)
    assert out["score"] == 50.0 and out["buckets"] == {"0-4k": 100.0, "4-8k": None, "8k+": 0.0}


def test_expected_counts(tmp_path):
    assert lb().expected_count("narrativeqa") == 2  # the file's count
    missing = lb(data_dir=str(tmp_path / "nowhere"))
    assert missing.expected_count("narrativeqa") == 200 and missing.expected_count("lcc") == 500
    assert missing.expected_count("multifieldqa_en") == 150
    assert lb(test=True).expected_count("narrativeqa") == 1


def test_ids_are_stable_and_unique():
    task = lb()
    ids = [e.id for e in task.examples("trec")]
    assert ids == ["fx-trec-0", "fx-trec-1"] == [e.id for e in lb().examples("trec")]


def test_reference_format_needs_a_llama_chat_model(tok):
    with pytest.raises(ConfigError, match="prompt_format"):
        lb(tok, prompt_format="reference", model="/models/other").prepare(lb(tok).examples("qasper")[0])
