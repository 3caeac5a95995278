"""The daily and zero report, the labs' load per day, silent districts and labs and labs over
capacity (issue 14 parts 1 and 2), on a tiny round with known facts taken through the real ingest.

The round R1 runs 04-04 06:00–22:00 (+08:00) over 黄浦区, 徐汇区 and 静安区:

* 黄浦区 (site S1): tubes TA (3 people, a positive pool), TB (2, negative), TC (a single tube,
  positive: a person positive), TD (2, called only the next morning, 22.5 h after collection: a
  TAT breach), one box to L1 departing 11:10, received 12:00; the next morning two of TA's three
  people are re-sampled at home (site SH), received by L1 at 10:00, negative at 12:00;
* 徐汇区 (site S2): one tube TX (2 people, one of them medical staff: a key-group tube) at 07:50,
  a box to L1 at 08:30, then nothing: silent from 10:40;
* 静安区: nothing at all (a zero report every day, silent from 08:00);
* labs: L1 (capacity 3: receives 5 tubes on 04-04, over capacity; 2 on 04-05, not), L2
  (capacity 100, never used: silent), L3 (no capacity, never used: not silent, zeros).
"""

from datetime import datetime

import polars as pl
import pytest

from reporting.daily import DAILY_COLUMNS, LAB_LOAD_COLUMNS, daily_frame, lab_load_frame, silent_frame
from tests.conftest import write
from tests.builders import CONTROLS, ND, REGISTER_HEADER, SCAN_HEADER, SH, ingest, open_test_round, results_csv, ric
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse

D = {i: ric(f"31010119850202{i:03d}") for i in range(1, 15)}
DISTRICTS = ["黄浦区", "徐汇区", "静安区"]
#: tube -> (site, people, capacity, added HH:MM, sealed HH:MM)
TUBES = {"TA": ("S1", (1, 2, 3), 10, "09:00", "09:15"), "TB": ("S1", (4, 5), 10, "09:10", "09:25"),
         "TC": ("S1", (6,), 1, "10:00", "10:15"), "TD": ("S1", (7, 8), 10, "10:30", "10:45"),
         "TX": ("S2", (9, 10), 10, "07:50", "08:05")}
NEXT_MORNING_2PM = datetime(2022, 4, 5, 14, 0, tzinfo=SH)


def at(day: int, hhmm: str) -> str:
    return f"2022-04-0{day}T{hhmm}:00+08:00"


def person(i: int) -> str:
    district = "徐汇区" if i in (9, 10) else "静安区" if i == 14 else "黄浦区"
    key_group = "medical" if i == 9 else ""
    return (f"RIC,{D[i]},李{i},13800138{i:03d},{district},街道{district},居委{district},G-{district},"
            f"{i} Road,H{i},false,{key_group}")


def first_day(root):
    write(root / "sites/s.csv", "site_id,name,district,kind\nS1,One,黄浦区,fixed\nSH,Home,黄浦区,home\n"
                                "S2,Two,徐汇区,fixed\nS3,Three,静安区,fixed\n")
    write(root / "labs/l.csv", "lab_id,name,daily_capacity_tubes\nL1,Lab1,3\nL2,Lab2,100\nL3,Lab3,\n")
    write(root / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(person(i) for i in D) + "\n")
    scans = [SCAN_HEADER]
    for tube, (site, people, capacity, added, sealed) in TUBES.items():
        scans += [f"{at(4, added)},{site},C1,{tube},add,RIC,{D[i]},,,{capacity}" for i in people]
        scans.append(f"{at(4, sealed)},{site},C1,{tube},seal,,,,,")
    write(root / "scans/s.csv", "\n".join(scans) + "\n")
    write(root / "manifests/m.csv", "box_id,tube_barcode,site_id,packed_at,departed_at,lab_id\n"
          + "".join(f"B1,{t},S1,{at(4, '11:00')},{at(4, '11:10')},L1\n" for t in ("TA", "TB", "TC", "TD"))
          + f"B2,TX,S2,{at(4, '08:30')},{at(4, '08:40')},L1\n")
    write(root / "receipts/r.csv", "lab_id,box_id,tube_barcode,received_at\n"
          + f"L1,B2,TX,{at(4, '09:30')}\n"
          + "".join(f"L1,B1,{t},{at(4, '12:00')}\n" for t in ("TA", "TB", "TC", "TD")))
    write(root / "results/L1/P1.csv", results_csv("P1", "14:00", {
        **CONTROLS, "TA": ("25", "26", "30"), "TB": (ND, ND, "30"), "TC": ("22", "23", "30"), "TX": (ND, ND, "30")}))
    return root


