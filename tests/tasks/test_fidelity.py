"""Fidelity to the references (issue [Q]) on hand-made files in the official schemas: L-Eval brace documents, the
exact word-cut loop, JSONL with Unicode line separators, transformers-4.46 decode clean-up, the upstream-LongBench
prompt format. One bad example's prompt or score becomes an error record; the run and gali-eval go on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from harness.cli.evaluate import main as eval_main
from harness.cli.run import main as run_main
from harness.core.errors import ConfigError
from harness.core.results import ExperimentDir, iter_jsonl
from harness.tasks._common import clean_up_spaces, middle_truncate, word_truncate
from harness.tasks.leval import LEval, body, llama2_message
from harness.tasks.longbench import longbench_max_length
from harness.tasks.prompting import encode_prompt, longbench_family
from tests.tasks.conftest import LLAMA2_NAME, LLAMA3_NAME, llama3_render, make_task, plain, rendered

GSM_SYS = ("Given several question answer pairs, you need to follow a similar format to answer the last question. "
           "Make sure the response is end with The answer is _ . ")
EXAM_TAIL = ".  Please directly give the answer without any additional output or explanation "


def leval_row(document: str, questions: list[str], answers: list[str]) -> dict:
    """One line of an L-Eval closed-ended file (official schema)."""
    return {"input": document, "instructions": questions, "outputs": answers, "source": "hand-made",
            "evaluation": "exam"}


def longbench_row(dataset: str, context: str, question: str, answers: list[str], i: int = 0) -> dict:
    """One line of a LongBench data file (official schema)."""
    return {"input": question, "context": context, "answers": answers, "length": len(context.split()),
            "dataset": dataset, "language": "en", "all_classes": None, "_id": f"hm-{dataset}-{i}"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """JSONL as the official files are written: ensure_ascii=False (U+2028/U+2029/U+0085 stay raw), one row a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- 1. a brace pattern in an L-Eval document ---------------------------------------------------------------------

BRACE_DOCS = ["x = '{inst[key]}'\nprint(x)", "last = {document[-1]}", "the topic of {document[0:5]}.",
              "a {b} c", "lone { brace", "d = {'a': 1}"]


@pytest.mark.parametrize("doc", BRACE_DOCS)
def test_brace_documents_fall_back_to_the_unformatted_message(doc, tok, tok3, tmp_path):
    inst = "What is printed?"
    head = "[INST]<<SYS>>\n" + GSM_SYS + "\n<</SYS>>\n\n"
    assert llama2_message("gsm100", doc, inst) == head + doc + "\n\n" + inst  # str.format raised: message as built
    # the exam template holds placeholders, not the document: it formats, and the document goes in literally
    assert llama2_message("quality", doc, inst).endswith("Document is as follows. " + doc + " \nQuestion: " + inst +
                                                         EXAM_TAIL + "[/INST]\nAnswer:")
    assert body("gsm100", doc, inst, quirks=True) == doc + "\n\n" + inst
    write_jsonl(tmp_path / "gsm100.jsonl", [leval_row(doc, [inst], ["The answer is 3"])])
    t2 = make_task(tok, task="leval", max_pe=16384, data_dir=str(tmp_path), prompt_format="reference")
    assert t2.encode("gsm100", t2.document("gsm100", 0)[0], inst) == plain(tok, head + doc + "\n\n" + inst)
    t3 = make_task(tok3, task="leval", max_pe=16384, data_dir=str(tmp_path), prompt_format="reference",
                   model=LLAMA3_NAME)
    assert t3.encode("gsm100", doc, inst) == rendered(tok3, llama3_render(doc + "\n\n" + inst, GSM_SYS))


def _leval_cfg(tmp_path: Path, model: Path, data: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'task = "leval"\nmodel = "{model}"\nmethod = "original"\nexp_name = "{name}"\n'
                    f'results_dir = "{tmp_path / "results"}"\nmax_pe = 300\ndata_dir = "{data}"\n'
                    'prompt_format = "reference"\nsubsets = ["gsm100"]\n[task_options]\nmax_new_tokens = 2\n')
    return path


