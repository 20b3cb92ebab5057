"""How the code is laid out: small functions, a thin pipeline, tests that stand alone.

(The direction of imports between layers is ``lint-imports``, run by ``make test``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("portrait", "processors", "models", "streams", "api")


def _functions(path: Path) -> list[tuple[str, int, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{start} {name} ({end - start + 1} lines)"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, start, end in _functions(path)
        if end - start + 1 > 60 and name != "build_parser"  # the CLI's argument table
    ]
    assert long == []


def test_the_pipeline_reads_in_a_minute() -> None:
    lines = (ROOT / "streams" / "pipeline.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                last = node.module.rsplit(".", 1)[-1]
                if node.module.startswith("tests.") and (
                    last.startswith("test_") or last == "conftest"
                ):
                    offenders.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert offenders == []