def next_morning(root):
    """TD called at 09:00; P1 and P2 (of TA) re-sampled at home at 08:00, negative at 12:00."""
    write(root / "results/L1/P2.csv", results_csv("P2", "09:00", {**CONTROLS, "TD": (ND, ND, "30")}, day="2022-04-05"))
    scans = [SCAN_HEADER]
    for i in (1, 2):
        scans += [f"{at(5, '08:00')},SH,C9,RS{i},add,RIC,{D[i]},,,1", f"{at(5, '08:05')},SH,C9,RS{i},seal,,,,,"]
    write(root / "scans/rs.csv", "\n".join(scans) + "\n")
    write(root / "manifests/rs.csv", "box_id,tube_barcode,site_id,packed_at,departed_at,lab_id\n"
          + "".join(f"BR,RS{i},SH,{at(5, '09:00')},{at(5, '09:10')},L1\n" for i in (1, 2)))
    write(root / "receipts/rs.csv", "lab_id,box_id,tube_barcode,received_at\n"
          + "".join(f"L1,BR,RS{i},{at(5, '10:00')}\n" for i in (1, 2)))
    write(root / "results/L1/P3.csv", results_csv(
        "P3", "12:00", {**CONTROLS, "RS1": (ND, ND, "30"), "RS2": (ND, ND, "30")}, day="2022-04-05"))
    return root


@pytest.fixture
def first(tmp_path, cfg):
    open_test_round(cfg, districts=DISTRICTS)
    ingest(first_day(tmp_path / "day1"), cfg)
    return cfg


@pytest.fixture
def both(first, tmp_path):
    ingest(next_morning(tmp_path / "day2"), first)
    return first


def frames(cfg, as_of, snapshot=True):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=snapshot)
        return (daily_frame(con, cfg, "R1", as_of), lab_load_frame(con, cfg, "R1", as_of),
                silent_frame(con, cfg, "R1", as_of))


def rows(daily: pl.DataFrame, level: str) -> dict:
    counts = ("sampled", "tubes_received", "tested", "positive_pools", "positive_people", "pending", "overdue_orders")
    return {(r["day"].strftime("%m-%d"), r["unit"]): tuple(r[c] for c in counts)
            for r in daily.filter(pl.col("level") == level).iter_rows(named=True)}


def test_every_day_district_and_lab_with_zeros_written_as_zeros(both):
    daily, load, silent = frames(both, NEXT_MORNING_2PM)
    assert tuple(daily.columns) == DAILY_COLUMNS
    # (sampled, received, tested, positive pools, positive people, pending, overdue orders)
    assert rows(daily, "district") == {
        ("04-04", "黄浦区"): (8, 4, 3, 1, 1, 1, 3),  # TD pending; TA's 3 people due 20:00, not re-sampled
        ("04-04", "徐汇区"): (2, 1, 1, 0, 0, 0, 0),
        ("04-04", "静安区"): (0, 0, 0, 0, 0, 0, 0),  # a day with nothing: zeros, not omitted
        ("04-05", "黄浦区"): (2, 2, 3, 0, 0, 0, 1),  # two re-samples; P3 not re-sampled by 14:00
        ("04-05", "徐汇区"): (0, 0, 0, 0, 0, 0, 0),
        ("04-05", "静安区"): (0, 0, 0, 0, 0, 0, 0),
    }
    assert rows(daily, "lab") == {
        ("04-04", "L1"): (10, 5, 4, 1, 1, 1, 3),  # backlog at midnight: TD
        ("04-04", "L2"): (0, 0, 0, 0, 0, 0, 0), ("04-04", "L3"): (0, 0, 0, 0, 0, 0, 0),
        ("04-05", "L1"): (2, 2, 3, 0, 0, 0, 1),
        ("04-05", "L2"): (0, 0, 0, 0, 0, 0, 0), ("04-05", "L3"): (0, 0, 0, 0, 0, 0, 0),
    }
    # the round is closed at the report's time: nobody is silent; last heard as of each day's end
    assert not daily["silent"].any() and silent.height == 0
    heard = {(r["day"].strftime("%m-%d"), r["unit"]): r["last_heard_at"] and r["last_heard_at"].strftime("%m-%d %H:%M %z")
             for r in daily.iter_rows(named=True)}
    assert heard[("04-04", "黄浦区")] == "04-04 11:10 +0800" and heard[("04-05", "黄浦区")] == "04-05 09:10 +0800"
    assert heard[("04-05", "徐汇区")] == "04-04 08:40 +0800" and heard[("04-05", "静安区")] is None
    assert heard[("04-04", "L1")] == "04-04 14:00 +0800" and heard[("04-05", "L1")] == "04-05 12:00 +0800"