def test_one_bad_prompt_or_score_is_an_error_record_and_the_run_goes_on(tmp_path, tiny_model_dir, monkeypatch,
                                                                       caplog, capsys):
    from transformers import AutoTokenizer

    model = tmp_path / "Llama-2-tiny"  # the reference decides the Llama-2 layout by this substring of the name
    model.symlink_to(tiny_model_dir, target_is_directory=True)
    data = tmp_path / "data"
    docs = ["x = '{inst[key]}'", "last = {document[-1]}", "plain words"]
    write_jsonl(data / "gsm100.jsonl", [leval_row(d, ["Q?"], ["The answer is 1"]) for d in docs])
    cfg = _leval_cfg(tmp_path, model, data, "braces")
    assert run_main(["--cfg", str(cfg)]) == 0  # brace documents: no exception, no error record
    exp = ExperimentDir(tmp_path / "results", "braces")
    recs = {r["id"]: r for r in iter_jsonl(exp.predictions_path("gsm100"))}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    head = "[INST]<<SYS>>\n" + GSM_SYS + "\n<</SYS>>\n\n"
    assert [recs[f"d{d:03d}-q00"]["prompt_len"] for d in range(3)] == \
        [len(plain(tok, head + d + "\n\nQ?")) for d in docs]

    original = LEval.encode

    def broken(self, task, document, inst):
        if document.startswith("last"):
            raise TypeError("simulated prompt failure")
        return original(self, task, document, inst)

    monkeypatch.setattr(LEval, "encode", broken)
    cfg = _leval_cfg(tmp_path, model, data, "bad-prompt")
    assert run_main(["--cfg", str(cfg), "--dry-run"]) == 0
    plan = capsys.readouterr().out.split("# plan")[1]
    assert "gsm100: 3 examples tokens min/median/max=" in plan and "max_new_tokens=2 prompt_errors=1" in plan
    assert run_main(["--cfg", str(cfg)]) == 1  # finished, with errors
    exp = ExperimentDir(tmp_path / "results", "bad-prompt")
    recs = {r["id"]: r for r in iter_jsonl(exp.predictions_path("gsm100"))}
    assert recs["d001-q00"]["error"] == "TypeError: simulated prompt failure"
    assert "error" not in recs["d000-q00"] and "error" not in recs["d002-q00"]
    # a record that cannot be scored (prediction not a string) is a scoring error, the others are scored
    with exp.predictions_path("gsm100").open("a") as f:
        f.write(json.dumps({**recs["d002-q00"], "id": "d002-q00", "prediction": None}) + "\n")
    with caplog.at_level(logging.INFO, logger="harness"):
        assert eval_main(["--all", "--results-dir", str(tmp_path / "results")]) == 0
    m = json.loads(exp.scores_path.read_text())["subsets"]["gsm100"]
    assert (m["n_scored"], m["n_errors"], m["n_scoring_errors"]) == (1, 2, 1)
    assert m["scoring_errors"][0]["id"] == "d002-q00" and not m["complete"]
    assert "gsm100=" in caplog.text and "(2 errors)" in caplog.text


# ---- 2. L-Eval word cut with a negative count ---------------------------------------------------------------------


class OneTokenPerWord:
    """BOS + one token per space-separated piece (hand-computable counts)."""

    def __call__(self, text, **kw):
        return {"input_ids": [0] + [1] * len(text.split(" ")) if text else [0]}


def test_word_cut_keeps_slicing_with_a_negative_count(tmp_path):
    words = [f"w{i}" for i in range(160)]
    # max_pe 712: max_prefill 200, limit 150. cnt 0 keeps [:200] (all 160: 161 tokens), cnt 250 keeps [:-50]
    write_jsonl(tmp_path / "quality.jsonl", [leval_row(" ".join(words), ["Q"], ["A"])])
    write_jsonl(tmp_path / "codeU.jsonl", [leval_row(" ".join(words), ["Q"], ["A"])])
    t = make_task(OneTokenPerWord(), task="leval", max_pe=712, data_dir=str(tmp_path))
    assert t.document("quality", 0) == (" ".join(words[:110]), True)
    assert t.document("codeU", 0) == (" ".join(words[50:]), True)  # [cnt - max_prefill:] = [50:]


def test_word_cut_slices_like_python_at_zero_and_beyond():
    tok, words = OneTokenPerWord(), [f"w{i}" for i in range(600)]
    doc = " ".join(words)
    # max_prefill 500, limit 40: [:500] 500 words, [:250] 250, [:0] nothing left
    assert word_truncate(tok, doc, 500, 460, 250) == ("", True)
    # codeU: [-500:] 500 words, [-250:] 250, [0:] all 250 kept, [250:] nothing left
    assert word_truncate(tok, doc, 500, 460, 250, keep_end=True) == ("", True)
    # limit 300 with step 100: [:500], [:400], [:300] -> 300 words = 301 tokens, [:200] -> 200 words
    assert word_truncate(tok, doc, 500, 200, 100) == (" ".join(words[:200]), True)
    # a negative count that leaves words: 300 words, max_prefill 100, limit 60, step 150: [:100] 100 words
    # (101 > 60), [:-50] 50 words (51 <= 60)
    assert word_truncate(tok, " ".join(words[:300]), 100, 40, 150) == (" ".join(words[:50]), True)
    assert word_truncate(tok, " ".join(words[:300]), 100, 40, 150, keep_end=True) == (" ".join(words[250:300]), True)


