"""Data location: local data_dir, the Hugging Face cache (fake, offline), clear messages, the gali-data command."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from harness.cli.data import main as data_main
from harness.core.errors import DataError
from harness.tasks import datasets as data
from tests.tasks.conftest import FIXTURES, make_task

COMMIT = "0" * 40


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty HF hub cache, offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def put_in_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """Lay files out as huggingface_hub does (refs/main -> snapshots/<commit>/...)."""
    root = cache / f"datasets--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    for name, blob in files.items():
        path = root / "snapshots" / COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)


@pytest.fixture
def full_cache(empty_cache, tmp_path):
    """The fixtures as the published files: LongBench data.zip, L-Eval JSONL, a PG19 parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((FIXTURES / "longbench").glob("*.jsonl")):
            zf.write(f, f"data/{f.name}")
    put_in_cache(empty_cache, "THUDM/LongBench", {"data.zip": zpath.read_bytes()})
    put_in_cache(empty_cache, "L4NLP/LEval", {f"LEval/Exam/{f.name}": f.read_bytes()
                                               for f in (FIXTURES / "leval").glob("*.jsonl")})
    books = sorted((FIXTURES / "pg19").glob("*.txt"))
    table = pa.table({"short_book_title": [b.stem for b in books], "text": [b.read_text() for b in books]})
    pq.write_table(table, tmp_path / "pg.parquet")
    put_in_cache(empty_cache, "emozilla/pg19-test", {"data/test-00000-of-00001.parquet":
                                                     (tmp_path / "pg.parquet").read_bytes()})
    put_ruler_and_longbench_v2(empty_cache, tmp_path)
    return empty_cache