def test_lab_load_per_day_backlog_capacity_and_tat_breaches(both):
    _, load, _ = frames(both, NEXT_MORNING_2PM)
    assert tuple(load.columns) == LAB_LOAD_COLUMNS
    got = {(r["lab_id"], r["day"].strftime("%m-%d")): (r["received"], r["tested"], r["backlog"], r["daily_capacity"],
                                                       r["utilisation"], r["tat_breaches"]) for r in load.iter_rows(named=True)}
    assert got == {
        # over capacity on 04-04 (5 of 3), not on 04-05; TX is a key-group tube called 6 h 10 min
        # after collection (target 6 h), TD a plain one called after 22.5 h (target 12 h)
        ("L1", "04-04"): (5, 4, 1, 3, 1.6667, 1), ("L1", "04-05"): (2, 3, 0, 3, 0.6667, 1),
        ("L2", "04-04"): (0, 0, 0, 100, 0.0, 0), ("L2", "04-05"): (0, 0, 0, 100, 0.0, 0),
        ("L3", "04-04"): (0, 0, 0, None, None, 0), ("L3", "04-05"): (0, 0, 0, None, None, 0),
    }


def test_a_report_as_of_the_first_evening_shows_only_that_days_facts(both):
    """The next morning's facts are in the warehouse, but as of 04-04 20:00 they have not happened."""
    evening = datetime(2022, 4, 4, 20, 0, tzinfo=SH)
    daily, load, silent = frames(both, evening)
    assert daily["day"].unique().to_list() == [datetime(2022, 4, 4).date()]
    # TD not called yet; TA's orders are due at 20:00 exactly: not yet overdue
    assert rows(daily, "district")[("04-04", "黄浦区")] == (8, 4, 3, 1, 1, 1, 0)
    assert rows(daily, "lab")[("04-04", "L1")] == (10, 5, 4, 1, 1, 1, 0)
    assert load.filter(pl.col("lab_id") == "L1").select("received", "tested", "backlog", "tat_breaches").row(0) == (5, 4, 1, 1)
    # the round is open at 20:00: whoever sent nothing since 18:00 is silent, marked on that day
    assert sorted(daily.filter(pl.col("silent")).select("level", "unit").iter_rows()) == [
        ("district", "徐汇区"), ("district", "静安区"), ("district", "黄浦区"), ("lab", "L1"), ("lab", "L2")]
    assert {u: s.strftime("%H:%M") for u, s in silent.select("unit", "silent_from").iter_rows()} == {
        "静安区": "08:00", "L2": "08:00", "徐汇区": "10:40", "黄浦区": "13:10", "L1": "16:00"}
    assert silent["silent_from"].dt.strftime("%z").unique().to_list() == ["+0800"]


def test_the_same_answers_without_a_snapshot(both):
    with_snapshot = frames(both, NEXT_MORNING_2PM)
    without = frames(both, NEXT_MORNING_2PM, snapshot=False)
    for a, b in zip(with_snapshot, without):
        assert a.equals(b)


