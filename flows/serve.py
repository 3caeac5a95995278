"""``tubetrail serve``: every deployment of ``prefect.yaml`` served from this process, for a
local setup without workers (Prefect's ``serve``). The schedules, parameters, descriptions and
tags come from ``prefect.yaml``, so the file stays the one place deployments are declared.

The wheel ships ``prefect.yaml`` beside this module (``flows/prefect.yaml``, pyproject's
``force-include``); a source checkout reads the repository's own. A deployment names its flow by
module (``flows.report.round_report``), not by a file path relative to the directory it was
served from: nothing of the serving machine's folders is stored with it."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

REPO = Path(__file__).resolve().parents[1]
#: the copy the wheel ships beside this module
SHIPPED_DEPLOYMENT_FILE = Path(__file__).resolve().with_name("prefect.yaml")
#: where the deployments are declared: the shipped copy when installed, else the checkout's
DEPLOYMENT_FILE = SHIPPED_DEPLOYMENT_FILE if SHIPPED_DEPLOYMENT_FILE.exists() else REPO / "prefect.yaml"


def load_flow(entrypoint: str):
    """``flows/report.py:round_report`` → the flow object."""
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def deployment_specs(prefect_yaml: Path = DEPLOYMENT_FILE) -> list[dict]:
    """The ``deployments`` entries of ``prefect.yaml`` as written."""
    return yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")).get("deployments", [])


def build_deployments(prefect_yaml: Path = DEPLOYMENT_FILE) -> list:
    deployments = []
    for d in deployment_specs(prefect_yaml):
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in d.get("schedules") or [] if "cron" in s]
        deployments.append(load_flow(d["entrypoint"]).to_deployment(
            name=d["name"], description=d.get("description"), parameters=d.get("parameters") or {},
            tags=d.get("tags") or [], schedules=schedules or None, entrypoint_type=EntrypointType.MODULE_PATH,
        ))
    return deployments
