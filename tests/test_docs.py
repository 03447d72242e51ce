"""README.md and docs/ work literally: every command in their code blocks parses with its CLI, every repository path
they name exists, every local link resolves, and gali-run commands on the bundled lab model pass --dry-run."""

from __future__ import annotations

import glob
import re
import shlex
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CLIS = {"gali-run": "run", "gali-eval": "evaluate", "gali-collect": "collect", "gali-check": "check",
        "gali-data": "data", "gali-demo": "demo", "gali-sweep": "sweep", "gali-launch": "launch",
        "gali-dpe-probe": "dpe_probe"}
REPO_DIRS = ("configs/", "scripts/", "docs/", "harness/", "tests/")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def code_commands(path: Path) -> list[str]:
    """Command lines of the shell code blocks of a markdown file (continuations joined)."""
    out = []
    for lang, body in FENCE.findall(path.read_text(encoding="utf-8")):
        lines = body.replace("\\\n", " ").splitlines()
        first = next((x.strip() for x in lines if x.strip() and not x.strip().startswith("#")), "")
        if lang not in ("bash", "sh", "shell") and not first.startswith("gali-"):
            continue  # a layout or TOML block
        out += [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]
    return out


def words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def repo_paths(tokens: list[str]) -> list[str]:
    """Tokens (or --opt=value parts) that name a file of this repository."""
    out = []
    for tok in tokens:
        tok = tok.split("=", 1)[-1].rstrip(");,")
        if tok.startswith(REPO_DIRS) and "<" not in tok and "..." not in tok:
            out.append(tok)
    return out


COMMANDS = [(p.relative_to(ROOT).as_posix(), line) for p in DOCS for line in code_commands(p)]


def test_docs_have_commands():
    assert any(line.startswith("gali-run --model gali:lab") for _, line in COMMANDS)
    assert len(COMMANDS) > 20


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{i}" for i, (d, _) in enumerate(COMMANDS)])
def test_command_parses_and_paths_exist(doc, line, monkeypatch):
    tokens = words(line)
    if not tokens:
        return
    for path in repo_paths(tokens):
        assert glob.glob(str(ROOT / path)), f"{doc}: `{line}` names {path}, which does not exist"
    prog = tokens[0]
    if prog == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert all(t in targets for t in tokens[1:]), f"{doc}: unknown make target in `{line}`"
    if prog not in CLIS:
        return
    module = import_module(f"harness.cli.{CLIS[prog]}")
    try:
        args = module.build_parser().parse_args(tokens[1:])
    except SystemExit as exc:
        pytest.fail(f"{doc}: `{line}` does not parse ({exc})")
    if prog == "gali-run" and not any(c.startswith("results/") for c in args.cfg):  # results/: made by a run
        monkeypatch.chdir(ROOT)
        plans = module.load_all(args)  # every config loads and resolves (names, keys, params)
        assert plans
        if all(p.cfg.model == "gali:lab" for p in plans):
            assert module.main([*tokens[1:], "--dry-run", "-q"]) == 0


def test_local_links_resolve():
    for doc in DOCS:
        text = INLINE_CODE.sub("", FENCE.sub("", doc.read_text(encoding="utf-8")))  # links live outside code
        for target in LINK.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to missing {target}"
