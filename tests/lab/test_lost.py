"""Lost boxes and tubes (DESIGN §8: a box or tube lost), judged at the round's end + 12 h, told
the on-call without a flood: a lost box is one alert with its tubes counted inside it; lost tubes
outside a lost box one alert per round, site and box. Counts and places only."""

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import write
from tests.builders import REGISTER_HEADER, ingest, open_test_round, register_row, ric
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse
from warehouse.writer import record_alerts

SH = ZoneInfo("Asia/Shanghai")
P = {i: ric(f"31010119850101{i:03d}") for i in range(1, 10)}
#: tube -> (site, people): where each tube ends up is in the manifests and receipts below
TUBES = {"TA": ("S1", (1, 2, 3)), "TB": ("S1", (4, 5)),  # box BX: departed, never arrives: a lost box
         "TC": ("S1", (6,)), "TD": ("S1", (7,)),  # box BY arrives with TC only: TD lost from it
         "TE": ("S2", (8,)),  # sealed at S2, never packed: lost at its site
         "TH": ("S1", (9,))}  # box BW: a lab scanned the box (a stray tube in it), TH not: the box is not lost
MANIFESTS = """box_id,tube_barcode,site_id,packed_at,courier_id,departed_at,lab_id
BX,TA,S1,2022-04-04T12:00:00+08:00,K1,2022-04-04T12:20:00+08:00,L1
BX,TB,S1,2022-04-04T12:00:00+08:00,K1,2022-04-04T12:20:00+08:00,L1
BY,TC,S1,2022-04-04T12:00:00+08:00,K2,2022-04-04T12:20:00+08:00,L1
BY,TD,S1,2022-04-04T12:00:00+08:00,K2,2022-04-04T12:20:00+08:00,L1
BW,TH,S1,2022-04-04T12:00:00+08:00,K3,2022-04-04T12:20:00+08:00,L1
"""
RECEIPTS = """lab_id,box_id,tube_barcode,received_at
L1,BY,TC,2022-04-04T14:00:00+08:00
L1,BW,TX,2022-04-04T14:00:00+08:00
"""


def build(root):
    write(root / "sites/s.csv", "site_id,name,district,kind\nS1,One,黄浦区,fixed\nS2,Two,徐汇区,fixed\n")
    write(root / "labs/l.csv", "lab_id,name\nL1,Lab1\n")
    write(root / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(
        register_row(n).replace(",H1,", f",H{i},") for i, n in P.items()) + "\n")
    scans = ["scanned_at,site_id,collector_id,tube_barcode,event,id_type,id_number,name,phone,capacity"]
    for tube, (site, people) in TUBES.items():
        scans += [f"2022-04-04T11:00:00+08:00,{site},C1,{tube},add,RIC,{P[i]},,,10" for i in people]
        scans.append(f"2022-04-04T11:30:00+08:00,{site},C1,{tube},seal,,,,,")
    write(root / "scans/s.csv", "\n".join(scans) + "\n")
    write(root / "manifests/m.csv", MANIFESTS)
    write(root / "receipts/r.csv", RECEIPTS)
    return root


@pytest.fixture
def taken(tmp_path, cfg):
    open_test_round(cfg)
    ingest(build(tmp_path / "in"), cfg)
    return cfg


def lost_alerts(cfg, as_of):
    from reporting.alerts import lost_custody_alerts

    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        return (lost_custody_alerts(con, cfg, as_of),
                con.execute("SELECT kind, coalesce(tube_barcode, box_id) FROM custody_anomalies(?)"
                            " WHERE kind IN ('box_lost', 'tube_lost') ORDER BY ALL", [as_of]).fetchall())


def test_nothing_is_lost_before_the_round_end_plus_12_hours(taken):
    alerts, anomalies = lost_alerts(taken, datetime(2022, 4, 5, 9, 59, tzinfo=SH))
    assert alerts == [] and anomalies == []


