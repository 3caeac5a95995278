"""Calling, plate QC and pools to people (DESIGN §8), each rule on a tiny hand-made case taken
through the real ingest: scans, manifests, receipts and results files in an inbox."""

from tubetrail.config import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ingest.take import take_file
from tests.conftest import write
from tests.helpers import REGISTER_HEADER, register_row, ric
from tubetrail.secrets import id_hash_key
from tubetrail.views import define_views
from warehouse.connection import open_warehouse
from ingest.discover import discover
from warehouse.writer import open_round

SH = ZoneInfo("Asia/Shanghai")
AS_OF = datetime(2022, 4, 5, 14, 0, tzinfo=SH)
P = {i: ric(f"31010119900101{i:03d}") for i in range(1, 17)}

#: tube -> (people, capacity)
TUBES = {
    "TA": ((1, 2, 3), 10),  # positive pool
    "TB": ((4, 5), 10),  # negative
    "TC": ((6,), 10),  # grey on the first run, Ct < 40 on both targets on the re-run: positive pool
    "TD": ((7,), 10),  # single target, persists on the re-run: treated as positive
    "TE": ((8,), 10),  # single target, negative on the re-run
    "TF": ((9,), 10),  # internal control fails twice: invalid, re-sample
    "TG": ((10,), 10),  # internal control fails once, negative on the re-run
    "TS1": ((11,), 1),  # single tube, positive: the person is positive
    "TS2": ((12,), 1),  # single tube, single target twice: the person is positive
    "TH": ((13,), 10),  # on an invalid plate (NC shows a target): no call; negative on the re-run
    "TI": ((14,), 10),  # on the invalid plate only: waits for its re-run
    "TJ": ((15,), 10),  # on a plate without negative control
}
ND = ""
#: plate -> (finished, {sample: (orf1ab, n, ic)})
CONTROLS = {"PC": ("30.1", "29.5", "28"), "NC": (ND, ND, ND)}
PLATES = {
    "P1": ("16:00", {**CONTROLS, "TA": ("25.2", "26.0", "30"), "TB": (ND, ND, "30"), "TC": ("38.0", ND, "30"),
                     "TD": (ND, "31", "30"), "TE": ("33", ND, "29"), "TF": (ND, ND, ND), "TG": (ND, ND, "Undetermined"),
                     "TS1": ("20", "21", "30"), "TS2": ("30", ND, "30")}),
    "P2": ("16:30", {"PC": CONTROLS["PC"], "nc": ("35.5", ND, ND), "TH": ("22", "23", "30"), "TI": (ND, ND, "30")}),
    "P4": ("16:40", {"PC": CONTROLS["PC"], "TJ": (ND, ND, "30")}),
    "P3": ("20:00", {**CONTROLS, "TC": ("38.5", "39.2", "30"), "TD": (ND, "32", "30"), "TE": (ND, ND, "30"),
                     "TF": ("40.5", ND, "41"), "TG": (ND, ND, "30"), "TS2": ("31", ND, "30"), "TH": (ND, ND, "30")}),
}
RESULT_HEADER = "lab_id,run_id,plate_id,well,sample,target,ct,finished_at"


def results_csv(plate: str, finished: str, wells: dict, day: str = "2022-04-04", orf: str = "ORF1ab") -> str:
    rows = [RESULT_HEADER]
    for n, (sample, cts) in enumerate(wells.items()):
        for target, ct in zip((orf, "N", "IC"), cts):
            rows.append(f"L1,{plate},{plate},A{n + 1},{sample},{target},{ct},{day}T{finished}:00+08:00")
    return "\n".join(rows) + "\n"


def build(root):
    write(root / "sites/s.csv", "site_id,name,district,kind\nS1,One,黄浦区,fixed\nSH,Home,黄浦区,home\n")
    write(root / "labs/l.csv", "lab_id,name\nL1,Lab1\n")
    write(root / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(
        register_row(n, mobility="true" if i == 9 else "false").replace(",H1,", f",H{i},") for i, n in P.items()) + "\n")
    scans = ["scanned_at,site_id,collector_id,tube_barcode,event,id_type,id_number,name,phone,capacity"]
    manifest = ["box_id,tube_barcode,site_id,packed_at"]
    receipt = ["lab_id,box_id,tube_barcode,received_at"]
    for tube, (people, capacity) in TUBES.items():
        scans += [f"2022-04-04T11:00:00+08:00,S1,C1,{tube},add,RIC,{P[i]},,,{capacity}" for i in people]
        scans.append(f"2022-04-04T11:30:00+08:00,S1,C1,{tube},seal,,,,,")
        manifest.append(f"B1,{tube},S1,2022-04-04T12:00:00+08:00")
        receipt.append(f"L1,B1,{tube},2022-04-04T14:00:00+08:00")
    write(root / "scans/s.csv", "\n".join(scans) + "\n")
    write(root / "manifests/m.csv", "\n".join(manifest) + "\n")
    write(root / "receipts/r.csv", "\n".join(receipt) + "\n")
    for plate, (finished, wells) in PLATES.items():
        write(root / f"results/L1/{plate}.csv", results_csv(plate, finished, wells))
    return root


def resamples(root):
    """The next morning: single re-samples of P1 (negative), P2 (positive), P3 (no result yet)."""
    scans = ["scanned_at,site_id,collector_id,tube_barcode,event,id_type,id_number,name,phone,capacity"]
    for n, i in enumerate((1, 2, 3)):
        scans += [f"2022-04-05T08:0{n}:00+08:00,SH,C9,RS{i},add,RIC,{P[i]},,,1",
                  f"2022-04-05T08:1{n}:00+08:00,SH,C9,RS{i},seal,,,,,"]
    write(root / "scans/rs.csv", "\n".join(scans) + "\n")
    write(root / "manifests/rs.csv", "box_id,tube_barcode,site_id,packed_at\n"
          + "".join(f"BR,RS{i},SH,2022-04-05T09:00:00+08:00\n" for i in (1, 2, 3)))
    write(root / "receipts/rs.csv", "lab_id,box_id,tube_barcode,received_at\n"
          + "".join(f"L1,BR,RS{i},2022-04-05T10:00:00+08:00\n" for i in (1, 2, 3)))
    write(root / "results/L1/P5.csv", results_csv(
        "P5", "12:00", {**CONTROLS, "RS1": (ND, ND, "30"), "RS2": ("24", "25", "31")}, day="2022-04-05"))
    return root


def ingest(root, cfg):
    outcomes = [take_file(f, cfg) for f in discover(root)]
    assert all(o.status == "accepted" and o.rows_quarantined == 0 for o in outcomes), outcomes
    return outcomes


@pytest.fixture
def called(tmp_path, cfg):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        open_round(con, round_id="R1", starts_at=datetime(2022, 4, 4, 6, tzinfo=SH),
                   ends_at=datetime(2022, 4, 4, 22, tzinfo=SH), districts=None, pool_size=10, run_id=None)
    ingest(build(tmp_path / "in"), cfg)
    return cfg


def query(cfg, sql, params=(AS_OF,)):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        return con.execute(sql, list(params)).fetchall()


def calls(cfg, as_of=AS_OF):
    return {t: (c, p) for t, c, p in query(cfg, "SELECT tube_barcode, call, pending_reason FROM tube_calls(?)", [as_of])}


def test_plate_qc_by_controls(called):
    qc = dict(query(called, "SELECT plate_id, coalesce(qc_reason, 'valid') FROM plate_qc", []))
    assert qc == {"P1": "valid", "P3": "valid", "P2": "negative control shows a target", "P4": "no negative control"}
    anomalies = query(called, "SELECT kind, detail FROM lab_anomalies(?)")
    assert sorted(k for k, _ in anomalies) == ["plate_invalid", "plate_invalid"]
    assert any("plate P2: negative control shows a target; 2 tube(s) to re-run" in d for _, d in anomalies)


def test_every_calling_rule(called):
    assert calls(called) == {
        "TA": ("positive", None), "TB": ("negative", None),
        "TC": ("positive", None),  # grey, then Ct < 40 on the re-run counts as detected
        "TD": ("single_target", None), "TE": ("negative", None),
        "TF": ("invalid", None), "TG": ("negative", None),
        "TS1": ("positive", None), "TS2": ("single_target", None),
        "TH": ("negative", None),  # its run on the invalid plate calls nothing
        "TI": ("rerun", "plate_invalid"), "TJ": ("rerun", "plate_invalid"),
    }
    # before the re-run plate finished: the first runs wait for their re-run, nothing is final
    before = calls(called, datetime(2022, 4, 4, 18, tzinfo=SH))
    assert before["TC"] == ("rerun", "grey") and before["TD"] == ("rerun", "single_target")
    assert before["TF"] == ("rerun", "invalid") and before["TH"] == ("rerun", "plate_invalid")
    assert before["TA"] == ("positive", None)


