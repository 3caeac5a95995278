"""Bad input that used to pass (issue 12.9): a small corpus of hand-made bad files across the
feeds, taken through the real ingest. Control characters and over-long fields are quarantined
with the column and the rule (never the value); hidden files are reported, not taken; a file in
GBK is refused whole, naming its encoding. Every file: rows read = accepted + quarantined."""

import json

import polars as pl
import pytest

from ingest.take import take_file
from tests.conftest import write
from tests.builders import REGISTER_HEADER, open_test_round, query, ric
from kernel.rules import MAX_FIELD_CHARS, MAX_FREE_TEXT_CHARS
from ingest.discover import discover

A = ric("31010119900101001")
MIB = "张" * (1 << 20)
CONTROL = "holds a control or invisible character"


def register_csv(rows: list[dict]) -> bytes:
    frame = pl.DataFrame([{c: r.get(c, "") for c in REGISTER_HEADER.split(",")} for r in rows])
    return frame.write_csv().encode()


def person(id_number: str, **kw) -> dict:
    base = {"id_type": "PASSPORT", "id_number": id_number, "name": "Ann Lee", "phone": "13800138000",
            "district": "黄浦区", "subdistrict": "外滩街道", "community": "中山居委", "grid": "G1",
            "address": "1 Road", "household_id": "H1", "mobility_limited": "false"}
    return {**base, **kw}



def take_all(inbox, cfg):
    return {o.file_name: o for o in (take_file(f, cfg) for f in discover(inbox))}


def reasons_of(cfg, label):
    return dict(query(cfg, "SELECT q.line, q.reason FROM quarantine q JOIN ingest_ledger l USING (content_hash)"
                           " WHERE l.file_name = ? ORDER BY q.line", [label]))


def assert_balanced(outcomes):
    for o in outcomes.values():
        assert o.rows_read == o.rows_accepted + o.rows_quarantined, o.file_name


def test_control_characters_and_long_fields_in_the_register_are_quarantined(tmp_path, cfg):
    rows = [
        person("E1234567"),                                   # 2 accepted
        person("E1234567\x00"),                               # 3 a NUL would make a new person
        person("E76\x0054321"),                               # 4 NUL inside
        person("E7654\u200b321"),                             # 5 zero-width space: looks like E7654321
        person("E7654322", name="Ann\x00Lee"),                # 6 NUL in a name
        person("E7654323", name="Ann\x1b[31mLee"),            # 7 escape sequence
        person("E7654324", name="\u202eeeL nnA"),             # 8 right-to-left override
        person("E7654325", name=MIB),                         # 9 1 MiB name
        person("E7654326", address="x" * (MAX_FREE_TEXT_CHARS + 1)),  # 10 too long an address
        person("E7654327", grid="G" * (MAX_FIELD_CHARS + 1)),  # 11 too long a grid
        person("E7654328", address="Building 3\nRoom 401"),   # 12 accepted: line breaks in free text
        person(A, name="\tAnn Lee\t"),                        # 14 accepted: surrounding white space (line 12 took two)
        person("E7654329", address="1 Road\x07"),             # 15 a bell in an address
    ]
    write(tmp_path / "in/register/r.csv", register_csv(rows))
    outcomes = take_all(tmp_path / "in", cfg)
    assert_balanced(outcomes)
    o = outcomes["register/r.csv"]
    assert (o.status, o.rows_read, o.rows_accepted, o.rows_quarantined) == ("accepted", 13, 3, 10)
    assert reasons_of(cfg, "register/r.csv") == {
        3: f"id_number {CONTROL}", 4: f"id_number {CONTROL}", 5: f"id_number {CONTROL}",
        6: f"name {CONTROL}", 7: f"name {CONTROL}", 8: f"name {CONTROL}",
        9: f"name longer than {MAX_FIELD_CHARS} characters",
        10: f"address longer than {MAX_FREE_TEXT_CHARS:,} characters",
        11: f"grid longer than {MAX_FIELD_CHARS} characters",
        15: f"address {CONTROL}",
    }
    assert sorted(query(cfg, "SELECT id_number, name, address FROM register")) == sorted(
        [("E1234567", "Ann Lee", "1 Road"), ("E7654328", "Ann Lee", "Building 3\nRoom 401"), (A, "Ann Lee", "1 Road")])
    # the reasons name the column and the rule, never the value
    for reason in o.quarantined_by_reason:
        assert "E76" not in reason and "Ann" not in reason and "张" not in reason


