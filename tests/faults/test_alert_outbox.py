"""Alerts are recorded with the facts that raise them (the alert outbox) and delivered once from
there: a process killed after a results file's transaction and before its alerts went out
loses none of them, and no crash or re-run publishes one twice (DESIGN §9)."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone

import duckdb
import httpx
import pytest

from ingest.feeds import FEEDS
from ingest.take import take_file
from tests.conftest import REPO, write
from tests.builders import P, SH, build, open_test_round
from devtools.alert_inbox import AlertInbox
from kernel.secrets import id_hash_key
from warehouse.connection import open_warehouse
from ingest.discover import discover

#: take every file of an inbox, then die by SIGKILL before any alert is published
TAKE_THEN_DIE = """
import os, signal, sys
from pathlib import Path
from ingest.take import take_file
from kernel.config import Config
from ingest.discover import discover
cfg = Config().with_warehouse(sys.argv[2])
for f in discover(Path(sys.argv[1])):
    take_file(f, cfg)
os.kill(os.getpid(), signal.SIGKILL)
"""

BROKEN = "lab_id,run_id\n"  # no instrument export at all: refused whole


def outbox(cfg):
    con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
    try:
        return con.sql("SELECT alert_id, state, attempts, published_at FROM alert_outbox ORDER BY alert_id").fetchall()
    finally:
        con.close()


@pytest.fixture
def receiver(tmp_path):
    with AlertInbox("http://127.0.0.1:0/alerts", tmp_path / "alerts.jsonl") as inbox:
        yield inbox.url, inbox.received


@pytest.mark.usefixtures("prefect_server")
def test_alerts_of_a_run_killed_before_publishing_go_out_once_with_the_next_run(tmp_path, cfg, prefect_server, receiver):
    from prefect.automations import Automation

    from flows.alerts import (AUTOMATIONS, alert_event_id, artifact_key, ensure_alert_automations, refused_artifact_key,
                              single_artifact_key)
    from flows.ingest import ingest_inbox
    from tests.flows.test_ingest_flow import read_artifacts
    from kernel.tables import content_hash

    url, received = receiver
    ensure_alert_automations(url)
    open_test_round(cfg)
    inbox = build(tmp_path / "in")
    broken = write(inbox / "results/L1/broken.csv", BROKEN)

    died = subprocess.Popen([sys.executable, "-c", TAKE_THEN_DIE, str(inbox), str(cfg.warehouse.path)], cwd=REPO,
                            env=os.environ.copy(), stderr=subprocess.PIPE, text=True)
    assert died.wait(timeout=300) == -signal.SIGKILL, died.stderr.read()
    # every file was taken, and what they raise is in the outbox, pending
    refused = f"file_refused:{content_hash(broken)}"
    singles = ["positive_single:TS1", "positive_single:TS2"]  # single tubes: a person positive each
    expected = sorted(["pool_positive:TA", "pool_positive:TC", "pool_positive:TD", *singles, refused])
    assert [(a, s) for a, s, _, _ in outbox(cfg)] == [(a, "pending") for a in expected]

    con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
    warehouse = con.sql("SELECT value FROM warehouse_settings WHERE name = 'warehouse_id'").fetchall()[0][0]
    con.close()
    ids = {a: str(alert_event_id(warehouse, a)) for a in expected}
    keys = {f"pool_positive:{t}": artifact_key(t) for t in ("TA", "TC", "TD")} | {
        refused: refused_artifact_key(content_hash(broken))} | {
        s: single_artifact_key(s.split(":")[1]) for s in singles}

    def artifacts(alert_id):  # this warehouse's artifacts of an alert (tests share one server)
        return [a for a in read_artifacts(keys[alert_id]) if ids[alert_id] in (a.description or "")]

    def stored_events() -> list[dict]:
        response = httpx.post(f"{prefect_server}/events/filter",
                              json={"filter": {"id": {"id": list(ids.values())}}, "limit": 50})
        response.raise_for_status()
        return response.json()["events"]

    def wait_for(probe, n):
        deadline = time.monotonic() + 90  # events and notifications land asynchronously, within seconds
        while len(found := probe()) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        return found

    # the next run skips every file as seen and still publishes what the dead one left pending
    outcomes = ingest_inbox(str(inbox), None, cfg.warehouse.path)
    assert {o.status for o in outcomes} == {"skipped"}
    first = outbox(cfg)
    assert [(a, s, n) for a, s, n, _ in first] == [(a, "published", 1) for a in expected]
    for alert_id in expected:
        assert len(artifacts(alert_id)) == 1, alert_id
    ta = artifacts("pool_positive:TA")[0].data
    assert "**3 people**" in ta and P[1][:6] + "********" + P[1][-4:] in ta
    for secret in [*P.values(), "张三", "13800138000"]:
        assert secret not in ta
    events = wait_for(stored_events, 6)
    assert sorted(e["id"] for e in events) == sorted(ids.values())
    by_name = {e["resource"]["prefect.resource.name"]: e for e in events}
    assert by_name["TA"]["event"] == "tubetrail.pool.positive" and by_name["TA"]["payload"]["people"] == 3
    assert by_name["results/L1/broken.csv"]["event"] == "tubetrail.file.refused"
    assert by_name["TS1"]["event"] == by_name["TS2"]["event"] == "tubetrail.single.positive"
    assert not {n for n in P.values() if n in json.dumps(events)}
    notified = wait_for(lambda: received, 6)
    assert sorted(r["subject"] for r in notified) == [
        "File refused: results/L1/broken.csv", "Positive pool TA", "Positive pool TC", "Positive pool TD",
        "Positive single tube TS1", "Positive single tube TS2"]

    # a second run publishes nothing more
    ingest_inbox(str(inbox), None, cfg.warehouse.path)
    assert outbox(cfg) == first
    for alert_id in expected:
        assert len(artifacts(alert_id)) == 1, alert_id

    # a publisher killed between publishing TA and marking it: the next run publishes it again
    # under the same event id, and no second artifact, stored event or notification appears
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        con.execute("UPDATE alert_outbox SET state = 'pending', published_at = NULL WHERE alert_id = 'pool_positive:TA'")
    ingest_inbox(str(inbox), None, cfg.warehouse.path)
    again = dict((a, (s, n)) for a, s, n, _ in outbox(cfg))
    assert again["pool_positive:TA"] == ("published", 2)
    assert len(artifacts("pool_positive:TA")) == 1
    time.sleep(5)  # room for a duplicate to show; its absence is what is checked
    assert len(stored_events()) == 6
    assert len(received) == 6
    for name, *_ in AUTOMATIONS.values():
        Automation.read(name=name).delete()


def test_alerts_are_written_in_the_transaction_of_their_file(tmp_path, cfg, monkeypatch):
    """A results file whose transaction fails after its alerts were inserted leaves no alert and
    no fact; taken again, the file and its alerts appear together, once."""
    from reporting.alerts import OutboxAlert, positive_alerts_of_file
    from warehouse.views import define_views
    from warehouse.writer import record_alerts

    open_test_round(cfg)
    files = discover(build(tmp_path / "in"))
    first_results = next(f for f in files if f.kind == "results")
    for f in files[:files.index(first_results)]:
        assert take_file(f, cfg).status == "accepted"

    def announce_then_fail(con, cfg, content_hashes):
        (content_hash,) = content_hashes
        alerts = positive_alerts_of_file(con, cfg, content_hash)
        # the real rule: P1 turns the pool TA positive, and the single tube TS1 (its person)
        assert [(a.kind, a.subject) for a in alerts] == [("pool_positive", "TA"), ("positive_single", "TS1")]
        # a second alert the outbox refuses (no kind): the insert fails after TA's row went in
        return [[*alerts, OutboxAlert(None, "X", datetime(2022, 4, 4, tzinfo=timezone.utc))]]

    with monkeypatch.context() as patched:
        patched.setitem(FEEDS, "results", replace(FEEDS["results"], announce=announce_then_fail))
        with pytest.raises(duckdb.ConstraintException):
            take_file(first_results, cfg)

    def state():
        con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
        try:
            return (con.sql("SELECT count(*) FROM ingest_ledger WHERE kind = 'results'").fetchall()[0][0],
                    con.sql("SELECT count(*) FROM results").fetchall()[0][0],
                    con.sql("SELECT alert_id, kind, subject, round_id, raised_at, state FROM alert_outbox").fetchall())
        finally:
            con.close()

    assert state() == (0, 0, [])
    assert take_file(first_results, cfg).status == "accepted"
    ledger, results, alerts = state()
    assert ledger == 1 and results > 0
    assert alerts == [("pool_positive:TA", "pool_positive", "TA", "R1", datetime(2022, 4, 4, 16, tzinfo=SH), "pending"),
                      ("positive_single:TS1", "positive_single", "TS1", "R1", datetime(2022, 4, 4, 16, tzinfo=SH),
                       "pending")]

    # the same alert recorded again (a retry, a later file re-reporting the plate) is not doubled
    assert take_file(first_results, cfg).status == "skipped"
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        (taken,) = con.execute("SELECT content_hash FROM ingest_ledger WHERE kind = 'results'").fetchone()
        again = positive_alerts_of_file(con, cfg, taken)
        assert [a.alert_id for a in again] == ["pool_positive:TA", "positive_single:TS1"]
        con.begin()
        record_alerts(con, again)
        con.commit()
    assert state()[2] == alerts