def put_ruler_and_longbench_v2(cache: Path, tmp_path: Path) -> None:
    """RULER's QA sets as the hub holds them (SQuAD parquet rows, HotpotQA JSON at its pinned commit) and the
    LongBench v2 data.json, from the fixtures."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.tasks import _ruler_data as R

    squad = json.loads((FIXTURES / "ruler" / "squad.json").read_text())
    rows = [{"id": q["id"], "title": a["title"], "context": p["context"], "question": q["question"],
             "answers": {"text": [x["text"] for x in q["answers"]],
                         "answer_start": [x["answer_start"] for x in q["answers"]]}}
            for a in squad["data"] for p in a["paragraphs"] for q in p["qas"]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "squad.parquet")
    put_in_cache(cache, R.SQUAD_REPO, {"squad_v2/validation-00000-of-00001.parquet":
                                       (tmp_path / "squad.parquet").read_bytes()})
    hotpot = cache / f"datasets--{R.HOTPOTQA_REPO.replace('/', '--')}" / "snapshots" / R.HOTPOTQA_REVISION
    hotpot.mkdir(parents=True)
    (hotpot / R.HOTPOTQA_FILE).write_bytes((FIXTURES / "ruler" / "hotpotqa.json").read_bytes())
    put_in_cache(cache, "THUDM/LongBench-v2", {"data.json": (FIXTURES / "longbench_v2" / "data.json").read_bytes()})


def test_missing_data_offline_says_what_to_do(empty_cache):
    with pytest.raises(DataError) as err:
        make_task(task="longbench", max_pe=4096).examples("narrativeqa")
    msg = str(err.value)
    assert "data.zip of the Hugging Face dataset THUDM/LongBench is not in the HF cache" in msg
    assert "gali-data download longbench" in msg and "data_dir" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(DataError, match=r"LEval/Exam/tpo.jsonl .*gali-data download leval"):
        make_task(task="leval", max_pe=4096).examples("tpo")
    with pytest.raises(DataError, match=r"emozilla/pg19-test.*gali-data download pg19"):
        make_task(task="pg19", max_pe=4096).examples("pg19")


def test_missing_file_in_data_dir_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        make_task(task="longbench", max_pe=4096, data_dir=str(tmp_path)).examples("qasper_e")
    msg = str(err.value)
    assert str(tmp_path / "qasper_e.jsonl") in msg and "data/qasper_e.jsonl inside data.zip" in msg
    with pytest.raises(DataError, match=f"{tmp_path / 'codeU.jsonl'} not found"):
        make_task(task="leval", max_pe=4096, data_dir=str(tmp_path)).examples("codeU")
    with pytest.raises(DataError, match=r"no \*.txt file"):
        make_task(task="pg19", max_pe=4096, data_dir=str(tmp_path)).examples("pg19")
    with pytest.raises(DataError, match="not a directory"):
        make_task(task="pg19", max_pe=4096, data_dir=str(tmp_path / "nope")).examples("pg19")


def test_malformed_jsonl_names_the_line(tmp_path):
    (tmp_path / "trec.jsonl").write_text('{"context": "c", "input": "i", "answers": ["a"]}\n{oops\n')
    with pytest.raises(DataError, match=r"trec.jsonl:2: not valid JSON"):
        make_task(task="longbench", max_pe=4096, data_dir=str(tmp_path)).examples("trec")


def test_reads_the_published_files_from_the_hf_cache(full_cache):
    local = make_task(task="longbench", max_pe=4096, data_dir=str(FIXTURES / "longbench"))
    hub = make_task(task="longbench", max_pe=4096)
    for subset in ("narrativeqa", "lsht", "repobench-p_e"):
        assert [(e.id, e.inputs) for e in hub.examples(subset)] == [(e.id, e.inputs) for e in local.examples(subset)]
    assert len(make_task(task="leval", max_pe=4096).examples("topic_retrieval_longchat")) == 6
    docs = make_task(task="pg19", max_pe=4096).examples("pg19")
    assert [d.meta["title"] for d in docs] == ["00_the_lighthouse", "01_the_mill", "02_the_clockmaker"]
    assert docs[1].inputs == (FIXTURES / "pg19" / "01_the_mill.txt").read_text()


def test_gali_data_where_and_offline_download(empty_cache, capsys):
    assert data_main(["where", "longbench", "leval"]) == 0
    out = capsys.readouterr().out
    assert "THUDM/LongBench/data.zip: not cached (gali-data download longbench)" in out
    assert "L4NLP/LEval/LEval/Exam/codeU.jsonl: not cached" in out
    assert data_main(["download", "longbench"]) == 2
    assert "gali-data download longbench" in capsys.readouterr().err
    assert data_main(["download", "needle"]) == 0  # synthetic: nothing to fetch
    assert data_main(["download", "imdb"]) == 2


def test_gali_data_download_to_a_directory(full_cache, tmp_path, capsys):
    dest = tmp_path / "offline"
    assert data_main(["download", "all", "--to", str(dest)]) == 0
    exported = (dest / "longbench" / "qasper_e.jsonl").read_bytes()
    assert exported == (FIXTURES / "longbench" / "qasper_e.jsonl").read_bytes()
    assert (dest / "leval" / "sci_fi.jsonl").is_file() and len(list((dest / "pg19").glob("*.txt"))) == 3
    lb = make_task(task="longbench", max_pe=4096, data_dir=str(dest / "longbench"))
    assert len(lb.examples("narrativeqa")) == 2
    pg = make_task(task="pg19", max_pe=4096, data_dir=str(dest / "pg19"))
    assert [d.inputs for d in pg.examples("pg19")] == [p.read_text() for p in sorted((FIXTURES / "pg19").glob("*.txt"))]
    assert data_main(["where", "pg19"]) == 0 and "not cached" not in capsys.readouterr().out
    ruler_dir = dest / "ruler"  # SQuAD rebuilt in the official schema, HotpotQA copied, PG19 books as essay text
    assert len(list(ruler_dir.glob("*.txt"))) == 3
    from harness.tasks._ruler_data import load_qa

    assert load_qa("squad", str(ruler_dir)) == load_qa("squad", str(FIXTURES / "ruler"))
    assert load_qa("hotpotqa", str(ruler_dir)) == load_qa("hotpotqa", str(FIXTURES / "ruler"))
    assert load_qa("squad", None) == load_qa("squad", str(FIXTURES / "ruler"))  # read from the hub parquet
    lb2 = make_task(task="longbench_v2", max_pe=4096, data_dir=str(dest / "longbench_v2"))
    assert len(lb2.examples("longbench_v2")) == 6


def test_repo_ids_come_from_the_config(full_cache, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('task = "longbench"\nmodel = "m"\nmethod = "original"\nmax_pe = 4096\n'
                   '[task_options]\nrepo_id = "someone/LongBench-copy"\n')
    assert data_main(["download", "longbench", "--cfg", str(cfg)]) == 2  # that repo is not cached
    assert data.cached_file("THUDM/LongBench", "data.zip") is not None


def test_gali_run_without_data_stops_with_the_message(empty_cache, tmp_path, tiny_model_dir, capsys):
    from harness.cli.run import main as run_main

    cfg = tmp_path / "lb.toml"
    cfg.write_text(f'task = "longbench"\nmodel = "{tiny_model_dir}"\nmethod = "original"\nexp_name = "lb"\n'
                   f'max_pe = 4096\nresults_dir = "{tmp_path / "results"}"\n')
    assert run_main(["--cfg", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "error: LongBench data: data.zip of the Hugging Face dataset THUDM/LongBench is not in the HF cache" in err
    assert "gali-data download longbench" in err and "Traceback" not in err
