"""Every alert of DESIGN §8 told the generic way (lab over capacity, tube lost, box lost, district
silent, lab silent, stock low) end to end against the real Prefect server: outbox → publish
(artifact and event) → its automation → a notification to a loopback receiver, with the alert's
title and summary and no personal data; once, whatever is published again."""

import time
from datetime import datetime

import duckdb
import httpx
import pytest
from prefect import flow

from tests.builders import open_test_round
from tests.lab.test_lost import P, SH, build
from devtools.alert_inbox import AlertInbox
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse
from ingest.discover import discover
from warehouse.writer import record_alerts

pytestmark = pytest.mark.usefixtures("prefect_server")


@flow(name="publish-alerts")
def publish_flow(warehouse: str) -> int:
    """The publishing task as the ingest and report flows run it (under the writer slot)."""
    from flows.alerts import publish_alerts
    from flows.limits import ensure_concurrency_limits
    from kernel.config import Config

    ensure_concurrency_limits(Config().with_warehouse(warehouse))
    return publish_alerts("in the test", None, warehouse)


@pytest.fixture
def receiver(tmp_path):
    with AlertInbox("http://127.0.0.1:0/alerts", tmp_path / "alerts.jsonl") as inbox:
        yield inbox.url, inbox.received


def other_alerts(raised: datetime):
    """The kinds other rules raise (their rules live with the daily report and the stock feed),
    told as those rules tell them: counts, places, ISO times."""
    from reporting.alerts import DISTRICT_SILENT, LAB_OVER_CAPACITY, LAB_SILENT, STOCK_LOW, generic_alert

    at = raised.isoformat()
    return [
        generic_alert(LAB_OVER_CAPACITY, "L1:2022-04-04", raised, round_id="R1", resource="L1",
                      title="Lab L1 over its daily capacity on 2022-04-04: 2300 tubes for 2040 (113 %)",
                      summary="Lab L1 received 2300 tubes on 2022-04-04 for a daily capacity of 2040: move boxes to another lab.",
                      facts={"lab": "L1", "day": "2022-04-04", "received": 2300, "capacity": 2040, "at": at}),
        generic_alert(DISTRICT_SILENT, "黄浦区:2022-04-04T14", raised, round_id="R1", resource="黄浦区",
                      title="District 黄浦区 silent for 2 h (round R1)",
                      summary="No scan, box or receipt from 黄浦区 since 12:00 +08:00: call its command post.",
                      facts={"district": "黄浦区", "silent_hours": 2, "last_fact_at": at}),
        generic_alert(LAB_SILENT, "L2:2022-04-04T14", raised, round_id="R1", resource="L2",
                      title="Lab L2 silent for 2 h (round R1)",
                      summary="No receipt or result from lab L2 since 12:00 +08:00: call the lab.",
                      facts={"lab": "L2", "silent_hours": 2, "last_fact_at": at}),
        generic_alert(STOCK_LOW, "L1:reagent_kit:2022-04-04", raised, resource="L1/reagent_kit",
                      title="Reagent kits at L1: 3.5 days in hand, under 7",
                      summary="L1 holds reagent kits for 3.5 days of whole-population testing (minimum 7): order more.",
                      facts={"holder": "L1", "item": "reagent_kit", "days_in_hand": 3.5, "min_days": 7, "at": at}),
    ]


def test_every_generic_alert_reaches_the_coordinator_once(tmp_path, cfg, prefect_server, receiver):
    from prefect.automations import Automation

    from flows.alerts import AUTOMATIONS, alert_event_id, artifact_key, ensure_alert_automations
    from ingest.take import take_file
    from reporting.alerts import BOX_LOST, GENERIC_KINDS, TUBE_LOST, lost_custody_alerts
    from tests.flows.test_ingest_flow import read_artifacts

    url, received = receiver
    created = ensure_alert_automations(url)  # once for the whole test: one automation per event
    assert {GENERIC_KINDS[k].event for k in GENERIC_KINDS} <= set(created)
    # the lost box and tubes from their real rule (a tiny round, judged the next day at noon)
    open_test_round(cfg)
    for f in discover(build(tmp_path / "in")):
        take_file(f, cfg)
    raised = datetime(2022, 4, 4, 14, tzinfo=SH)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        lost = lost_custody_alerts(con, cfg, datetime(2022, 4, 5, 12, tzinfo=SH))
        alerts = [next(a for a in lost if a.kind == BOX_LOST.kind),
                  next(a for a in lost if a.kind == TUBE_LOST.kind), *other_alerts(raised)]
        assert sorted(a.kind for a in alerts) == sorted(GENERIC_KINDS)  # every generic kind, once
        con.begin()
        record_alerts(con, alerts)
        con.commit()
        warehouse = con.execute("SELECT value FROM warehouse_settings WHERE name = 'warehouse_id'").fetchone()[0]

    def publish() -> int:
        return publish_flow(str(cfg.warehouse.path))

    assert publish() == len(alerts)
    ids = {a.alert_id: str(alert_event_id(warehouse, a.alert_id)) for a in alerts}

    def wait_for(probe, n):
        deadline = time.monotonic() + 90  # events and notifications land asynchronously, within seconds
        while len(found := probe()) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        return found

    def stored_events() -> list[dict]:
        response = httpx.post(f"{prefect_server}/events/filter",
                              json={"filter": {"id": {"id": list(ids.values())}}, "limit": 50})
        response.raise_for_status()
        return response.json()["events"]

    events = wait_for(stored_events, len(alerts))
    assert sorted(e["event"] for e in events) == sorted(GENERIC_KINDS[a.kind].event for a in alerts)
    box_event = next(e for e in events if e["event"] == "tubetrail.box.lost")
    assert box_event["resource"]["prefect.resource.id"] == "tubetrail.box.BX"
    # facts in the payload, times in city time
    assert box_event["payload"]["tubes"] == 2 and box_event["payload"]["departed_at"] == "2022-04-04T12:20+08:00"
    notified = wait_for(lambda: received, len(alerts))
    assert sorted((n["subject"], n["body"]) for n in notified) == sorted(
        (a.payload["title"], a.payload["summary"]) for a in alerts)
    for a in alerts:  # each alert's card, under its kind's prefix
        kind = GENERIC_KINDS[a.kind]
        (card,) = [x for x in read_artifacts(artifact_key(a.subject, kind.artifact_prefix))
                   if ids[a.alert_id] in (x.description or "")]
        assert card.data.startswith(f"# {a.payload['title']}\n")
    text = str(notified) + str(events)
    for secret in [*P.values(), "张三", "13800138000", "1 Road"]:
        assert secret not in text

    # published again (a second run, a retry): nothing pending, nothing sent
    assert publish() == 0
    con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
    try:
        assert con.sql("SELECT DISTINCT state FROM alert_outbox").fetchall() == [("published",)]
    finally:
        con.close()
    time.sleep(5)  # room for a duplicate to show; its absence is what is checked
    assert len(received) == len(alerts) and len(stored_events()) == len(alerts)
    for name, *_ in AUTOMATIONS.values():
        Automation.read(name=name).delete()