# ---- 3. JSONL with raw U+2028 / U+2029 / U+0085 inside strings ---------------------------------------------------

SEPARATORS = "\u2028\u2029\u0085"


def test_unicode_line_separators_stay_inside_their_strings(tmp_path):
    ctx = f"First line{SEPARATORS[0]}second line{SEPARATORS[1]}third{SEPARATORS[2]}end."
    lb = tmp_path / "lb"
    write_jsonl(lb / "narrativeqa.jsonl", [longbench_row("narrativeqa", ctx, "Who?", ["Mara"], i) for i in range(2)])
    raw = (lb / "narrativeqa.jsonl").read_text(encoding="utf-8")
    assert all(ch in raw for ch in SEPARATORS) and len(raw.splitlines()) > 2  # splitlines would cut these rows
    examples = make_task(task="longbench", max_pe=4096, data_dir=str(lb)).examples("narrativeqa")
    assert len(examples) == 2 and f"Story: {ctx}\n\n" in examples[0].inputs
    le = tmp_path / "le"
    doc = f"A document{SEPARATORS[1]}with{SEPARATORS[2]}separators{SEPARATORS[0]}."
    write_jsonl(le / "quality.jsonl", [leval_row(doc, ["Q1", "Q2"], ["A", "B"])])
    task = make_task(task="leval", max_pe=16384, data_dir=str(le))
    assert [e.id for e in task.examples("quality")] == ["d000-q00", "d000-q01"]
    assert task.rows("quality")[0]["input"] == doc


# ---- 4. decode spacing of the truncated halves -------------------------------------------------------------------


def test_clean_up_is_the_transformers_4_rule():
    assert clean_up_spaces("I 'm sure , a != b [1 , 2] end .") == "I'm sure, a!= b [1, 2] end."
    assert clean_up_spaces("do n't , they 're , we 've , it 's ? ok ! ' x ' ") == \
        "don't, they're, we've, it's? ok!'x'"


@pytest.fixture
def tok3_cleanup(tok3):
    import copy

    t = copy.deepcopy(tok3)
    t.clean_up_tokenization_spaces = True  # as Llama-3's tokenizer_config.json sets it
    return t


def test_reference_truncation_applies_the_tokenizers_clean_up(tok3_cleanup, tok2, tmp_path):
    head, tail = "I 'm sure , a != b [1 , 2] end .", "You 're right , x ?"
    prompt = head + " filler" * 300 + " " + tail
    for clean_up, tok, want in ((True, tok3_cleanup, ("I'm sure, a!= b [1, 2] end.", "You're right, x?")),
                                (False, tok3_cleanup, (head, tail)),
                                (True, tok2, (head, tail))):  # the flag is off (Llama-2): nothing to clean
        text, truncated = middle_truncate(tok, prompt, 120, clean_up=clean_up)
        assert truncated and text.startswith(want[0]) and text.endswith(want[1]) and "filler" in text
    context = "I 'm sure , it 's x ." + " filler" * 600 + " You 're right ."
    write_jsonl(tmp_path / "narrativeqa.jsonl", [longbench_row("narrativeqa", context, "Who ?", ["x"])])
    for fmt, want in (("reference", ("Story: I'm sure, it's x.", "You're right.\n\nNow", "Question: Who?\n")),
                      ("chat_template", ("Story: I 'm sure , it 's x .", "You 're right .", "Question: Who ?"))):
        task = make_task(tok3_cleanup, task="longbench", max_pe=600, model=LLAMA3_NAME, prompt_format=fmt,
                         data_dir=str(tmp_path))
        ids, truncated = task.prepare(task.examples("narrativeqa")[0])
        text = tok3_cleanup.decode(ids, clean_up_tokenization_spaces=False)
        assert truncated and all(w in text for w in want), (fmt, text)


class EchoEngine:
    """Generates the tokens of a fixed text (the engine's own text is that text, decoded without clean-up)."""

    model = None

    def __init__(self, tokenizer, text: str):
        self.ids, self.text = tokenizer(text, add_special_tokens=False)["input_ids"], text

    def generate(self, ids, max_new_tokens, stop_ids=(), min_new_tokens=0):
        from harness.model.engine import Generation

        return Generation(list(self.ids), self.text, len(ids), 0.0, 0.0)


