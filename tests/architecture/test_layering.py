"""The shape of the code, checked: no import cycles, the work never reaches the web framework, small modules.

Imports are read from the source (every `import`, at module level, inside functions and under
TYPE_CHECKING alike: a type-only import is still a dependency a reader must follow), not from a
running interpreter, so the check sees imports that only some code paths execute.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SOURCE_ROOT = REPO_ROOT / "src"
PACKAGE = "speaches"
# Libraries that do the work: a module importing one of these is a work module.
WORK_LIBRARIES = frozenset({"faster_whisper", "ctranslate2", "piper", "onnxruntime", "av", "numpy"})
WEB_FRAMEWORKS = frozenset({"fastapi", "starlette"})
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SOURCE_ROOT / PACKAGE).rglob("*.py"))}


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _imported_names(name: str) -> Iterator[str]:
    """Every absolute module name `name` imports (a `from a import b` yields `a.b` and `a`)."""
    path = _modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


@cache
def _internal_imports(name: str) -> frozenset[str]:
    """The project modules `name` imports directly, with the packages whose `__init__` that runs."""
    found: set[str] = set()
    for imported in _imported_names(name):
        if imported in _modules() and imported != name:
            found.add(imported)
    return frozenset(found)


@cache
def _external_roots(name: str) -> frozenset[str]:
    return frozenset(
        imported.split(".")[0] for imported in _imported_names(name) if not imported.startswith(f"{PACKAGE}.")
    )


def _parents(name: str) -> Iterable[str]:
    parts = name.split(".")
    return (".".join(parts[:end]) for end in range(1, len(parts)))


def _reachable(name: str) -> set[str]:
    """Every project module that importing `name` runs: its imports, theirs, and the parent packages of each."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_internal_imports(current))
        todo.extend(parent for parent in _parents(current) if parent in _modules())
    return seen


def _strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: every group of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(sorted(group))
    return groups


def test_the_checker_reads_imports_from_every_kind_of_statement() -> None:
    # A sanity check on the reader itself, so a silent parser bug cannot make every test below pass.
    imports = _internal_imports("speaches.main")
    assert "speaches.config" in imports
    assert "speaches.web.errors" in imports
    assert "fastapi" in _external_roots("speaches.main")
    assert "numpy" in _external_roots("speaches.transcription.whisper")
    cycle = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert sorted(map(len, _strongly_connected(cycle))) == [1, 3]


def test_no_import_cycles() -> None:
    graph = {name: _internal_imports(name) for name in _modules()}
    cycles = [group for group in _strongly_connected(graph) if len(group) > 1]
    assert not cycles, f"modules that import each other: {cycles}"


@pytest.mark.parametrize(
    "module", sorted(name for name in _modules() if _external_roots(name) & WORK_LIBRARIES), ids=str
)
def test_work_modules_never_reach_the_web_framework(module: str) -> None:
    reaching = {
        reached: sorted(_external_roots(reached) & WEB_FRAMEWORKS)
        for reached in _reachable(module)
        if _external_roots(reached) & WEB_FRAMEWORKS
    }
    assert not reaching, f"{module} does inference or audio work, yet importing it loads {reaching}"


def test_protocol_modules_are_plain_pydantic() -> None:
    offenders = {
        name: sorted(_external_roots(name) & WEB_FRAMEWORKS)
        for name in _modules()
        if name.endswith(".protocol") and _external_roots(name) & WEB_FRAMEWORKS
    }
    assert not offenders, f"wire shapes that import the web framework: {offenders}"


def test_nothing_below_the_doors_imports_a_router() -> None:
    def is_door(name: str) -> bool:
        return name == f"{PACKAGE}.main" or name.rpartition(".")[2].endswith("router")

    offenders = {
        name: sorted(imported for imported in _internal_imports(name) if is_door(imported))
        for name in _modules()
        if not is_door(name)
    }
    assert not {name: doors for name, doors in offenders.items() if doors}


def test_no_module_is_over_500_lines() -> None:
    long = {
        name: lines
        for name, path in _modules().items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these along their seams: {long}"
