"""The live round dashboard in the Prefect UI: one fixed artifact key per round, a new version by
every ingest run that brings something, the positive pools of the round in one table beside it."""

import json

import pytest

from tests.builders import open_test_round
from tests.reporting.test_dashboard import SECRETS, build

pytestmark = pytest.mark.usefixtures("prefect_server")

ROUND = "RDASH1"  # a round of this test only: keys are shared by every test on the session's server


def read_latest(key: str):
    """The Artifacts page's entry of a key: its latest version."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    with get_client(sync_client=True) as client:
        return client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key])))


def test_one_dashboard_key_per_round_updated_by_every_ingest_run(tmp_path, cfg):
    from flows.ingest import ingest_inbox
    from reporting.dashboard import dashboard_key, positive_pools_key
    from tests.flows.test_ingest_flow import read_artifacts

    key = dashboard_key(ROUND)
    assert key == "round-dashboard-rdash1"
    open_test_round(cfg, ROUND)
    # the morning: reference data and the scans (as of the latest fact, the seals at 11:30)
    ingest_inbox(str(build(tmp_path / "morning", lab=False)), None, cfg.warehouse.path)
    (first,) = read_artifacts(key)
    assert first.description.startswith(f"Live dashboard of round {ROUND}, as of 2022-04-04 11:30 +08:00")
    assert first.data.startswith(f"# Live dashboard: round {ROUND}\n")
    assert "As of **2022-04-04 11:30 +08:00**" in first.data and "| 5 | 5 | 0 | 0 | 0 | 0 |" in first.data
    assert not read_artifacts(positive_pools_key(ROUND))

    # the afternoon: boxes, receipts and two plates, one invalid, one calling a positive pool
    ingest_inbox(str(build(tmp_path / "afternoon", chain=False)), None, cfg.warehouse.path)
    second, again = read_artifacts(key)  # newest first: one key, two versions
    assert again.id == first.id
    assert "As of **2022-04-04 16:30 +08:00**" in second.data
    assert "| P2 | L1 | P2 | 2022-04-04 16:30 +08:00 | negative control shows a target | 1 | 1 |" in second.data
    assert "| 2022-04-04 16:00 +08:00 | pool_positive | Positive pool TA: 3 people to re-sample (lab L1) | published |" \
        in second.data
    (latest,) = read_latest(key)  # the Artifacts page shows the key once: its latest version
    assert latest.data == second.data
    (pools,) = read_artifacts(positive_pools_key(ROUND))
    rows = json.loads(pools.data) if isinstance(pools.data, str) else pools.data
    assert [(r["tube"], r["people"], r["due by"]) for r in rows] == [("TA", 3, "2022-04-04 22:00 +08:00")]
    for text in (first.data, second.data, json.dumps(rows, ensure_ascii=False)):
        for secret in SECRETS:
            assert secret not in text

    # nothing new (every file seen before, no alert to publish): the dashboard is left as it is
    ingest_inbox(str(tmp_path / "afternoon"), None, cfg.warehouse.path)
    assert len(read_artifacts(key)) == 2