def test_a_round_without_districts_covers_every_district_of_the_register_and_sites(tmp_path, cfg):
    open_test_round(cfg)
    ingest(first_day(tmp_path / "day1"), cfg)
    daily, _, _ = frames(cfg, datetime(2022, 4, 4, 23, 0, tzinfo=SH))
    assert sorted(daily.filter(pl.col("level") == "district")["unit"].to_list()) == sorted(DISTRICTS)


def silent_at(cfg, as_of, record=False):
    """The silence alerts at ``as_of``; ``record``: put them in the outbox and return the
    outbox's district silences."""
    from reporting.daily import silent_unit_alerts
    from warehouse.writer import record_alerts

    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        alerts = silent_unit_alerts(con, cfg, as_of)
        if not record:
            return alerts
        record_alerts(con, alerts)
        return [r[0] for r in con.execute(
            "SELECT subject FROM alert_outbox WHERE kind = 'district_silent' ORDER BY 1").fetchall()]


def test_silent_districts_and_labs_alert_once_per_silence(first, tmp_path):
    from reporting.daily import silent_unit_alerts
    from reporting.timed_alerts import TIMED_ALERT_RULES

    assert silent_unit_alerts in TIMED_ALERT_RULES
    noon = datetime(2022, 4, 4, 12, 30, tzinfo=SH)
    alerts = silent_at(first, noon)
    # L3 has no capacity and received nothing: not used by the round, never silent
    assert sorted(a.alert_id for a in alerts) == [
        "district_silent:R1:徐汇区:2022-04-04T08:40:00+08:00", "district_silent:R1:静安区:never",
        "lab_silent:R1:L2:never"]
    xuhui = next(a for a in alerts if "徐汇区" in a.subject)
    assert xuhui.raised_at == datetime(2022, 4, 4, 10, 40, tzinfo=SH) and xuhui.round_id == "R1"
    assert xuhui.payload["resource"] == "徐汇区" and xuhui.payload["facts"]["district"] == "徐汇区"
    assert "08:40" in xuhui.payload["title"]

    # the rules run twice (two ingest runs): one alert per silence
    assert silent_at(first, noon, record=True) == silent_at(first, noon, record=True) == [
        "R1:徐汇区:2022-04-04T08:40:00+08:00", "R1:静安区:never"]
    # 徐汇区 speaks again at 13:00, then falls silent again: a new silence, a new alert
    write(tmp_path / "later/scans/s2.csv", SCAN_HEADER + "\n" + f"{at(4, '13:00')},S2,C1,TY,add,RIC,{D[10]},,,10\n")
    ingest(tmp_path / "later", first)
    # (黄浦区, last heard at 11:10, is silent from 13:10 on)
    assert silent_at(first, datetime(2022, 4, 4, 14, 0, tzinfo=SH), record=True) == [
        "R1:徐汇区:2022-04-04T08:40:00+08:00", "R1:静安区:never", "R1:黄浦区:2022-04-04T11:10:00+08:00"]
    assert silent_at(first, datetime(2022, 4, 4, 15, 30, tzinfo=SH), record=True) == [
        "R1:徐汇区:2022-04-04T08:40:00+08:00", "R1:徐汇区:2022-04-04T13:00:00+08:00", "R1:静安区:never",
        "R1:黄浦区:2022-04-04T11:10:00+08:00"]
    # once the round's window has closed nobody is silent any more
    assert silent_at(first, datetime(2022, 4, 5, 9, 0, tzinfo=SH)) == []


def test_silent_hours_come_from_the_config(first):
    from kernel.config import replace

    cfg = replace(first, alerts=replace(first.alerts, silent_hours=5.0))
    assert sorted(a.subject for a in silent_at(cfg, datetime(2022, 4, 4, 12, 30, tzinfo=SH))) == [
        "R1:L2:never", "R1:静安区:never"]  # 徐汇区 silent only from 13:40


