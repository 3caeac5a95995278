"""Packaging (issue 16.6): every third-party module the shipped packages import is a declared
dependency or one of theirs; the wheel ships prefect.yaml where ``tubetrail serve`` reads it; a
deployment names its flow by module, never by a path of the machine that served it."""

import ast
import os
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires

from packaging.requirements import Requirement

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SHIPPED = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def imported_modules() -> dict[str, set[str]]:
    """Top-level module → the shipped files that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for package in SHIPPED:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def third_party(found: dict[str, set[str]]) -> dict[str, set[str]]:
    ours = set(SHIPPED)
    return {m: files for m, files in found.items()
            if m not in sys.stdlib_module_names and m not in ours and m != "__future__"}


def closure(declared: list[str]) -> set[str]:
    """The declared distributions and every distribution they require (markers as installed here)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in declared]
    while todo:
        req = todo.pop()
        name = _name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in requires(req.name) or []]
        except PackageNotFoundError:
            pass
    return seen


def test_every_third_party_import_is_a_declared_dependency_or_one_of_theirs():
    modules = third_party(imported_modules())
    assert {"prefect", "polars", "duckdb", "yaml", "typer"} <= set(modules)  # the walk sees the imports
    owners = packages_distributions()
    allowed = closure(PYPROJECT["project"]["dependencies"])
    missing = {m: sorted(files) for m, files in modules.items()
               if not {_name(d) for d in owners.get(m, [])} & allowed}
    assert missing == {}, f"imported but not declared (nor required by a declared dependency): {missing}"


def test_modules_imported_directly_are_declared_directly():
    """A module the shipped code imports by name is declared by name (not only reached through
    Prefect): ``yaml`` → pyyaml. The exceptions are parts of a declared dependency's own API."""
    through_prefect = {"pydantic", "anyio", "sqlalchemy", "fastapi", "uvicorn", "starlette", "cloudpickle"}
    owners = packages_distributions()
    direct = {_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    undeclared = {m: sorted(files) for m, files in third_party(imported_modules()).items()
                  if m not in through_prefect and not {_name(d) for d in owners.get(m, [])} & direct}
    assert undeclared == {}, undeclared


def test_the_wheel_ships_prefect_yaml_beside_the_module_that_reads_it():
    from flows import serve

    include = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include == {"prefect.yaml": "flows/prefect.yaml"}
    assert serve.SHIPPED_DEPLOYMENT_FILE == REPO / include["prefect.yaml"]
    assert serve.DEPLOYMENT_FILE == REPO / "prefect.yaml"  # a checkout: the repository's own


def test_deployments_name_their_flow_by_module_not_by_a_path(tmp_path):
    from flows.serve import build_deployments

    here = os.getcwd()
    os.chdir(tmp_path)  # served from another folder (the demo serves from data/demo)
    try:
        built = build_deployments()
    finally:
        os.chdir(here)
    assert {d.name: d.entrypoint for d in built} == {
        "ingest-inbox": "flows.ingest.ingest_inbox", "nightly-report": "flows.report.round_report",
        "reminder-sweep": "flows.sms.sms_reminders", "export-results": "flows.exports.export_results",
        "capacity-plan": "flows.plan.plan_capacity"}
    assert all(d._path is None for d in built)  # no working directory of this machine is stored


def test_every_deployed_flow_names_its_runs():
    """Scheduled runs show a name the coordinator reads (``report current round``), not a random
    one, once they start: every deployed flow has a run-name template."""
    from flows.serve import deployment_specs, load_flow

    unnamed = [s["name"] for s in deployment_specs() if not load_flow(s["entrypoint"]).flow_run_name]
    assert unnamed == []


def test_prefect_yaml_stores_no_path_of_the_deploying_machine(tmp_path, monkeypatch):
    """The pull step names the worker's checkout by $TUBETRAIL_HOME, resolved where and when a
    run starts (``null`` would make ``prefect deploy`` store its own working directory)."""
    import yaml

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ TUBETRAIL_HOME }}"}}]
    for deployment in spec["deployments"]:
        path = deployment["entrypoint"].split(":")[0]
        assert not os.path.isabs(path) and (REPO / path).is_file(), deployment["entrypoint"]
    # what a run's pull step does with it (prefect.deployments.steps.core.run_step: the
    # environment's values applied when the run starts, on the worker's machine)
    from prefect.utilities.templating import apply_values

    (step, inputs), = spec["pull"][0].items()
    monkeypatch.setenv("TUBETRAIL_HOME", str(tmp_path))
    assert apply_values(inputs, dict(os.environ)) == {"directory": str(tmp_path)}