def test_reference_predictions_are_decoded_with_the_clean_up(tok3_cleanup):
    from tests.tasks.conftest import FIXTURES

    said = "I 'm sure , it 's True ."
    for fmt, want in (("reference", "I'm sure, it's True."), ("chat_template", said)):
        lb = make_task(tok3_cleanup, task="longbench", max_pe=4096, model=LLAMA3_NAME, prompt_format=fmt,
                       data_dir=str(FIXTURES / "longbench"))
        assert lb.run(lb.examples("narrativeqa")[0], EchoEngine(tok3_cleanup, said))["prediction"] == want
        le = make_task(tok3_cleanup, task="leval", max_pe=16384, model=LLAMA3_NAME, prompt_format=fmt,
                       data_dir=str(FIXTURES / "leval"))
        rec = le.run(le.examples("sci_fi")[0], EchoEngine(tok3_cleanup, said))
        assert rec["prediction"] == f"{want} [fact: {want}]" and rec["fact_prediction"] == want


# ---- 5. the upstream-LongBench prompt format -----------------------------------------------------------------------

MODEL2MAXLEN = {  # THUDM/LongBench config/model2maxlen.json with each model's window in tokens
    "llama2-7b-chat-4k": (3500, 4096), "longchat-v1.5-7b-32k": (31500, 32768), "xgen-7b-8k": (7500, 8192),
    "internlm-7b-8k": (7500, 8192), "chatglm2-6b-32k": (31500, 32768), "vicuna-v1.5-7b-16k": (15500, 16384),
}


@pytest.mark.parametrize("name", sorted(MODEL2MAXLEN))
def test_longbench_max_length_reproduces_model2maxlen(name):
    maxlen, window = MODEL2MAXLEN[name]
    assert longbench_max_length(window) == maxlen


@pytest.mark.parametrize("model, wrapped", [
    (LLAMA2_NAME, "[INST]{p}[/INST]"),
    ("lmsys/vicuna-7b-v1.5-16k", "A chat between a curious user and an artificial intelligence assistant. The "
     "assistant gives helpful, detailed, and polite answers to the user's questions. USER: {p} ASSISTANT:"),
    ("lmsys/longchat-7b-v1.5-32k", "A chat between a curious user and an artificial intelligence assistant. The "
     "assistant gives helpful, detailed, and polite answers to the user's questions. USER: {p} ASSISTANT:"),
    ("Salesforce/xgen-7b-8k-inst", "A chat between a curious human and an artificial intelligence assistant. The "
     "assistant gives helpful, detailed, and polite answers to the human's questions.\n\n ### Human: {p}\n###"),
    ("internlm/internlm-chat-7b-8k", "<|User|>:{p}<eoh>\n<|Bot|>:"),
    (LLAMA3_NAME, "{p}"),  # no build_chat branch in pred.py: sent as is
])
def test_longbench_format_builds_chat_per_family(model, wrapped, tok3):
    prompt = "Read {this} and answer."
    assert encode_prompt(tok3, prompt, "longbench", model, "narrativeqa") == \
        plain(tok3, wrapped.replace("{p}", prompt))
    assert encode_prompt(tok3, prompt, "longbench", model, "lcc") == plain(tok3, prompt)  # no-wrap datasets


def test_longbench_format_truncates_to_max_length_and_refuses_what_it_cannot_build(tok, tmp_path):
    rows = [longbench_row("gov_report", "word " * 400, "", ["summary"])]
    write_jsonl(tmp_path / "gov_report.jsonl", rows)
    task = make_task(tok, task="longbench", max_pe=4096, prompt_format="longbench", data_dir=str(tmp_path))
    assert task.budget("gov_report") == task.budget("trec") == 3500  # no generation budget, no slack
    small = make_task(tok, task="longbench", max_pe=4096, prompt_format="longbench", data_dir=str(tmp_path),
                      task_options={"max_length": 100})
    ex = small.examples("gov_report")[0]
    text, truncated = middle_truncate(tok, ex.inputs, 100)
    ids, _ = small.prepare(ex)
    assert truncated and ids == plain(tok, "[INST]" + text + "[/INST]")
    assert longbench_family("THUDM/chatglm3-6b-32k") == "chatglm"
    with pytest.raises(ConfigError, match="ChatGLM"):
        encode_prompt(tok, "x", "longbench", "THUDM/chatglm3-6b-32k", "narrativeqa")
    with pytest.raises(ConfigError, match="L-Eval"):
        make_task(tok, task="leval", max_pe=16384, prompt_format="longbench")
