"""The package's two floors: the method never imports the study, no import cycle anywhere, small modules.

The import graph is read from the source with :mod:`ast` (module-level and function-level imports alike), so an
arrow pointing up, or a cycle hidden in a function body, fails here rather than in a reader's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "padim_repro"
#: "No module over about 400 lines" (the architecture issue).
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (resolving relative imports; ``from pkg import mod`` names ``pkg.mod``)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_method_never_imports_the_study(graph: dict[str, set[str]]) -> None:
    # ``python -m padim_repro`` (``__main__``) is the command line's entry point, not part of the method.
    method = {m: deps for m, deps in graph.items() if not m.startswith(("padim_repro.study", "padim_repro.__main__"))}
    up = {m: sorted(d for d in deps if d.startswith("padim_repro.study")) for m, deps in method.items()}
    assert {m: d for m, d in up.items() if d} == {}
    assert graph["padim_repro.study.runs"] >= {"padim_repro.model"}  # the graph is read at all


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_cycle_check_finds_a_cycle() -> None:
    """The checker itself: a two-module cycle is reported."""
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle({"a": {"b"}, "b": {"a"}})


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
