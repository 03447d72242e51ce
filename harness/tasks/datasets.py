"""Benchmark data: read it from a local `data_dir`, or from the Hugging Face cache (fetched with huggingface_hub).

`datasets` >= 4 cannot run the script-based LongBench / PG19 loaders, so the published files are fetched directly:

- LongBench: the `data.zip` archive of the `THUDM/LongBench` dataset repo (JSONL files `data/<name>.jsonl`, read
  straight from the zip);
- L-Eval: the closed-ended JSONL files `LEval/Exam/<task>.jsonl` of `L4NLP/LEval`;
- PG19 (test split): the parquet files of a copy such as `emozilla/pg19-test` (column `text`).

Repo ids and file names are arguments (the tasks expose them as `[task_options]`). Missing data, offline or not,
raises one DataError naming the file to put where and the `gali-data download <task>` command that fetches it.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import DataError
from harness.tasks.data_identity import decode_utf8, note_data_file, note_source, read_text_file

log = logging.getLogger(__name__)

LONGBENCH_REPO = "THUDM/LongBench"
LONGBENCH_ARCHIVE = "data.zip"
LEVAL_REPO = "L4NLP/LEval"
LEVAL_PATH = "LEval/Exam/{task}.jsonl"
PG19_REPO = "emozilla/pg19-test"
PG19_PATTERN = "*.parquet"


@dataclass(frozen=True)
class Document:
    """One plain-text document (a PG19 book, a text file)."""

    name: str
    text: str
    meta: dict[str, Any] | None = None


# -------------------------------------------------------------------------------------------------------- hub access
def hub_offline() -> bool:
    """True when huggingface_hub must not touch the network (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return bool(constants.HF_HUB_OFFLINE) or env


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in use (HF_HUB_CACHE / HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """Path of `filename` of dataset repo `repo_id` in the HF cache, or None (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision,
                                   repo_type="dataset")
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def hub_file(repo_id: str, filename: str, revision: str | None, missing: str, download: bool = True) -> Path:
    """`filename` of dataset repo `repo_id` from the HF cache, downloading it when allowed and online.

    `missing` is the DataError text used when the file is neither cached nor downloadable.
    """
    found = cached_file(repo_id, filename, revision)
    if found is not None:
        return found
    if not download or hub_offline():
        raise DataError(f"{missing} (HF_HUB_OFFLINE is set, nothing is downloaded)" if download else missing)
    from huggingface_hub import hf_hub_download

    log.info("downloading %s from the Hugging Face dataset %s", filename, repo_id)
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))
    except Exception as exc:
        raise DataError(f"{missing} (download failed: {_why(exc)})") from None


def hub_files(repo_id: str, pattern: str, revision: str | None, missing: str, download: bool = True) -> list[Path]:
    """Files of dataset repo `repo_id` matching `pattern` (sorted by repo path), from the cache or downloaded."""
    from huggingface_hub import snapshot_download

    def matching(root: str) -> list[Path]:
        base = Path(root)
        return sorted(p for p in base.rglob("*") if p.is_file() and fnmatch.fnmatch(p.relative_to(base).as_posix(),
                                                                                     pattern))

    try:
        files = matching(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=pattern,
                                           local_files_only=True))
    except Exception:
        files = []
    if files:
        return files
    if not download or hub_offline():
        raise DataError(f"{missing} (HF_HUB_OFFLINE is set, nothing is downloaded)" if download else missing)
    log.info("downloading %s from the Hugging Face dataset %s", pattern, repo_id)
    try:
        files = matching(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=pattern))
    except Exception as exc:
        raise DataError(f"{missing} (download failed: {_why(exc)})") from None
    if not files:
        raise DataError(f"{missing} (the repo has no file matching {pattern!r})")
    return files


# ----------------------------------------------------------------------------------------------------------- readers
def read_jsonl(source: Path | str, text: str | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL file (or of `text`, named `source` in errors); a malformed line is a DataError.

    Lines are split on "\\n" only, as the reference reads them: a raw U+2028 / U+2029 / U+0085 (valid inside a JSON
    string) stays in its string, where `str.splitlines` would cut the line; a "\\r" before the "\\n" is JSON
    whitespace.
    """
    lines = (text if text is not None else read_text_file(source)).split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}:{i}: not valid JSON ({exc.msg}). Fix: re-download the file "
                            f"(gali-data download) or repair that line") from None
        if not isinstance(row, dict):
            raise DataError(f"{source}:{i}: expected a JSON object per line")
        rows.append(row)
    return rows