def test_every_feed_keeps_the_rules(tmp_path, cfg):
    inbox = tmp_path / "in"
    write(inbox / "sites/s.jsonl", "\n".join(json.dumps(r) for r in [
        {"site_id": "S1", "name": "One", "district": "黄浦区"},
        {"site_id": "S2", "name": "T\u0000wo", "district": "黄浦区"}]) + "\n")
    pl.DataFrame({"lab_id": ["L1", "L2"], "name": ["Lab", "x" * (1 << 20)]}).write_parquet(
        (inbox / "labs").mkdir(parents=True) or inbox / "labs/l.parquet")
    write(inbox / "zones/z.csv", "grid,zone\nG1,sealed\nG\x002,sealed\n")
    write(inbox / "scans/s.csv", "scanned_at,site_id,collector_id,tube_barcode,event,id_type,id_number\n"
          "2022-04-04T11:00:00+08:00,S1,C1,T1,add,PASSPORT,E1234567\n"
          "2022-04-04T11:00:00+08:00,S1,C1,T1,add,PASSPORT,E12\x0034567\n"
          f"2022-04-04T11:00:00+08:00,S1,{'C' * 201},T1,add,PASSPORT,E1234568\n"
          "2022-04-04T11:01:00+08:00,S1,C1,T\x1b2,seal,,\n")
    write(inbox / "manifests/m.csv", "box_id,tube_barcode,site_id,packed_at\nB1,T1,S1,2022-04-04T12:00:00+08:00\n"
          "B\x072,T1,S1,2022-04-04T12:00:00+08:00\n")
    write(inbox / "receipts/r.csv", "lab_id,box_id,tube_barcode,received_at\nL1,B1,T1,2022-04-04T14:00:00+08:00\n"
          "L\u202e1,B1,T1,2022-04-04T14:00:00+08:00\n")
    write(inbox / "results/L1/P1.csv", "lab_id,run_id,plate_id,well,sample,target,ct\n"
          "L1,P1,P1,A1,T1,ORF1ab,\nL1,P1,P1,A1,T1,N,\nL1,P1,P1,A2,T\x1b2,N,\nL1,P1,P1,A3,T3,N\u200b,30\n")
    open_test_round(cfg)
    outcomes = take_all(inbox, cfg)
    assert_balanced(outcomes)
    assert {k: (o.status, o.rows_accepted, o.quarantined_by_reason) for k, o in outcomes.items()} == {
        "sites/s.jsonl": ("accepted", 1, {f"name {CONTROL}": 1}),
        "labs/l.parquet": ("accepted", 1, {f"name longer than {MAX_FIELD_CHARS} characters": 1}),
        "zones/z.csv": ("accepted", 1, {f"grid {CONTROL}": 1}),
        "scans/s.csv": ("accepted", 1, {f"id_number {CONTROL}": 1, f"tube_barcode {CONTROL}": 1,
                                        f"collector_id longer than {MAX_FIELD_CHARS} characters": 1}),
        "manifests/m.csv": ("accepted", 1, {f"box_id {CONTROL}": 1}),
        "receipts/r.csv": ("accepted", 1, {f"lab_id {CONTROL}": 1}),
        "results/L1/P1.csv": ("accepted", 2, {f"sample {CONTROL}": 1, f"target {CONTROL}": 1}),
    }


def test_hidden_files_are_reported_not_taken(tmp_path, cfg):
    inbox = tmp_path / "in"
    write(inbox / "register/r.csv", register_csv([person("E1234567")]))
    write(inbox / "register/.r2.csv.part", register_csv([person("E7654321")]))  # an upload under way
    write(inbox / "labs/.~lock.l.csv#", "lab_id,name\nL9,Lab\n")
    write(inbox / "scans/.partial/s.csv", "scanned_at,site_id,collector_id,tube_barcode,event\n")
    outcomes = take_all(inbox, cfg)
    hidden = {k: (o.status, o.message) for k, o in outcomes.items() if k != "register/r.csv"}
    assert hidden == {label: ("skipped", f"{label}: hidden file (a name starting with '.'), not taken: a partial "
                                         "upload? rename it when complete")
                      for label in ("register/.r2.csv.part", "labs/.~lock.l.csv#", "scans/.partial/s.csv")}
    assert query(cfg, "SELECT id_number FROM register") == [("E1234567",)]
    assert query(cfg, "SELECT file_name FROM ingest_ledger") == [("register/r.csv",)]  # taken once complete


@pytest.mark.parametrize("name", ["register/r.csv", "register/r.jsonl", "results/L1/P1.csv"])
def test_a_gbk_file_is_refused_whole_naming_its_encoding(tmp_path, cfg, name):
    if name.endswith(".jsonl"):
        text = json.dumps(person("E1234567", name="张三", address="南京东路1号"), ensure_ascii=False) + "\n"
    elif name.startswith("results"):
        text = "lab_id,run_id,plate_id,well,sample,target,ct\n" + "".join(
            f"L1,P1,P1,A{i},T{i},靶标{i},\n" for i in range(1, 5))
    else:
        text = register_csv([person(f"E123456{i}", name="张三", address="南京东路1号") for i in range(3)]).decode()
    write(tmp_path / "in" / name, text.encode("gbk"))
    (outcome,) = take_all(tmp_path / "in", cfg).values()
    assert outcome.status == "refused"
    assert outcome.message.startswith(f"{name}: ")
    assert outcome.message.endswith("file is GBK/GB18030-encoded, not UTF-8: re-save it as UTF-8")


def test_a_utf8_file_with_one_broken_row_keeps_its_good_rows(tmp_path, cfg):
    good = register_csv([person(f"E123456{i}", name="张三") for i in range(3)])
    write(tmp_path / "in/register/r.csv", good + b"PASSPORT,E9,\xff\xfe,,a,b,c,d,,,,\n")
    (outcome,) = take_all(tmp_path / "in", cfg).values()
    assert (outcome.status, outcome.rows_accepted, outcome.rows_quarantined) == ("accepted", 3, 1)
    assert outcome.quarantined_by_reason == {"unreadable row: invalid encoding": 1}


@pytest.mark.usefixtures("prefect_server")
def test_the_ingest_flow_counts_and_names_hidden_files(tmp_path, cfg):
    from flows.ingest import ingest_inbox
    from tests.flows.test_ingest_flow import read_artifacts

    inbox = tmp_path / "in"
    write(inbox / "register/r.csv", register_csv([person("E1234567")]))
    write(inbox / "register/.r2.csv.part", register_csv([person("E7654321")]))
    outcomes = ingest_inbox(str(inbox), None, cfg.warehouse.path)
    assert [(o.file_name, o.status) for o in outcomes] == [("register/.r2.csv.part", "skipped"),
                                                           ("register/r.csv", "accepted")]
    summary = read_artifacts("ingest-summary")[0].data
    assert "| register | 1 | 0 | 0 | 1 | 1 | 0 | 1 |" in summary
    assert "## Hidden files, not taken" in summary and "register/.r2.csv.part: hidden file" in summary
