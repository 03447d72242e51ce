"""PG19 perplexity: every token of the prefix scored, equal to a direct full forward; safe NLL storage; sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli.evaluate import main as eval_main
from harness.cli.run import main as run_main
from harness.core.errors import ConfigError, DataError
from harness.core.results import ExperimentDir, iter_jsonl
from harness.tasks.pg19 import load_npz_nll
from tests.tasks.conftest import FIXTURES, make_task

PG = str(FIXTURES / "pg19")


def pg(tokenizer=None, **keys):
    return make_task(tokenizer, **{"task": "pg19", "max_pe": 200, "data_dir": PG, **keys})


def test_documents_and_prefix_tokens(tok):
    task = pg(tok)
    exs = task.examples("pg19")
    assert [e.id for e in exs] == ["00_the_lighthouse", "01_the_mill", "02_the_clockmaker"]
    ids = task.tokens(exs[0])
    assert ids == tok(exs[0].inputs)["input_ids"][:199] and ids[0] == tok.bos_token_id  # first max_pe - 1, BOS incl.
    big = pg(tok, max_pe=40)  # the text is much longer than 16 * (39 + 64) characters: prefix tokenisation
    assert big.tokens(exs[1]) == tok(exs[1].inputs)["input_ids"][:39]
    assert pg(test=True).examples("pg19")[0].id == "00_the_lighthouse" and len(pg(test=True).examples("pg19")) == 1


def test_text_files_and_python_heldout_sources(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    task = pg(task_options={"text_files": [str(tmp_path / "*.txt")]})
    assert task.subsets() == ["text_files"] and [e.inputs for e in task.examples("text_files")] == ["first", "second"]
    with pytest.raises(DataError, match="matches no file"):
        pg(task_options={"text_files": [str(tmp_path / "*.md")]}).examples("text_files")
    held = pg(task_options={"source": "python_heldout"})
    docs = held.examples("python_heldout")
    assert docs and all(e.inputs for e in docs) and len({e.id for e in docs}) == len(docs)
    assert any(e.id.startswith("pydoc-") for e in docs)


def test_min_chars_keeps_only_long_enough_documents(tmp_path):
    (tmp_path / "short.txt").write_text("x" * 99)
    (tmp_path / "long.txt").write_text("y" * 100)
    files = [str(tmp_path / "*.txt")]
    task = pg(task_options={"text_files": files, "min_chars": 100})
    assert [e.inputs for e in task.examples("text_files")] == ["y" * 100]
    with pytest.raises(ConfigError, match="min_chars"):
        pg(task_options={"text_files": files, "min_chars": 101}).examples("text_files")


def test_options_are_validated():
    with pytest.raises(ConfigError, match="ppl_lengths"):
        pg(task_options={"ppl_lengths": [256]})  # max_pe 200 scores 198 tokens
    with pytest.raises(ConfigError, match="max_pe"):
        make_task(task="pg19")


def direct_nll(model_dir: Path, ids: list[int]) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return (-logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]).numpy()


@pytest.mark.parametrize("stride", [None, 37])
def test_harness_nll_equals_a_direct_forward_over_every_token(tmp_path, tiny_model_dir, stride):
    results = tmp_path / "results"
    cfg = tmp_path / "pg.toml"
    cfg.write_text(f'task = "pg19"\nmodel = "{tiny_model_dir}"\nmethod = "original"\nexp_name = "pg"\n'
                   f'max_pe = 150\nresults_dir = "{results}"\ndata_dir = "{PG}"\nmax_examples = 2\n'
                   + (f"stride = {stride}\n" if stride else "") + "[task_options]\nppl_lengths = [32, 64, 148]\n")
    assert run_main(["--cfg", str(cfg)]) == 0
    exp = ExperimentDir(results, "pg")
    recs = list(iter_jsonl(exp.predictions_path("pg19")))
    assert len(recs) == 2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for rec in recs:
        text = (FIXTURES / "pg19" / f"{rec['id']}.txt").read_text()
        ids = tok(text)["input_ids"][:149]
        nll = load_npz_nll(exp.path / rec["nll_file"])
        assert rec["prompt_len"] == 149 and nll.shape == (148,) == (rec["n_scored"],)  # every token after BOS
        np.testing.assert_allclose(nll, direct_nll(tiny_model_dir, ids), rtol=1e-4, atol=1e-4)
        assert rec["mean_nll"] == pytest.approx(float(nll.mean()), abs=1e-5)
    assert eval_main(["--all", "--results-dir", str(results)]) == 0
    scores = json.loads(exp.scores_path.read_text())["subsets"]["pg19"]
    arrays = [load_npz_nll(exp.path / r["nll_file"]).astype(np.float64) for r in recs]
    want = np.exp(np.mean([a[:64].mean() for a in arrays]))  # token-weighted PPL at 64: both docs have 148 NLLs
    assert scores["ppl"]["64"]["ppl_token_weighted"] == pytest.approx(want, rel=1e-6)
    assert scores["score_length"] == 148 and scores["tokens_scored"] == 296


def test_nll_files_are_plain_arrays(tmp_path):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, nll=np.arange(3, dtype=np.float32))
    assert load_npz_nll(path).tolist() == [0.0, 1.0, 2.0]
    task = pg()
    with pytest.raises(DataError, match="missing"):
        task.load_nll({"id": "x", "nll_file": "nll/pg19/none.npz"})