def require_fields(rows: list[dict[str, Any]], fields: Iterable[str] | Mapping[str, type | tuple[type, ...]],
                   source: str) -> None:
    """DataError if a row lacks one of `fields` (wrong file in the right place), or (when `fields` maps names to
    types) holds a value of the wrong type, e.g. `answers = 3` where a list is expected."""
    types_ = fields if isinstance(fields, Mapping) else {}
    if not rows:
        raise DataError(f"{source}: no rows (an empty file). Fix: re-download it (gali-data download) or remove it")
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{source}: row {i} is a JSON {type(row).__name__}, not an object. Fix: use the "
                            "published file (gali-data download)")
        missing = [f for f in fields if f not in row]
        if missing:
            raise DataError(f"{source}: row {i} lacks field(s) {missing}; is this the right file? Fix: use the "
                            f"published file (gali-data download)")
        for name, tp in types_.items():
            if not isinstance(row[name], tp):
                want = " or ".join(t.__name__ for t in (tp if isinstance(tp, tuple) else (tp,)))
                raise DataError(f"{source}: row {i}: field '{name}' is a {type(row[name]).__name__} "
                                f"({str(row[name])[:40]!r}), expected {want}. Fix: use the published file "
                                "(gali-data download) or repair that row")


def _local(data_dir: str | Path, candidates: list[str]) -> Path | None:
    root = Path(data_dir).expanduser()
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    return None


def _check_dir(data_dir: str | Path, what: str) -> Path:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{what}: data_dir {str(root)!r} is not a directory. Fix: create it and put the files "
                        f"there, or remove data_dir to use the Hugging Face cache")
    return root


# --------------------------------------------------------------------------------------------------------- LongBench
def longbench_archive(repo_id: str = LONGBENCH_REPO, archive: str = LONGBENCH_ARCHIVE, revision: str | None = None,
                      download: bool = True) -> Path:
    """The LongBench `data.zip` in the HF cache (downloaded if allowed)."""
    missing = (f"LongBench data: {archive} of the Hugging Face dataset {repo_id} is not in the HF cache "
               f"({hub_cache_dir()}). Fix: run `gali-data download longbench` (on a machine with internet; share "
               f"its HF cache, or use `--to DIR` and set data_dir = \"DIR\"), or put the unzipped <name>.jsonl files "
               f"into a directory and set data_dir to it")
    return hub_file(repo_id, archive, revision, missing, download)


