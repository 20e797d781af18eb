"""The house rules that a reviewer would otherwise check by hand: lint, types, import direction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent

#: room -> what its modules may not import (DESIGN.md section 3: flows -> connectors/records ->
#: legal_bases; the law imports nothing of ours and nothing that does I/O or orchestration).
FORBIDDEN = {
    "legal_bases": {"records", "connectors", "flows", "prefect", "sqlalchemy", "sqlmodel",
                    "requests", "psycopg", "structlog", "httpx", "fastapi"},
    "records": {"connectors", "flows", "prefect"},
    "connectors": {"flows", "prefect"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_point_one_way(room: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[room])
        for path in (ROOT / room).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    result = subprocess.run([str(BIN / "mypy"), "--no-incremental"], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
