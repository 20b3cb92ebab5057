"""How the code is laid out: small functions, a thin pipeline, tests that stand alone.

(The direction of imports between layers is ``lint-imports``, run by ``make test``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("portrait", "state", "processors", "models", "streams", "api", "cli")


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


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project's modules that ``path`` imports anywhere in it: at the top, inside
    functions, under ``TYPE_CHECKING`` (``from a import b`` counts ``a.b`` when that is
    a module, else ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in graph[node]:
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    modules = {_module_of(path) for path in paths}
    graph = {
        _module_of(path): _imports(path, modules) - {_module_of(path)} - set(PACKAGES)
        for path in paths
    }
    assert graph["streams.reading"], "the import graph was read"  # not vacuous
    assert _cycles(graph) == []


def test_no_lua_function_is_longer_than_eighty_lines() -> None:
    long, seen = [], 0
    for path in sorted((ROOT / "state").glob("*.lua")):
        start, name = 0, ""
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith(("local function ", "function ")):
                start, name = number, line
                seen += 1
            elif line.startswith("end") and name:
                if number - start + 1 > 80:
                    long.append(f"{path.name}:{start} {name} ({number - start + 1} lines)")
                name = ""
    assert seen > 20, "the scripts' functions were found"  # not vacuous
    assert long == []


def test_no_class_is_longer_than_four_hundred_lines() -> None:
    long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and (node.end_lineno or 0) - node.lineno >= 400:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []
