"""House rules a reader relies on, checked on the source with ``ast``: no import circle among the
``oracle`` modules (module-level and function-level imports alike: a function-local import hides a
circle, it does not break it), and no module reaching into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "oracle"
# namedtuple's public API is spelt with an underscore; nothing else is allowed.
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make"}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def oracle_modules() -> dict[str, Path]:
    """``oracle.compare`` -> oracle/compare.py; the package itself is ``oracle``."""
    out = {}
    for path in sorted((REPO / PACKAGE).glob("*.py")):
        out[PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"] = path
    return out


def imported_modules(tree: ast.Module, modules: set[str]) -> set[str]:
    """The ``oracle`` modules a module imports anywhere in its body (functions included). Relative
    imports resolve against the package: every module lives directly in ``oracle``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = PACKAGE + (f".{node.module}" if node.module else "")
            else:
                base = node.module or ""
            if base == PACKAGE:  # from . import blas, __version__
                for alias in node.names:
                    sub = f"{PACKAGE}.{alias.name}"
                    found.add(sub if sub in modules else PACKAGE)
            elif base.startswith(PACKAGE + "."):
                found.add(base)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    mods = oracle_modules()
    return {name: imported_modules(parse(path), set(mods)) - {name} for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_walker_sees_function_level_imports_and_finds_circles():
    graph = import_graph()
    assert "oracle.tokenizer" in graph["oracle.compare"]  # imported inside a method only
    assert "oracle.blas" in graph["oracle.golden_writer"]  # from . import __version__, blas
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_among_oracle_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def private_accesses(tree: ast.Module) -> list[str]:
    """``obj._name`` where obj is not self/cls (and _name is no dunder), and ``from x import _name``."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if not name.startswith("_") or (name.startswith("__") and name.endswith("__")) or name in PUBLIC_UNDERSCORE:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            bad.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
    return bad


def test_private_access_check_can_fail():
    tree = ast.parse("def f(ckpt):\n    self._ok = ckpt.__class__\n    return ckpt._names\nfrom .x import _y\n")
    assert sorted(private_accesses(tree)) == ["line 3: ckpt._names", "line 4: from .x import _y"]


def test_no_oracle_module_reaches_into_private_names():
    bad = {name: found for name, path in oracle_modules().items() if (found := private_accesses(parse(path)))}
    assert not bad, bad


def test_tools_use_only_public_oracle_names():
    """The command-line tools import nothing private from ``oracle``."""
    bad = []
    for path in sorted((REPO / "tools").glob("*.py")):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad


def test_no_oracle_module_is_over_about_600_lines():
    """One concept per file: a module past ~600 lines holds two (split it along its banners)."""
    long = {p.name: n for p in sorted((REPO / PACKAGE).glob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 650}
    assert not long, long