def test_a_lab_over_capacity_alerts_once_for_the_day_not_the_next(both):
    from reporting.timed_alerts import TIMED_ALERT_RULES
    from reporting.daily import lab_over_capacity_alerts

    assert lab_over_capacity_alerts in TIMED_ALERT_RULES
    with open_warehouse(both.warehouse.path, id_hash_key()) as con:
        define_views(con, both)
        before = lab_over_capacity_alerts(con, both, datetime(2022, 4, 4, 11, 0, tzinfo=SH))
        alerts = lab_over_capacity_alerts(con, both, NEXT_MORNING_2PM)
    assert before == []  # one tube received by 11:00
    assert [a.alert_id for a in alerts] == ["lab_over_capacity:L1:2022-04-04"]
    alert = alerts[0]
    # the fourth tube (capacity 3) arrived with box B1 at 12:00
    assert alert.raised_at == datetime(2022, 4, 4, 12, 0, tzinfo=SH)
    assert alert.payload["facts"] == {
        "lab": "L1", "day": "2022-04-04", "received": 5, "daily_capacity": 3, "utilisation_pct": 166.7,
        "over_capacity_at": "2022-04-04T12:00:00+08:00", "judged_at": "2022-04-05T14:00:00+08:00"}
    assert alert.payload["resource"] == "L1" and "capacity 3" in alert.payload["title"]


def test_dashboard_lines_name_the_labs_and_the_silent(first):
    from reporting.daily import daily_dashboard_lines

    with open_warehouse(first.warehouse.path, id_hash_key()) as con:
        define_views(con, first)
        lines = daily_dashboard_lines(con, first, "R1", datetime(2022, 4, 4, 12, 30, tzinfo=SH))
    text = "\n".join(lines)
    assert "| L1 | 5 | 3 | 167 % OVER CAPACITY | 5 | 0 | 0 |" in text
    assert "| L2 | 0 | 100 | 0 % | 0 | 0 | 0 |" in text
    assert "SILENT district **徐汇区**: last heard 04-04 08:40 +08:00, silent since 04-04 10:40 +08:00" in text
    assert "SILENT district **静安区**: not heard in the round" in text and "SILENT lab **L2**" in text
    for secret in D.values():
        assert secret not in text


def test_the_report_writes_daily_and_lab_load_and_their_html_sections(both, tmp_path):
    from reporting.html import SECTIONS
    from reporting.report import write_report

    out = tmp_path / "out"
    with open_warehouse(both.warehouse.path, id_hash_key()) as con:
        define_views(con, both, snapshot=True)
        figures = write_report(con, both, "R1", datetime(2022, 4, 4, 20, 0, tzinfo=SH), out)
    assert {"daily.parquet", "lab_load.parquet"} <= set(figures.files)
    daily = pl.read_parquet(out / "daily.parquet")
    assert tuple(daily.columns) == DAILY_COLUMNS and daily.height == 6  # one day, 3 districts and 3 labs
    assert daily.schema["last_heard_at"].time_zone == "Asia/Shanghai"
    assert tuple(pl.read_parquet(out / "lab_load.parquet").columns) == LAB_LOAD_COLUMNS
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Daily report" in SECTIONS and "<h2>Daily report</h2>" in html
    section = html[html.index("<h2>Daily report</h2>"):html.index("<h2>Coverage by district</h2>")]
    # silent units first and said in words; a zero report shows its zeros
    assert '⚠ SILENT district <span lang="zh">静安区</span></b>: nothing in the round' in section
    assert '⚠ SILENT district <span lang="zh">徐汇区</span></b>: nothing since 04-04 08:40 +08:00' in section
    lab_rows = section.split("<table>")[2]
    assert lab_rows.index(">L1<") < lab_rows.index(">L2<") < lab_rows.index(">L3<")  # L3 is not silent: last
    assert '<td class="l">L3</td><td class="l">nothing sent</td>' in lab_rows
    assert ('<td class="l"><span lang="zh">静安区</span></td><td class="l">⚠ SILENT</td>'
            '<td>0</td><td>0</td><td>0</td><td>0</td><td>0</td>') in section
    labs = html[html.index("<h2>Lab load against capacity</h2>"):html.index("<h2>Anomalies by kind</h2>")]
    assert "167 % ⚠ OVER CAPACITY" in labs and "<svg" in labs
    for secret in [*D.values(), "李1", "1 Road"]:
        assert secret not in html
