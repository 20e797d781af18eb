"""The house rules that a reviewer would otherwise check by hand: lint, types, import direction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent

#: room -> what its modules may not import (docs/architecture.md; DESIGN.md section 3): cli ->
#: flows -> connectors/records -> legal_bases; the law imports nothing of ours and nothing that
#: does I/O or orchestration; only the command line talks to a person.
FORBIDDEN = {
    "legal_bases": {"records", "connectors", "flows", "cli", "prefect", "sqlalchemy", "sqlmodel",
                    "requests", "psycopg", "structlog", "httpx", "fastapi"},
    "records": {"connectors", "flows", "cli", "prefect"},
    "connectors": {"flows", "cli", "prefect"},
    "flows": {"cli"},
}
#: Our packages, whose modules may not import each other in a circle.
OURS = ("legal_bases", "records", "connectors", "flows", "cli")
#: Inside ``flows``: the units Prefect runs may not import what serves them.
SERVES_THE_FLOWS = {"flows.deployments"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    return {module_name(path): path for room in OURS for path in (ROOT / room).rglob("*.py")
            if "migrations" not in path.parts}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``path`` imports anywhere in it (in a function too); ``from a import b``
    counts as importing ``a.b`` where that is a module, else ``a``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
    return {name for name in found if name in modules}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_point_one_way(room: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[room])
        for path in (ROOT / room).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_circle_anywhere() -> None:
    modules = our_modules()
    # a package's __init__ is imported with each of its modules; it does not import them back
    graph = {name: {t for t in imports_of(path, modules) - {name}
                    if not name.startswith(f"{t}.")}
             for name, path in modules.items()}
    assert import_circles(graph) == []


def test_the_flows_do_not_import_what_serves_them() -> None:
    modules = our_modules()
    offenders = {name: sorted(imports_of(path, modules) & SERVES_THE_FLOWS)
                 for name, path in modules.items()
                 if name.startswith("flows.") and name not in SERVES_THE_FLOWS}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_of_ours_inside_a_function() -> None:
    """An import inside a function is how a cycle hides; ours are all at the top of a module."""
    modules = our_modules()
    offenders = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom) and imports_of_node(inner):
                        offenders.append(f"{name}:{inner.lineno}")
    assert offenders == []


def imports_of_node(node: ast.Import | ast.ImportFrom) -> bool:
    names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
             else [node.module or ""])
    return any(n.split(".")[0] in OURS for n in names)


def test_no_module_is_a_maze() -> None:
    """About 500 lines at most: a longer module is more than one idea (the listed ones are one
    idea each, said why)."""
    one_idea = {
        # one verification run: a pass over the events, then one pass per table, in one reading
        "records.verification",
    }
    long = {name: len(path.read_text("utf-8").splitlines())
            for name, path in our_modules().items()}
    assert {n: lines for n, lines in long.items() if lines > 520 and n not in one_idea} == {}


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    result = subprocess.run([str(BIN / "mypy"), "--no-incremental"], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
