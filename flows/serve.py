"""``tubetrail serve``: every deployment of ``prefect.yaml`` served from this process, for a
local setup without workers (Prefect's ``serve``). The schedules, parameters, descriptions and
tags come from ``prefect.yaml``, so the file stays the one place deployments are declared."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect.schedules import Cron

REPO = Path(__file__).resolve().parents[1]
#: where the deployments are declared
DEPLOYMENT_FILE = REPO / "prefect.yaml"


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
            tags=d.get("tags") or [], schedules=schedules or None,
        ))
    return deployments
