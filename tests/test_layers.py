"""The house's hallways: every import (lazy ones inside functions included) goes to the module's
own layer or a lower one (``tubetrail.definitions.LAYERS``), and no set of modules imports
itself round in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

from tubetrail.definitions import LAYERS

REPO = Path(__file__).resolve().parents[1]
FLOOR = {folder: n for n, floor in enumerate(LAYERS) for folder in floor}


def modules() -> dict[str, Path]:
    found = {}
    for folder in FLOOR:
        for path in sorted((REPO / folder).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts as a.b.c when that is a
    module, else a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        out.update(name for name in names if name.split(".")[0] in FLOOR)
    return out


def test_every_python_folder_has_its_layer():
    folders = {p.parent.name for p in REPO.glob("*/__init__.py")} | {"tests"}
    assert folders - set(FLOOR) == set(), "a top-level package without a layer in tubetrail.definitions.LAYERS"


def test_no_import_runs_up_a_layer():
    known = modules()
    upward = sorted(f"{module} imports {target}" for module, path in known.items()
                    for target in imports_of(path, known)
                    if FLOOR[target.split(".")[0]] > FLOOR[module.split(".")[0]])
    assert upward == []


def test_no_circle_of_modules():
    known = modules()
    graph = {module: {t for t in imports_of(path, known) if t in known and t != module}
             for module, path in known.items()}
    # a package's __init__ is imported before any of its modules: no edge needed for it
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(trail[trail.index(target):] + [target] if target in trail else [module, target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []
