"""Issue 16.2: every domain function a flow calls on a warehouse connection works on a fresh
session with just the views defined (``warehouse.session``): none leans on a macro another
function happened to define earlier on the same connection (the ``coverage()`` macro of
``reporting.coverage`` was one). Each call below opens its own session. The tiny round of
``tests/reporting/test_dashboard.py``, taken through the real ingest, no Prefect."""

from datetime import datetime

import pytest

from ingest.discover import discover
from ingest.take import take_file
from kernel.config import Config
from kernel.secrets import id_hash_key
from tests.builders import SH, open_test_round
from tests.reporting.test_dashboard import AS_OF, build
from warehouse.session import WarehouseSession


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> WarehouseSession:
    root = tmp_path_factory.mktemp("fresh")
    cfg = Config().with_warehouse(root / "wh.duckdb")
    open_test_round(cfg)
    for f in discover(build(root / "in")):
        assert take_file(f, cfg).status == "accepted"
    return WarehouseSession(cfg, id_hash_key())


def test_the_report_and_its_round(session, tmp_path):
    from reporting.report import coverage_by_district_rows, current_round, write_report

    with session.read(views=True) as con:
        assert current_round(con, AS_OF) == "R1"
    with session.read(views=True) as con:
        figures = write_report(con, session.cfg, "R1", AS_OF, tmp_path / "out")
    assert coverage_by_district_rows(figures) == [
        {"district": "黄浦区", "registered": 8, "sampled": 6, "resulted": 3, "untested": 2, "coverage %": 75.0}]


def test_the_dashboard_and_its_positive_pools_each_alone(session):
    from reporting.dashboard import dashboard_rounds, positive_pool_rows, round_dashboard

    with session.read(views=True) as con:
        assert dashboard_rounds(con, AS_OF) == ["R1"]
    with session.read(views=True) as con:  # before the dashboard, which defines coverage and masking
        pools = positive_pool_rows(con, session.cfg, "R1", AS_OF)
    assert [(p["tube"], p["people"], p["still to re-sample"], p["overdue"]) for p in pools] == [("TA", 3, 3, 3)]
    with session.read(views=True) as con:
        assert "| 8 | 6 | 3 | 75.00 % |" in round_dashboard(con, session.cfg, "R1", AS_OF)


def test_the_chain_summary_at_the_latest_fact(session):
    from reporting.summary import chain_summary, latest_fact_time

    with session.read() as con:  # no views needed
        as_of = latest_fact_time(con)
    assert as_of == datetime(2022, 4, 4, 16, 30, tzinfo=SH)
    with session.read(snapshot=True) as con:
        summary = chain_summary(con, as_of)
    assert summary["rounds"][0] | {} == {"round_id": "R1", "tubes_opened": 5, "tubes_sealed": 5, "tubes_received": 3,
                                         "tubes_refused": 1, "people_sampled": 8, "outside_register": 0}


def test_the_timed_alert_rules(session):
    from reporting.timed_alerts import timed_alerts

    with session.read(views=True) as con:
        alerts = timed_alerts(con, session.cfg, AS_OF)
    found = {(a.kind, a.subject) for a in alerts}
    assert ("urgent_overdue", "TA") in found  # TA's three people were due by 22:00 the day before
    assert any(kind == "box_lost" and "BX" in subject for kind, subject in found)


def test_the_capacity_plan_and_stock(session):
    from reporting.plan import capacity_plan
    from reporting.stock import stock_alerts, stock_judged_at, stock_low_alerts

    with session.read() as con:  # no stock counts in this inbox: the latest fact
        assert stock_judged_at(con) == datetime(2022, 4, 4, 16, 30, tzinfo=SH)
    with session.read(views=True) as con:
        assert stock_low_alerts(con, session.cfg, AS_OF) == []
    with session.read(views=True) as con:
        plan = capacity_plan(con, session.cfg, "R1", AS_OF)
    assert plan.figures["round_id"] == "R1" and plan.figures["tubes"] > 0
    assert stock_alerts(plan.stock, session.cfg, "R1", AS_OF) == []


def test_the_reminder_plan(session):
    from reporting.reminders import plan_reminders
    from sampling.rounds import round_open_at

    when = datetime(2022, 4, 4, 15, tzinfo=SH)
    with session.read() as con:
        assert round_open_at(con, when) == "R1"
    with session.read(snapshot=True) as con:
        plan = plan_reminders(con, session.cfg.sms, session.cfg.city.timezone, "R1", when, session.cfg.key_groups)
    assert plan.round_id == "R1" and plan.counts


def test_the_export_ledger(session):
    from warehouse.exports import find_or_record_export

    with session.write() as con:  # no views: it defines what it needs itself
        made = find_or_record_export(con, session.cfg, datetime(2022, 4, 4, tzinfo=SH), "test-run")
    # TA is a pool: no individual result is final yet, so nothing is recorded (the ledger's cases:
    # tests/reporting/test_exports.py, each on a session without views)
    assert (made.export, made.rows.height, made.created) == (None, 0, False)
    assert made.until == datetime(2022, 4, 4, 16, tzinfo=SH)  # the latest call: TA's


def test_the_pool_alerts_members_come_from_the_register_through_its_index(session, monkeypatch):
    """Issue 15: the members' register rows (grid, name, phone) of a positive tube are looked up
    through the register's unique index (an IN list of their keys), not by a join that scanned
    the whole register for every results batch; the same alerts as through the join."""
    import reporting.alerts as alerts

    looked_up: list[str] = []

    def spy(con, table, key, relation, alias="t"):
        looked_up.append(table)
        return lookup(con, table, key, relation, alias)

    lookup = alerts.sql_key_lookup
    with session.read(views=True) as con:
        files = [h for (h,) in con.execute("SELECT content_hash FROM ingest_ledger WHERE kind = 'results'"
                                           " ORDER BY content_hash").fetchall()]
    monkeypatch.setattr(alerts, "sql_key_lookup", spy)
    with session.read(views=True) as con:
        by_index = alerts.positive_calls(con, session.cfg, files, AS_OF)
    assert looked_up and looked_up[0].endswith(".register")
    monkeypatch.setattr(alerts, "INDEX_LOOKUP_MAX_KEYS", 0)  # as for more members than go through the index
    with session.read(views=True) as con:
        by_join = alerts.positive_calls(con, session.cfg, files, AS_OF)
    assert len(looked_up) == 1
    assert by_index == by_join
    (ta,) = [a for a in by_index if a.tube_barcode == "TA"]
    assert ta.people == 3 and all(grid for *_, grid in ta.members)  # every member's grid, from the register