def test_call_history_keeps_every_run(called):
    history = query(called, "SELECT plate_id, first_call, rerun_call, attempt FROM tube_call_history(?)"
                            " WHERE tube_barcode = 'TH' ORDER BY finished_at")
    assert history == [("P2", "plate_invalid", "plate_invalid", None), ("P3", "negative", "negative", 1)]


def test_pools_to_people_orders_and_status(called):
    orders = query(called, "SELECT reason, source_tube, id_number, priority, home_visit, due_by, fulfilled"
                           " FROM resample_orders(?) ORDER BY ALL")
    call_p1 = datetime(2022, 4, 4, 16, tzinfo=SH)
    call_p3 = datetime(2022, 4, 4, 20, tzinfo=SH)
    assert orders == sorted(
        [("pool_positive", "TA", P[i], "urgent", True, call_p1 + timedelta(hours=6), False) for i in (1, 2, 3)]
        + [("pool_positive", "TC", P[6], "urgent", True, call_p3 + timedelta(hours=6), False),
           ("single_target", "TD", P[7], "urgent", True, call_p3 + timedelta(hours=6), False),
           ("invalid", "TF", P[9], "normal", True, call_p3 + timedelta(hours=24), False)]
    )
    status = dict(query(called, "SELECT id_number, status FROM person_status('R1', ?)"))
    expected = {1: "pool_positive", 2: "pool_positive", 3: "pool_positive", 4: "negative", 5: "negative",
                6: "pool_positive", 7: "pool_positive", 8: "negative", 9: "resample", 10: "negative",
                11: "positive", 12: "positive", 13: "negative", 14: "sampled", 15: "sampled", 16: "untested"}
    assert status == {P[i]: s for i, s in expected.items()}


def test_single_resamples_resolve_people(called, tmp_path):
    ingest(resamples(tmp_path / "morning"), called)
    rows = query(called, "SELECT id_number, status, tube_barcode FROM person_status('R1', ?)")
    status = {n: (s, t) for n, s, t in rows}
    assert status[P[1]] == ("negative", "RS1")
    assert status[P[2]] == ("positive", "RS2")
    assert status[P[3]] == ("pool_positive", "TA")  # re-sampled, no result yet: still flagged
    fulfilled = dict(query(called, "SELECT id_number, fulfilled FROM resample_orders(?) WHERE source_tube = 'TA'"))
    assert fulfilled == {P[1]: True, P[2]: True, P[3]: True}
    # a re-sample is a single tube: positive on it makes a person positive, never a pool order
    assert query(called, "SELECT count(*) FROM resample_orders(?) WHERE source_tube LIKE 'RS%'") == [(0,)]


def test_amended_results_supersede_and_are_audited(called, tmp_path):
    wells = dict(PLATES["P1"][1])
    wells["TB"] = ("24", "25", "30")  # the lab re-exports plate P1: TB is positive after all
    write(tmp_path / "amend/results/L1/P1-amended.csv", results_csv("P1", "16:00", wells))
    ingest(tmp_path / "amend", called)
    assert calls(called)["TB"] == ("positive", None)
    audit = query(called, "SELECT entity, entity_key, action FROM audit WHERE entity = 'plate'", [])
    assert audit == [("plate", "L1|P1|P1", "amend")]
    kept = query(called, "SELECT count(DISTINCT source_hash) FROM results WHERE plate_id = 'P1'", [])
    assert kept == [(2,)]  # the first export stays: history, not overwritten


def test_roles_from_config_and_internal_control_override(tmp_path, cfg):
    """Targets are mapped to roles by config (a kit naming ORF1ab 'FAM'); with the kit rule
    that a detected target makes a missing internal control irrelevant, TF-like tubes call."""
    cfg = replace(cfg, assay=replace(cfg.assay, orf1ab_target="FAM", positive_overrides_internal_control=True))
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        open_round(con, round_id="R1", starts_at=datetime(2022, 4, 4, 6, tzinfo=SH),
                   ends_at=datetime(2022, 4, 4, 22, tzinfo=SH), districts=None, pool_size=10, run_id=None)
    root = build(tmp_path / "in")
    for plate in ("P2", "P3", "P4"):
        (root / f"results/L1/{plate}.csv").unlink()
    wells = {**CONTROLS, "TA": ("25", "26", ND), "TB": (ND, ND, ND)}
    write(root / "results/L1/P1.csv", results_csv("P1", "16:00", wells, orf="fam"))
    ingest(root, cfg)
    found = calls(cfg)
    assert found == {"TA": ("positive", None), "TB": ("rerun", "invalid")}