def test_a_lost_box_is_one_alert_and_lone_lost_tubes_one_per_site_and_box(taken):
    lost_at = datetime(2022, 4, 5, 10, tzinfo=SH)
    alerts, anomalies = lost_alerts(taken, datetime(2022, 4, 5, 12, tzinfo=SH))
    # the rule in lab/custody.py: BX is lost (no tube of it, nor the box, reached a lab); BW was
    # scanned at the lab (with a stray tube), so it is not, though TH never arrived
    assert anomalies == [("box_lost", "BX"), ("tube_lost", "TA"), ("tube_lost", "TB"), ("tube_lost", "TD"),
                         ("tube_lost", "TE"), ("tube_lost", "TH")]
    assert [(a.kind, a.subject, a.round_id, a.raised_at) for a in alerts] == [
        ("box_lost", "R1:BX", "R1", lost_at),
        ("tube_lost", "R1:S1:BW", "R1", lost_at),
        ("tube_lost", "R1:S1:BY", "R1", lost_at),
        ("tube_lost", "R1:S2:unboxed", "R1", lost_at),
    ]
    box, bw, by, unboxed = (a.payload for a in alerts)
    assert box["resource"] == "BX" and box["title"] == "Box BX lost: 2 tube(s), 5 people (round R1, site S1 (黄浦区))"
    assert box["facts"] == {
        "round": "R1", "box": "BX", "site": "S1", "district": "黄浦区", "planned_lab": "L1", "tubes": 2, "people": 5,
        "first_sealed_at": "2022-04-04T03:30:00+00:00", "last_sealed_at": "2022-04-04T03:30:00+00:00",
        "packed_at": "2022-04-04T04:00:00+00:00", "departed_at": "2022-04-04T04:20:00+00:00",
        "lost_at": "2022-04-05T02:00:00+00:00"}
    assert "left site S1 (黄浦区) at 2022-04-04 12:20 +08:00 for lab L1" in box["summary"]
    assert "by 2022-04-05 10:00 +08:00" in box["summary"]
    # the box's tubes are counted inside it, never alerted again one by one
    assert not {"TA", "TB"} & {t for a in alerts[1:] for t in a.payload["facts"]["tube_barcodes"].split(", ")}
    assert by["facts"]["tube_barcodes"] == "TD" and by["facts"]["received_by_lab"] == "L1"
    assert by["resource"] == "S1" and "Box BY reached lab L1 without them" in by["summary"]
    assert bw["facts"]["tube_barcodes"] == "TH" and bw["facts"]["people"] == 1
    assert unboxed["facts"] == {
        "round": "R1", "site": "S2", "district": "徐汇区", "box": "none (never packed)", "tubes": 1, "people": 1,
        "tubes_never_sealed": 0, "tube_barcodes": "TE", "first_sealed_at": "2022-04-04T03:30:00+00:00",
        "last_sealed_at": "2022-04-04T03:30:00+00:00", "lost_at": "2022-04-05T02:00:00+00:00"}
    assert unboxed["title"] == "1 tube(s) lost at site S2 (徐汇区), never in a box: 1 people (round R1)"
    text = json.dumps([a.payload for a in alerts], ensure_ascii=False)
    for secret in [*P.values(), "张三", "13800138000", "1 Road"]:
        assert secret not in text


def test_lost_alerts_are_recorded_once(taken):
    """Judged again at every ingest and report, a loss is recorded once (kind and subject)."""
    import duckdb

    for as_of in (datetime(2022, 4, 5, 12, tzinfo=SH), datetime(2022, 4, 6, 23, tzinfo=SH)):
        alerts, _ = lost_alerts(taken, as_of)
        with open_warehouse(taken.warehouse.path, id_hash_key()) as con:
            con.begin()
            record_alerts(con, alerts)
            con.commit()
    con = duckdb.connect(str(taken.warehouse.path), read_only=True)
    try:
        assert con.sql("SELECT alert_id, state FROM alert_outbox ORDER BY 1").fetchall() == [
            ("box_lost:R1:BX", "pending"), ("tube_lost:R1:S1:BW", "pending"), ("tube_lost:R1:S1:BY", "pending"),
            ("tube_lost:R1:S2:unboxed", "pending")]
    finally:
        con.close()
