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


# --- issue 16.2: thin flows ------------------------------------------------------------------------
# ``flows/`` only wires: no SQL in its string literals (the rules are the domains', the writes
# ``warehouse``'s), no query run on a connection, and the warehouse entered only through
# ``warehouse.session`` (``flows.limits.warehouse_session``), never opened or configured by hand.

import re  # noqa: E402

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|CREATE|DELETE)\s")
#: what only ``warehouse.session`` calls on a flow's behalf
SESSION_ONLY = {"load_config", "open_configured", "open_warehouse", "define_views", "id_hash_key"}
QUERY_METHODS = {"execute", "executemany", "sql", "query"}


def sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant (f-string parts and docstrings included) that holds
    an SQL keyword followed by a space or line break."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_WORDS.search(node.value)]


def by_hand(source: str) -> list[tuple[int, str]]:
    """(line, name) of each import or call of :data:`SESSION_ONLY` and each query method called."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [(node.lineno, a.name) for a in node.names if a.name in SESSION_ONLY]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in QUERY_METHODS:
            found.append((node.lineno, node.func.attr))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SESSION_ONLY:
            found.append((node.lineno, node.func.id))
    return found


def flow_sources() -> dict[str, str]:
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "flows").glob("*.py"))}
    assert {"ingest.py", "report.py", "sms.py", "alerts.py"} <= set(sources)
    return sources


def test_the_checks_see_sql_and_a_warehouse_opened_by_hand():
    sample = '''
from warehouse.connection import open_configured
def f(con, rid):
    con.execute(f"SELECT * FROM rounds WHERE round_id = '{rid}'")
    return "delete nothing", """
        INSERT INTO t
        VALUES (1)"""
'''
    assert sorted(line for line, _ in sql_literals(sample)) == [4, 5]
    assert sorted(by_hand(sample)) == [(2, "open_configured"), (4, "execute")]
    assert sql_literals('x = "Update the selection"') == [] and by_hand("session.read()") == []


def test_flows_hold_no_sql():
    found = {name: hits for name, source in flow_sources().items() if (hits := sql_literals(source))}
    assert found == {}


def test_flows_enter_the_warehouse_through_the_session_only():
    found = {name: hits for name, source in flow_sources().items() if (hits := by_hand(source))}
    assert found == {}


def test_the_readme_layout_names_every_folder_and_only_folders_that_exist():
    """The README's layout block (``## Layout (the rooms)``) lists the tree as it is."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout (the rooms)", 1)[1].split("```", 2)[1]
    listed = re.findall(r"^([a-z_]+)/", block, flags=re.M)
    assert set(FLOOR) <= set(listed), "a layer's folder missing from the README's layout"
    assert [folder for folder in listed if not (REPO / folder).is_dir()] == []
