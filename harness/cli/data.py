"""`gali-data`: pre-fetch benchmark data into the Hugging Face cache (or a plain directory) and show where it lives.

    gali-data download longbench leval pg19        # into the HF cache (HF_HOME); copy that cache to offline nodes
    gali-data download all --to /shared/gali-data  # also write plain files: <dir>/longbench/*.jsonl, <dir>/leval/...
    gali-data where longbench                      # cached? which file to put where for data_dir
    gali-data download longbench --cfg configs/longbench/x.toml   # repo ids / file names from [task_options]
    gali-data download ruler --to /shared/gali-data  # SQuAD + HotpotQA dev and PG19 essay books: <dir>/ruler/

needle and passkey are synthetic and need no data; ruler needs only its two QA sets and the essay haystack text.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import harness
from harness.cli._flags import add_common_flags, run_command
from harness.core import params as P
from harness.core.config import from_dict, read_toml
from harness.core.errors import HarnessError
from harness.tasks import _ruler_data as R
from harness.tasks import datasets as data
from harness.tasks.base import TASKS
from harness.tasks.leval import LEVAL_TASKS

DATA_TASKS = ("longbench", "leval", "pg19", "ruler", "longbench_v2")
RULER_ESSAY_BOOKS = 10  # PG19 books written to <dir>/ruler/ as the essay haystack (> 500k words)
SYNTHETIC = ("needle", "passkey")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-data", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--version", action="version", version=f"gali-data (gali-harness) {harness.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("download", "fetch the data files of these tasks"), ("where", "show where the data is")):
        s = sub.add_parser(name, help=text)
        s.add_argument("tasks", nargs="+", help=f"{', '.join(DATA_TASKS)} or all")
        s.add_argument("--cfg", help="take repo ids / file names / data_dir from this config's task")
        if name == "download":
            s.add_argument("--to", metavar="DIR", help="also write plain files into DIR/<task>/ (use as data_dir)")
        add_common_flags(s)
    return p


def _options(task: str, cfg_path: str | None) -> tuple[Any, str | None]:
    """(typed task options, data_dir) from --cfg if it configures `task`, else the defaults."""
    cls = TASKS.get(task)
    if cfg_path:
        cfg = from_dict(read_toml(cfg_path), source=cfg_path, exp_name_default=Path(cfg_path).stem)
        if TASKS.canonical(cfg.task, "task") == task:
            return P.build(cls.Options, cfg.task_options, prefix="task_options."), cfg.data_dir
    return P.build(cls.Options, {}), None


def _tasks(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(DATA_TASKS)
        elif name in SYNTHETIC or name in ("passkey_retreival",):
            print(f"{name}: synthetic (generated from the config), no data to fetch")
        elif name in DATA_TASKS:
            out.append(name)
        else:
            raise HarnessError(f"gali-data: unknown task '{name}'. Fix: use {', '.join(DATA_TASKS)} or all")
    return list(dict.fromkeys(out))


def download(task: str, opts: Any, to: str | None) -> None:
    if task == "longbench":
        path = data.longbench_archive(opts.repo_id, opts.archive, opts.revision)
        print(f"longbench: {path}")
        if to:
            files = data.export_longbench(Path(to) / "longbench", None, opts.repo_id, opts.archive, opts.revision)
            print(f"longbench: {len(files)} JSONL files -> {Path(to) / 'longbench'} (data_dir)")
    elif task == "leval":
        for name in LEVAL_TASKS:
            path = data.leval_file(name, opts.repo_id, opts.path_template, opts.revision)
            print(f"leval/{name}: {path}")
            if to:
                dest = Path(to) / "leval" / f"{name}.jsonl"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        if to:
            print(f"leval: {len(LEVAL_TASKS)} JSONL files -> {Path(to) / 'leval'} (data_dir)")
    elif task == "ruler":
        download_ruler(to)
    elif task == "longbench_v2":
        path = data.hub_file(opts.repo_id, opts.filename, opts.revision, f"LongBench v2: {opts.filename} of "
                             f"{opts.repo_id} could not be fetched")
        print(f"longbench_v2: {path}")
        if to:
            dest = Path(to) / "longbench_v2" / opts.filename
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            print(f"longbench_v2: {opts.filename} -> {dest.parent} (data_dir)")
    else:
        files = data.pg19_files(opts.repo_id, opts.pattern, opts.revision)
        for f in files:
            print(f"pg19: {f}")
        if to:
            written = data.export_documents(data.read_documents(files, opts.text_column), Path(to) / "pg19")
            print(f"pg19: {len(written)} books as .txt -> {Path(to) / 'pg19'} (data_dir)")


def squad_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat SQuAD rows (the hub parquet copy) -> the official SQuAD 2.0 JSON schema (articles, paragraphs, qas)."""
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for i, r in enumerate(rows):
        paragraphs = articles.setdefault(r["title"], {})
        paragraphs.setdefault(r["context"], []).append(
            {"id": f"q{i:06d}", "question": r["question"], "is_impossible": r["impossible"],
             "answers": [{"text": a, "answer_start": r["context"].find(a)} for a in r["answers"]]})
    return {"version": "v2.0", "data": [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]}
                                        for t, ps in articles.items()]}


def download_ruler(to: str | None) -> None:
    """SQuAD 2.0 dev (hub parquet), HotpotQA dev distractor (hub JSON) and the PG19 books of the essay haystack."""
    import json

    squad = R.qa_raw("squad", None)
    hotpot = data.hub_file(R.HOTPOTQA_REPO, R.HOTPOTQA_FILE, R.HOTPOTQA_REVISION, "RULER: HotpotQA dev could not be "
                           "fetched")
    books = data.pg19_files()
    print(f"ruler: SQuAD ({len(squad)} questions), {hotpot}, PG19 essay books ({len(books)} files)")
    if to:
        dest = Path(to) / "ruler"
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "squad.json").write_text(json.dumps(squad_json(squad)), encoding="utf-8")
        shutil.copyfile(hotpot, dest / "hotpotqa.json")
        written = data.export_documents(data.read_documents(books)[:RULER_ESSAY_BOOKS], dest)
        print(f"ruler: squad.json, hotpotqa.json and {len(written)} essay books (.txt) -> {dest} (data_dir)")


def where(task: str, opts: Any, data_dir: str | None) -> None:
    def show(label: str, path: Path | None, hint: str) -> None:
        print(f"  {label}: {path if path else 'not cached (' + hint + ')'}")

    print(f"{task}: HF cache {data.hub_cache_dir()}{' (HF_HUB_OFFLINE)' if data.hub_offline() else ''}")
    if task == "longbench":
        show(f"{opts.repo_id}/{opts.archive}", data.cached_file(opts.repo_id, opts.archive, opts.revision),
             "gali-data download longbench")
        print("  data_dir layout: <data_dir>/<name>.jsonl, e.g. narrativeqa.jsonl, qasper_e.jsonl (from data.zip)")
    elif task == "leval":
        for name in LEVAL_TASKS:
            filename = opts.path_template.format(task=name)
            show(f"{opts.repo_id}/{filename}", data.cached_file(opts.repo_id, filename, opts.revision),
                 "gali-data download leval")
        print("  data_dir layout: <data_dir>/<task>.jsonl, e.g. coursera.jsonl")
    elif task == "ruler":
        show(f"{R.HOTPOTQA_REPO}/{R.HOTPOTQA_FILE}", data.cached_file(R.HOTPOTQA_REPO, R.HOTPOTQA_FILE,
                                                                      R.HOTPOTQA_REVISION), "gali-data download ruler")
        print(f"  SQuAD: {R.SQUAD_REPO}/{R.SQUAD_PATTERN}; essay haystack: the pg19 books (see `gali-data where pg19`)")
        print("  data_dir layout: <data_dir>/squad.json (SQuAD 2.0 dev), hotpotqa.json (HotpotQA dev distractor), "
              "*.txt (essay haystack text, name order)")
    elif task == "longbench_v2":
        show(f"{opts.repo_id}/{opts.filename}", data.cached_file(opts.repo_id, opts.filename, opts.revision),
             "gali-data download longbench_v2")
        print(f"  data_dir layout: <data_dir>/{opts.filename}")
    else:
        try:
            files = data.pg19_files(opts.repo_id, opts.pattern, opts.revision, download=False)
            show(f"{opts.repo_id}/{opts.pattern}", files[0].parent, "")
        except HarnessError:
            show(f"{opts.repo_id}/{opts.pattern}", None, "gali-data download pg19")
        print("  data_dir layout: <data_dir>/<book>.txt (sorted by name)")
    if data_dir:
        print(f"  the config sets data_dir = {data_dir!r}: {'exists' if Path(data_dir).is_dir() else 'MISSING'}")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work on parsed arguments."""
    for task in _tasks(args.tasks):
        opts, data_dir = _options(task, args.cfg)
        if args.command == "download":
            download(task, opts, args.to)
        else:
            where(task, opts, data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
