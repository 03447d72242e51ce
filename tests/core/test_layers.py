"""The package's layers (docs/architecture.md): core <- model <- methods <- tasks <- stages <- cluster <- demo <- cli.

A module imports only modules of its own layer or of layers to its left, and no two modules import each other, even
through a chain. Every import statement counts: module level, inside functions, under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "harness"
LAYERS = ("core", "model", "methods", "tasks", "stages", "cluster", "demo", "cli")



def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every harness module `name` imports, anywhere in the file (a `from pkg import sub` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "harness")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "harness":
                continue
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            out.update(subs or {mod})
    return out - {name}


def layer(name: str) -> int:
    """Index in LAYERS (the package root `harness` is core: it holds only the version)."""
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else 0


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports(name, path, known) for name, path in modules.items()}


def test_every_module_is_in_a_layer():
    stray = [m for m in all_modules() if m != "harness" and m.split(".")[1] not in LAYERS]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_imports_point_only_left():
    edges = graph()
    bad = {(a, b) for a, targets in edges.items() for b in targets if layer(b) > layer(a)}
    assert not bad, "imports against the layer order (core <- model <- methods <- tasks <- stages <- cluster <- " \
                    "demo <- cli):\n" + "\n".join(f"  {a} -> {b}" for a, b in sorted(bad))


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each is an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    edges = graph()
    cycles = strongly_connected(edges)
    assert not cycles, "import cycles:\n" + "\n".join("  " + " <-> ".join(c) for c in cycles)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """The parser counts function-level, TYPE_CHECKING and relative imports (so a hidden cycle cannot pass)."""
    pkg = tmp_path / "harness" / "core"
    pkg.mkdir(parents=True)
    path = pkg / "x.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.stages import run\n"
                    "def f():\n    from harness.cli._common import guarded\n    import harness.model.engine\n"
                    "from . import y\nfrom .. import methods\n")
    known = {"harness.stages.run", "harness.core.y", "harness.methods"}
    assert imports("harness.core.x", path, known) == {
        "harness.stages.run", "harness.cli._common", "harness.model.engine", "harness.core.y", "harness.methods"}
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
