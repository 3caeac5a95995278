"""Taking files into the warehouse: rules, quarantine, the ledger, amendments and the audit."""

import hashlib
import hmac
import json

import pytest

from tests.conftest import write
from tests.builders import REGISTER_HEADER, bad_check, query, register_row, ric, take_all
from warehouse.connection import WrongIdHashKey, open_warehouse

A = ric("11010519491231002")
B = ric("31011519800101123")
C = ric("31011519850505456")



def test_every_register_rule_quarantines_with_line_and_reason(tmp_path, cfg):
    rows = [
        register_row(A),                                         # 2 accepted
        register_row(A.lower()),                                 # 3 lower-case x? same person, same data
        register_row(bad_check("11010519491231003")),            # 4 check digit
        register_row("11010519491331002X"),                      # 5 birth date (month 13)
        register_row("1101051949123100"),                        # 6 not 18 characters
        register_row("E1234567", id_type="VISA"),                # 7 unknown id type
        register_row("", id_type="PASSPORT"),                    # 8 missing id number
        register_row("E7654321", id_type="PASSPORT", name=""),   # 9 missing name
        register_row("E7654322", id_type="PASSPORT", grid=""),   # 10 missing grid
        register_row("E7654323", id_type="PASSPORT", mobility="maybe"),  # 11 not yes/no
        register_row(B, phone=""),                               # 12 accepted, no phone (warning)
        register_row(C, phone="12345"),                          # 13 superseded by 14
        register_row(C, phone="13900139000", key_group="Courier"),  # 14 accepted, later line wins
        "RIC,too,many,fields,a,b,c,d,e,f,g,h,i",                 # 15 unreadable
    ]
    write(tmp_path / "in/register/r.csv", REGISTER_HEADER + "\n" + "\n".join(rows) + "\n")
    (outcome,) = take_all(tmp_path / "in", cfg)
    assert (outcome.rows_read, outcome.rows_accepted, outcome.rows_quarantined) == (14, 3, 11)
    reasons = dict(query(cfg, "SELECT line, reason FROM quarantine ORDER BY line"))
    assert reasons == {
        2: "duplicate row (same as line 3)",
        4: "RIC check digit wrong (GB 11643)",
        5: "RIC birth date not a real date",
        6: "RIC not 17 digits plus a check character",
        7: "id_type not one of HKMO, OTHER, PASSPORT, RIC",
        8: "missing id_number",
        9: "missing name",
        10: "missing grid",
        11: "mobility_limited not a yes/no value",
        13: "conflicting duplicate (superseded by line 14)",
        15: "unreadable row: too many columns",
    }
    # 310115 (浦东新区) dates from 1993: people born there before keep their number, with a warning
    assert outcome.warnings == {"no phone (kept)": 1, "RIC region code not in use in the birth year (kept)": 2}
    people = query(cfg, "SELECT id_number, phone, key_group, source_line FROM register ORDER BY source_line")
    assert people == [(A, "+8613800138000", None, 3), (B, None, None, 12), (C, "+8613900139000", "courier", 14)]
    raw = query(cfg, "SELECT raw FROM quarantine WHERE line = 9")[0][0]
    assert json.loads(raw)["id_number"] == "E7654321"
    assert query(cfg, "SELECT rows_read, rows_accepted, rows_quarantined FROM ingest_ledger") == [(14, 3, 11)]


def test_same_content_is_taken_once_whatever_its_name(tmp_path, cfg):
    text = REGISTER_HEADER + "\n" + register_row(A) + "\n"
    write(tmp_path / "in/register/a.csv", text)
    write(tmp_path / "in/register/copy-of-a.csv", text)
    first, second = take_all(tmp_path / "in", cfg)
    assert first.status == "accepted" and second.status == "skipped"
    assert "register/a.csv" in second.message
    assert take_all(tmp_path / "in", cfg)[0].status == "skipped"  # and again on a re-run
    assert query(cfg, "SELECT count(*) FROM register") == [(1,)]
    assert query(cfg, "SELECT count(*) FROM ingest_ledger") == [(1,)]