def test_a_snapshot_session_derives_the_same_state(called, tmp_path):
    """Read sessions over a whole city materialise the base views once; same answers."""
    ingest(resamples(tmp_path / "morning"), called)
    queries = ("SELECT * EXCLUDE (person_key) FROM person_status('R1', ?) ORDER BY ALL",
               "SELECT * EXCLUDE (person_key) FROM resample_orders(?) ORDER BY ALL",
               "SELECT * FROM tube_calls(?) ORDER BY ALL")
    with open_warehouse(called.warehouse.path, id_hash_key()) as con:
        define_views(con, called)
        plain = [con.execute(q, [AS_OF]).fetchall() for q in queries]
        define_views(con, called, snapshot=True)
        snap = [con.execute(q, [AS_OF]).fetchall() for q in queries]
        assert con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'tube_members_snapshot'").fetchall() == [(1,)]
    assert snap == plain and all(plain)


def test_a_well_given_two_samples_in_one_file_is_an_anomaly(called, tmp_path):
    rows = [RESULT_HEADER] + [f"L1,P9,P9,A1,{s},{t},{ct},2022-04-04T21:00:00+08:00"
                              for s in ("TB", "PC") for t, ct in (("ORF1ab", "30"), ("N", "30"), ("IC", "30"))]
    rows += [f"L1,P9,P9,A2,NC,{t},,2022-04-04T21:00:00+08:00" for t in ("ORF1ab", "N", "IC")]
    write(tmp_path / "clash/results/L1/P9.csv", "\n".join(rows) + "\n")
    ingest(tmp_path / "clash", called)
    found = query(called, "SELECT kind, detail FROM lab_anomalies(?) WHERE kind = 'well_reported_twice'")
    assert found == [("well_reported_twice", "lab L1 run P9 plate P9 well A1: 2 different samples in one file; "
                                             "none of them is called from it")]
    # neither sample's reading decides anything: the positive control's makes the plate invalid
    assert query(called, "SELECT qc_reason FROM plate_qc WHERE plate_id = 'P9'", []) == [
        ("conflicting readings of a control",)]


# --- issue 15: the calls derived once for a read session at one time -----------------------------

def test_pinned_calls_equal_the_derived_ones_and_refuse_another_time(called):
    import duckdb

    from lab.calling import PINNED_CALLS, pin_tube_calls, unpin_tube_calls

    every = "SELECT * FROM tube_calls(?) ORDER BY tube_barcode"
    with open_warehouse(called.warehouse.path, id_hash_key()) as con:
        define_views(con, called, snapshot=True)
        derived = con.execute(every, [AS_OF]).fetchall()
        assert len(derived) > 5 and {row[1] for row in derived} >= {"positive", "negative"}
        pin_tube_calls(con, AS_OF)
        assert con.execute(every, [AS_OF]).fetchall() == derived
        # the rules that read the calls read the pinned table: the same status for everyone
        assert con.execute(f"SELECT count(*) FROM {PINNED_CALLS}").fetchone()[0] == len(derived)
        for other in ("SELECT * FROM tube_calls(?::TIMESTAMPTZ + INTERVAL 1 HOUR)",
                      "SELECT * FROM tube_calls(?, tubes := ['TA'])"):
            with pytest.raises(duckdb.InvalidInputException, match="pinned"):
                con.execute(other, [AS_OF]).fetchall()
        unpin_tube_calls(con)
        later = con.execute("SELECT count(*) FROM tube_calls(?::TIMESTAMPTZ + INTERVAL 1 HOUR)", [AS_OF]).fetchone()[0]
        assert later >= len(derived) and con.execute(every, [AS_OF]).fetchall() == derived
        assert not con.execute(f"SELECT 1 FROM duckdb_tables() WHERE table_name = '{PINNED_CALLS}'").fetchall()
