"""Test set-up: a private PREFECT_HOME (cached results must not leak between runs), a test
ID-hash key, and one Prefect server for the whole session, started only by flow tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="tubetrail-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
# No temporary server behind a test's back: a flow run outside the harness fails ("No Prefect API
# URL provided") instead of starting one, so a Prefect test cannot hide in the quick lane.
os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
os.environ["TUBETRAIL_ID_HASH_KEY"] = "tubetrail-test-key-0123456789"

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# No test may depend on machine speed (CI is a loaded 2-core machine): Hypothesis' default 200 ms
# deadline per example and its too-slow health check are off for every property test.
settings.register_profile("tubetrail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tubetrail")

from kernel.config import Config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "DESIGN.md").exists():
        pytest.fail(f"{SHARED} is missing: the repository must be checked out with shared/ beside it")
    return SHARED


#: the fixtures that need a Prefect server: a test that uses one, directly, through another fixture or
#: by ``usefixtures``, is marked ``prefect`` at collection (``make test-quick`` leaves them out)
PREFECT_FIXTURES = frozenset({"prefect_server"})
#: every test under tests/flows/ is a flow test, with the harness or a server of its own
FLOW_TESTS = Path(__file__).resolve().parent / "flows"


def needs_prefect(item) -> bool:
    return bool(PREFECT_FIXTURES.intersection(getattr(item, "fixturenames", ()))) or (
        FLOW_TESTS in Path(str(item.path)).resolve().parents)


def pytest_collection_modifyitems(config, items):
    """The ``prefect`` marker is never written by hand: it follows the harness fixture (directly,
    through another fixture or ``usefixtures``) and the tests/flows/ folder. A test elsewhere that
    starts a Prefect server of its own marks itself ``@pytest.mark.prefect``."""
    for item in items:
        if needs_prefect(item):
            item.add_marker(pytest.mark.prefect)


def pytest_unconfigure(config):
    """Stop Prefect's two daemon event-loop threads before the test process exits. A flow run in
    the process leaves them running, and what their loops still hold is never freed: DuckDB's
    bindings then print nanobind's "leaked N instances" block at interpreter exit, at the end of
    ``make test`` (the CLI and the demo, whose processes end otherwise, never print it). Prefect
    has no public call to stop the run-sync loop, so both are read from its module's globals and
    shut down alike (never created here: a loop not started is left alone)."""
    import sys

    threads = sys.modules.get("prefect._internal.concurrency.threads")
    if threads is None:
        return
    for name in ("_global_loop", "_run_sync_loop"):
        loop = getattr(threads, name, None)
        if loop is not None and loop.thread.is_alive():
            loop.shutdown()
            loop.thread.join(10)


@pytest.fixture(scope="session")
def prefect_server():
    """One real Prefect server (SQLite in the private PREFECT_HOME) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config().with_warehouse(tmp_path / "wh.duckdb")




# The shared fixtures of tests/builders.py, offered to every test (after ``write``, which it uses).
from tests.builders import called, write  # noqa: E402, F401 - write: many tests import it from here