def test_later_file_wins_and_the_amendment_is_audited(tmp_path, cfg):
    write(tmp_path / "in/register/1.csv", REGISTER_HEADER + "\n" + register_row(A) + "\n" + register_row(B) + "\n")
    write(tmp_path / "in/register/2.csv", REGISTER_HEADER + "\n" + register_row(A, address="2 New Road") + "\n"
          + register_row(B) + "\n")
    take_all(tmp_path / "in", cfg)
    assert query(cfg, "SELECT address FROM register ORDER BY id_number") == [("2 New Road",), ("1 Road",)][:: 1 if A < B else -1]
    audit = query(cfg, "SELECT entity, action, before ->> 'address', after ->> 'address', reason FROM audit")
    assert audit == [("register", "amend", "1 Road", "2 New Road", "register row changed by a later file (later file wins)")]
    assert query(cfg, "SELECT count(*) FROM register") == [(2,)]


def test_reference_feeds_and_their_rules(tmp_path, cfg):
    write(tmp_path / "in/sites/s.csv", "site_id,name,district,kind,opens,closes\nS1,One,黄浦区,,07:00,21:00\n"
          "S2,Two,黄浦区,boat,07:00,21:00\nS3,Three,黄浦区,home,7am,21:00\n,Four,黄浦区,fixed,,\n")
    write(tmp_path / "in/labs/l.csv", "lab_id,name,daily_capacity_tubes\nL1,Lab,50000\nL2,Lab2,lots\n")
    write(tmp_path / "in/zones/z.csv", "grid,zone,since\nG1,sealed,2022-04-01T00:00:00+08:00\nG2,controlled,"
          "2022-04-01 08:00\nG3,closed,\nG4,precaution,yesterday\nG5,precaution,\n")
    outcomes = {o.kind: o for o in take_all(tmp_path / "in", cfg)}
    assert outcomes["sites"].quarantined_by_reason == {
        "kind not one of fixed, home, mobile": 1, "opens not HH:MM": 1, "missing site_id": 1}
    assert outcomes["labs"].quarantined_by_reason == {"daily_capacity_tubes not a whole number": 1}
    assert outcomes["zones"].quarantined_by_reason == {
        "zone not one of controlled, precaution, sealed": 1, "since not an ISO 8601 time": 1}
    assert query(cfg, "SELECT site_id, kind FROM sites") == [("S1", "fixed")]
    # a time without offset is the city's local time (Asia/Shanghai, +08:00)
    assert query(cfg, "SELECT grid, strftime(since AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M') FROM zones ORDER BY grid") == [
        ("G1", "2022-03-31 16:00"), ("G2", "2022-04-01 00:00"), ("G5", None)]


def test_refused_file_is_recorded_and_good_files_go_on(tmp_path, cfg):
    write(tmp_path / "in/labs/bad.csv", "lab,name\nL1,Lab\n")
    write(tmp_path / "in/labs/good.csv", "lab_id,name\nL1,Lab\n")
    bad, good = take_all(tmp_path / "in", cfg)
    assert bad.status == "refused" and bad.message == "labs/bad.csv: missing required column(s) lab_id"
    assert good.status == "accepted"
    assert query(cfg, "SELECT status, message FROM ingest_ledger WHERE file_name = 'labs/bad.csv'") == [
        ("refused", "labs/bad.csv: missing required column(s) lab_id")]


def test_person_key_is_an_hmac_not_a_plain_hash(tmp_path, cfg):
    key = b"tubetrail-test-key-0123456789"
    with open_warehouse(cfg.warehouse.path, key) as con:
        got = con.execute("SELECT person_key('RIC', ?)", [A]).fetchall()[0][0]
    expected = int(hmac.new(key, f"RIC|{A}".encode(), hashlib.sha256).hexdigest()[:32], 16)
    assert got == expected
    assert got != int(hashlib.sha256(f"RIC|{A}".encode()).hexdigest()[:32], 16)
    with pytest.raises(WrongIdHashKey):
        with open_warehouse(cfg.warehouse.path, b"another-key-0123456789"):
            pass
