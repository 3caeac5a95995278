"""The composition root of tubetrail: every extension point's registry, listed in one place
(as Dagster's ``definitions.py`` lists an example project's assets, jobs and resources).

Each room keeps its own registry where it is used, so no room imports upwards:

* **feeds** (the inbox's file kinds, in dependency order): ``ingest.feeds.FEEDS``;
* **instrument formats** (the PCR exports a results file may be): ``lab.instruments.REGISTRY``;
* **SMS providers**: ``notify.PROVIDERS`` (``[sms] provider`` names one);
* **view rules** (the derived views over the facts, in dependency order):
  ``warehouse.views.VIEW_RULES``;
* **flows and deployments**: ``prefect.yaml`` (read by ``flows.serve``).

``tubetrail serve`` serves :func:`deployments`; ``tests/test_definitions.py`` checks that the
registries agree with each other and with ``prefect.yaml``. To add a feed, a format, a provider,
a view rule or a flow, add it to its room's registry: it then appears here.

The layers, lowest first (a module imports only from its own layer or a lower one; checked by
``tests/test_layers.py``): :data:`LAYERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.serve import DEPLOYMENT_FILE, build_deployments, deployment_specs
from ingest.feeds import FEEDS
from lab.instruments import REGISTRY
from notify import PROVIDERS
from warehouse.views import VIEW_RULES

#: the top-level folders of Python code, lowest layer first; a folder imports only from itself
#: and from folders before it in this tuple (one tuple entry may hold rooms of the same floor)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("kernel",),                    # configuration, secrets, row rules, SQL helpers, table reading
    ("sampling", "lab"),            # domains: collection, laboratory
    ("reporting",),                 # domain: coverage, status, reminders, alerts, report files
    ("notify",),                    # sending: SMS providers
    ("warehouse",),                 # schema, migrations, every write, the views of all domains
    ("ingest",),                    # the inbox: feeds, discovery, batches
    ("flows",),                     # Prefect: tasks, retries, artifacts, limits, deployments
    ("tubetrail",),                 # the app: CLI, this composition root, the report server
    ("devtools",),                  # not shipped: simulator, demo, loopback stand-ins
    ("bench", "tests"),             # benchmarks and tests
)


@dataclass(frozen=True)
class Definitions:
    feeds: tuple[str, ...]
    instrument_formats: tuple[str, ...]
    sms_providers: tuple[str, ...]
    view_rules: tuple[str, ...]
    flows: tuple[str, ...]


def definitions() -> Definitions:
    """What this installation of tubetrail consists of (names only: nothing is opened)."""
    return Definitions(
        feeds=tuple(FEEDS),
        instrument_formats=tuple(fmt.name for fmt in REGISTRY),
        sms_providers=tuple(PROVIDERS),
        view_rules=tuple(name for name, _define, _section in VIEW_RULES),
        flows=tuple(spec["name"] for spec in deployment_specs()),
    )


def deployments() -> list:
    """Every deployment of ``prefect.yaml``, built (what ``tubetrail serve`` serves)."""
    return build_deployments(DEPLOYMENT_FILE)
