"""The demo's flows must talk to the Prefect server it started or found (the UI's), not to a
temporary server of their own: Prefect reads its settings at import, so an environment variable
set afterwards reaches only child processes."""

import os

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from tubetrail.cli import prefect_api


def test_prefect_api_points_this_process_and_its_children_at_the_server(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "restored-after-the-test")
    before = PREFECT_API_URL.value()
    with prefect_api("http://127.0.0.1:4999") as api:
        assert api == "http://127.0.0.1:4999/api"
        assert PREFECT_API_URL.value() == api
        assert str(get_client().api_url).rstrip("/") == api
        assert os.environ["PREFECT_API_URL"] == api
    assert PREFECT_API_URL.value() == before
