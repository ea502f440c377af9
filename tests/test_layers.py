"""The layers import only downwards, and nothing imports in a circle: read from the source,
so a change that breaks the house fails here rather than in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

SRC = Path(__file__).parent.parent / "src"
# What each layer may import from haul (besides itself). Read top-down: every arrow points down.
ALLOWED: dict[str, set[str]] = {
    "haul.cli": {"haul.client", "haul.wire", "haul.compose", "haul.config", "haul.errors",
                 "haul.transport"},
    "haul.compose": {"haul.config", "haul.core", "haul.errors", "haul.http", "haul.storage",
                     "haul.records", "haul.locks", "haul.hooks"},
    "haul.hooks": {"haul.core", "haul.errors", "haul.wire"},
    "haul.http": {"haul.config", "haul.core", "haul.errors", "haul.wire"},
    "haul.transport": set(),
    "haul.storage": {"haul.core", "haul.errors", "haul.wire"},
    "haul.records": {"haul.core", "haul.errors", "haul.wire"},
    "haul.locks": {"haul.errors"},
    "haul.config": {"haul.core", "haul.errors", "haul.wire"},
    "haul.core": {"haul.errors", "haul.wire"},
    "haul.client": {"haul.wire"},
    "haul.errors": set(),
    "haul.wire": {"haul.errors"},
}  # fmt: skip
# Libraries that belong to one backend or to the HTTP server, never to the core.
NOT_IN_CORE = ("aiobotocore", "botocore", "asyncpg", "aiosqlite", "redis", "starlette",
               "uvicorn", "h2", "httpx")  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Modules imported when ``path`` is, at any depth of its code but type-checking blocks."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return  # annotations only: never imported at run time
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = {module_name(p): p for p in sorted((SRC / "haul").rglob("*.py"))}


def layer_of(module: str) -> str | None:
    return next(
        (layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), None
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    layer = layer_of(module)
    if layer is None:
        assert module in ("haul", "haul.web"), f"{module} belongs to no layer"
        return
    wrong = set()
    for imported in imports_of(MODULES[module]):
        target = layer_of(imported)
        if target is not None and target != layer and target not in ALLOWED[layer]:
            wrong.add(imported)
        if layer == "haul.core" and imported.split(".")[0] in NOT_IN_CORE:
            wrong.add(imported)
    assert not wrong, f"{module} ({layer}) must not import {sorted(wrong)}"


def test_no_import_cycles() -> None:
    graph = {
        name: {i for i in imports_of(path) if i in MODULES and i != name}
        for name, path in MODULES.items()
    }
    done: set[str] = set()

    def walk(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            walk(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        walk(name, [])


def test_no_source_file_is_over_500_lines() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