def load_longbench(name: str, data_dir: str | None = None, repo_id: str = LONGBENCH_REPO,
                   archive: str = LONGBENCH_ARCHIVE, revision: str | None = None,
                   download: bool = True) -> list[dict[str, Any]]:
    """Rows of LongBench file `<name>.jsonl` (e.g. `narrativeqa`, `qasper_e`) from `data_dir` or the hub archive."""
    fields = {"context": str, "input": str, "answers": list}
    if data_dir:
        root = _check_dir(data_dir, f"LongBench '{name}'")
        path = _local(root, [f"{name}.jsonl", f"data/{name}.jsonl"])
        if path is None:
            raise DataError(f"LongBench '{name}': {root / f'{name}.jsonl'} not found (data_dir = \"{data_dir}\"). "
                            f"Fix: put {name}.jsonl there (it is data/{name}.jsonl inside {archive} of the Hugging "
                            f"Face dataset {repo_id}; `gali-data download longbench --to {data_dir}` writes all of "
                            f"them), or remove data_dir to read from the Hugging Face cache")
        rows = read_jsonl(path)
        require_fields(rows, fields, str(path))
        note_data_file(path, "data_dir")
        return rows
    zpath = longbench_archive(repo_id, archive, revision, download)
    note_data_file(zpath, f"hf:{repo_id}/{archive}")
    try:
        with zipfile.ZipFile(zpath) as zf:
            members = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == f"{name}.jsonl"]
            if not members:
                raise DataError(f"LongBench '{name}': {zpath} has no {name}.jsonl. Fix: check the subset name, or "
                                f"task_options.repo_id / archive")
            raw = zf.read(sorted(members, key=len)[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise DataError(f"{zpath}: not a valid zip archive ({_why(exc)}). Fix: delete it and run "
                        f"`gali-data download longbench` again") from None
    note_source(f"{zpath}!{name}.jsonl", raw)
    text = decode_utf8(raw, f"{zpath}!{name}.jsonl")
    rows = read_jsonl(f"{zpath}!{name}.jsonl", text)
    require_fields(rows, fields, f"{zpath}!{name}.jsonl")
    return rows


def export_longbench(dest: str | Path, names: Iterable[str] | None = None, repo_id: str = LONGBENCH_REPO,
                     archive: str = LONGBENCH_ARCHIVE, revision: str | None = None) -> list[Path]:
    """Write the archive's JSONL files (all, or `names`) into `dest` (a data_dir for air-gapped nodes)."""
    zpath = longbench_archive(repo_id, archive, revision)
    out_dir = Path(dest).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(names) if names is not None else None
    written = []
    with zipfile.ZipFile(zpath) as zf:
        for member in zf.namelist():
            base = member.rsplit("/", 1)[-1]
            if base.endswith(".jsonl") and (wanted is None or base[:-6] in wanted):
                (out_dir / base).write_bytes(zf.read(member))
                written.append(out_dir / base)
    return written


# ------------------------------------------------------------------------------------------------------------ L-Eval
def leval_file(task: str, repo_id: str = LEVAL_REPO, path_template: str = LEVAL_PATH, revision: str | None = None,
               download: bool = True) -> Path:
    """The L-Eval JSONL of `task` in the HF cache (downloaded if allowed)."""
    filename = path_template.format(task=task)
    missing = (f"L-Eval '{task}': {filename} of the Hugging Face dataset {repo_id} is not in the HF cache "
               f"({hub_cache_dir()}). Fix: run `gali-data download leval` (on a machine with internet; share its HF "
               f"cache, or use `--to DIR` and set data_dir = \"DIR\"), or put {task}.jsonl (L-Eval's "
               f"LEval-data/Closed-ended-tasks/{task}.jsonl) into a directory and set data_dir to it")
    return hub_file(repo_id, filename, revision, missing, download)


def load_leval(task: str, data_dir: str | None = None, repo_id: str = LEVAL_REPO, path_template: str = LEVAL_PATH,
               revision: str | None = None, download: bool = True) -> list[dict[str, Any]]:
    """Documents of L-Eval task `task` (`input`, `instructions`, `outputs`, `evaluation`)."""
    if data_dir:
        root = _check_dir(data_dir, f"L-Eval '{task}'")
        path = _local(root, [f"{task}.jsonl", path_template.format(task=task), f"Closed-ended-tasks/{task}.jsonl"])
        if path is None:
            raise DataError(f"L-Eval '{task}': {root / f'{task}.jsonl'} not found (data_dir = \"{data_dir}\"). Fix: "
                            f"put {task}.jsonl there (L-Eval's LEval-data/Closed-ended-tasks/{task}.jsonl, or "
                            f"{path_template.format(task=task)} of the Hugging Face dataset {repo_id}; "
                            f"`gali-data download leval --to {data_dir}` writes all of them), or remove data_dir to "
                            f"read from the Hugging Face cache")
    else:
        path = leval_file(task, repo_id, path_template, revision, download)
    note_data_file(path, "data_dir" if data_dir else f"hf:{repo_id}")
    rows = read_jsonl(path)
    require_fields(rows, {"input": str, "instructions": list, "outputs": list}, str(path))
    return rows


# -------------------------------------------------------------------------------------------------------------- PG19
def pg19_files(repo_id: str = PG19_REPO, pattern: str = PG19_PATTERN, revision: str | None = None,
               download: bool = True) -> list[Path]:
    """The PG19 test-split files (parquet or txt) in the HF cache (downloaded if allowed)."""
    missing = (f"PG19: no file matching {pattern!r} of the Hugging Face dataset {repo_id} in the HF cache "
               f"({hub_cache_dir()}). Fix: run `gali-data download pg19` (on a machine with internet; share its HF "
               f"cache, or use `--to DIR` and set data_dir = \"DIR\"), or put the PG19 test books as *.txt files into "
               f"a directory and set data_dir to it")
    return hub_files(repo_id, pattern, revision, missing, download)


def _parquet_docs(path: Path, text_column: str) -> list[Document]:
    import pyarrow.parquet as pq

    try:
        note_source(str(path), path.read_bytes())
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
        raise DataError(f"{path}: not a readable parquet file ({_why(exc)}). Fix: delete it and run "
                        "`gali-data download pg19` again") from None
    if text_column not in table.column_names:
        raise DataError(f"{path}: no column {text_column!r} (columns: {table.column_names}). Fix: set "
                        f"task_options.text_column")
    texts = table.column(text_column).to_pylist()
    if not all(t is None or isinstance(t, str) for t in texts):
        raise DataError(f"{path}: column {text_column!r} does not hold text. Fix: set task_options.text_column")
    titles = table.column("short_book_title").to_pylist() if "short_book_title" in table.column_names else None
    return [Document(f"{path.stem}-{i:04d}", t or "", {"title": titles[i]} if titles else None)
            for i, t in enumerate(texts)]


def read_documents(files: Iterable[Path], text_column: str = "text") -> list[Document]:
    """Documents from .txt files (one each, named by stem) and .parquet files (one per row)."""
    docs: list[Document] = []
    for f in files:
        note_data_file(f, "file")
        if f.suffix == ".parquet":
            docs.extend(_parquet_docs(f, text_column))
        else:
            try:
                raw = f.read_bytes()
            except OSError as exc:
                raise DataError(f"{f}: cannot read it ({exc.strerror}). Fix: check the file and its "
                                "permissions") from None
            note_source(str(f), raw)
            docs.append(Document(f.stem, raw.decode("utf-8", errors="replace"), {"file": f.name}))
    return docs


def load_pg19(data_dir: str | None = None, repo_id: str = PG19_REPO, pattern: str = PG19_PATTERN,
              revision: str | None = None, text_column: str = "text", download: bool = True) -> list[Document]:
    """PG19 test books: `data_dir/*.txt` (sorted by name) or the hub copy's files."""
    if data_dir:
        root = _check_dir(data_dir, "PG19")
        files = sorted(root.glob("*.txt")) or sorted((root / "test").glob("*.txt"))
        if not files:
            raise DataError(f"PG19: no *.txt file in {root} (data_dir = \"{data_dir}\"). Fix: put the PG19 test "
                            f"books there as <book>.txt (`gali-data download pg19 --to {data_dir}` writes them), or "
                            f"remove data_dir to read from the Hugging Face cache")
        return read_documents(files)
    return read_documents(pg19_files(repo_id, pattern, revision, download), text_column)


def export_documents(docs: Iterable[Document], dest: str | Path) -> list[Path]:
    """Write documents as `<name>.txt` into `dest` (a PG19 data_dir)."""
    out_dir = Path(dest).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in docs:
        path = out_dir / f"{doc.name}.txt"
        path.write_text(doc.text, encoding="utf-8")
        written.append(path)
    return written


def load_text_files(patterns: Iterable[str]) -> list[Document]:
    """Documents from local files or globs (each pattern's matches sorted); a pattern matching nothing is an error."""
    files: list[Path] = []
    for pat in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pat)))
        if not matches:
            raise DataError(f"task_options.text_files: {pat!r} matches no file. Fix: check the path or glob")
        files.extend(Path(m) for m in matches if Path(m).is_file())
    seen: dict[str, int] = {}
    docs = []
    for doc in read_documents(files):
        n = seen.get(doc.name, 0)
        seen[doc.name] = n + 1
        docs.append(doc if n == 0 else Document(f"{doc.name}-{n}", doc.text, doc.meta))
    return docs

