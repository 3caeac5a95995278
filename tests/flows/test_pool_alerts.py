"""Positive-pool alerts against the real Prefect server: an artifact per pool, masked; a
``tubetrail.pool.positive`` event per pool; and the automation that turns each event into a
notification, received by a real HTTP server on loopback."""

import json
import time

import httpx
import pytest

from tests.builders import AS_OF, P, build, open_test_round
from devtools.alert_inbox import AlertInbox
from kernel.secrets import id_hash_key
from warehouse.connection import open_warehouse

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def receiver(tmp_path):
    """The demo's notification inbox, on a free port."""
    with AlertInbox("http://127.0.0.1:0/alerts", tmp_path / "alerts.jsonl") as inbox:
        yield inbox.url, inbox.received


def test_positive_pools_alert_the_coordinator(tmp_path, cfg, prefect_server, receiver):
    from flows.alerts import AUTOMATIONS, alert_event_id, artifact_key, ensure_alert_automations, single_artifact_key
    from flows.ingest import ingest_inbox
    from tests.flows.test_ingest_flow import read_artifacts

    url, received = receiver
    ensure_alert_automations(url)
    ensure_alert_automations(url)  # idempotent: replaced, not doubled
    open_test_round(cfg)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        (warehouse,) = con.execute("SELECT value FROM warehouse_settings WHERE name = 'warehouse_id'").fetchone()
    inbox = build(tmp_path / "in")
    ingest_inbox(str(inbox), None, cfg.warehouse.path)
    # this warehouse's event ids (tests share one server): each alert's artifact names its event
    ids = {tube: str(alert_event_id(warehouse, f"pool_positive:{tube}")) for tube in ("TA", "TC", "TD")}

    def artifacts(tube):
        return [a for a in read_artifacts(artifact_key(tube)) if ids[tube] in (a.description or "")]

    # TA and TC turn positive, TD's single target persists; TS1/TS2 are single tubes, no pool
    for tube, people in (("TA", 3), ("TC", 1), ("TD", 1)):
        # one publication each (the outbox test counts them); a loaded server may store a
        # client's retried request twice, so only the content is checked here
        artifact, *again = artifacts(tube)
        assert all(a.data == artifact.data for a in again)
        assert f"**{people} people**" in artifact.data and f"| {tube} |" in artifact.data
    assert not read_artifacts(artifact_key("TS1"))
    # every positive call is seen at once (issue 13.5): the single tubes TS1 and TS2, a person each
    for tube in ("TS1", "TS2"):
        single_id = str(alert_event_id(warehouse, f"positive_single:{tube}"))
        (single,) = [a for a in read_artifacts(single_artifact_key(tube)) if single_id in (a.description or "")]
        assert "**1 person positive**" in single.data and P[11] not in single.data
    ta = artifacts("TA")[0].data
    assert P[1][:6] + "********" + P[1][-4:] in ta and "张*" in ta and "138****8000" in ta
    for secret in [*P.values(), "张三", "13800138000", "1 Road"]:
        assert secret not in ta

    summary = read_artifacts("chain-summary")[0].data
    assert "Plates: 2 valid, 2 invalid" in summary and "Positive pools: 3, people flagged: 5" in summary
    assert "| positive | 3 |" in summary and "| plate_invalid | 2 |" in summary

    def pool_events() -> list[dict]:
        response = httpx.post(f"{prefect_server}/events/filter",
                              json={"filter": {"event": {"name": ["tubetrail.pool.positive"]},
                                               "id": {"id": list(ids.values())}}, "limit": 50})
        response.raise_for_status()
        return response.json()["events"]

    deadline = time.monotonic() + 60  # events are sent asynchronously: they land within seconds
    while len(events := pool_events()) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(e["resource"]["prefect.resource.name"] for e in events) == ["TA", "TC", "TD"]
    ta_event = next(e for e in events if e["resource"]["prefect.resource.name"] == "TA")
    assert ta_event["payload"]["people"] == 3 and ta_event["payload"]["plate_id"] == "P1"
    assert not {n for n in P.values() if n in json.dumps(events)}

    deadline = time.monotonic() + 60
    while len(received) < 6 and time.monotonic() < deadline:
        time.sleep(0.5)
    subjects = sorted(r["subject"] for r in received)
    # and at the latest fact (20:00, the round open) 黄浦区 has sent nothing since its box at 12:00
    assert subjects == ["District 黄浦区 silent in round R1: no scan and no box for 2 h (last heard 04-04 12:00 +08:00)",
                        "Positive pool TA", "Positive pool TC", "Positive pool TD",
                        "Positive single tube TS1", "Positive single tube TS2"]
    assert any("3 people" in r["body"] for r in received)
    from prefect.automations import Automation

    for name, *_ in AUTOMATIONS.values():
        Automation.read(name=name).delete()


def test_urgent_re_samples_overdue_raise_one_alert_per_pool(tmp_path, cfg, prefect_server):
    """Issue 13.6: urgent orders due at 20:00 and not re-sampled the next noon raised nothing.
    Judged at the report's time (and at the latest fact after each ingest), once per pool."""
    import duckdb

    from flows.alerts import artifact_key
    from flows.ingest import ingest_inbox
    from flows.report import round_report
    from tests.flows.test_ingest_flow import read_artifacts

    open_test_round(cfg)
    ingest_inbox(str(build(tmp_path / "in")), None, cfg.warehouse.path)

    def overdue():
        con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
        try:
            return con.sql("SELECT subject, state, payload->>'people_overdue' FROM alert_outbox"
                           " WHERE kind = 'urgent_overdue' ORDER BY 1").fetchall()
        finally:
            con.close()

    assert overdue() == []  # at the latest fact (20:00 the first day) nothing is due yet
    round_report("R1", str(tmp_path / "report"), AS_OF, None, cfg.warehouse.path)
    assert overdue() == [("TA", "published", "3"), ("TC", "published", "1"), ("TD", "published", "1")]
    ta = [a for a in read_artifacts(artifact_key("TA", "overdue-")) if "3 people" in a.data]
    assert ta and all(n not in ta[0].data for n in P.values())
    round_report("R1", str(tmp_path / "report"), AS_OF, None, cfg.warehouse.path)
    assert len(overdue()) == 3  # once per pool
