"""Calling, plate QC and pools to people (DESIGN §8), each rule on a tiny hand-made case taken
through the real ingest: scans, manifests, receipts and results files in an inbox. The round (its
people, tubes and plates, each tube's story) and the ``called`` fixture are in tests/builders.py."""

from kernel.config import replace
from datetime import datetime, timedelta

import pytest

from tests.builders import (AS_OF, CONTROLS, ND, P, PLATES, RESULT_HEADER, SH, build, calls, ingest, open_test_round,
                            query_views, resamples, results_csv)
from tests.conftest import write
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse


def test_plate_qc_by_controls(called):
    qc = dict(query_views(called, "SELECT plate_id, coalesce(qc_reason, 'valid') FROM plate_qc", []))
    assert qc == {"P1": "valid", "P3": "valid", "P2": "negative control shows a target", "P4": "no negative control"}
    anomalies = query_views(called, "SELECT kind, detail FROM lab_anomalies(?)")
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
    history = query_views(called, "SELECT plate_id, first_call, rerun_call, attempt FROM tube_call_history(?)"
                            " WHERE tube_barcode = 'TH' ORDER BY finished_at")
    assert history == [("P2", "plate_invalid", "plate_invalid", None), ("P3", "negative", "negative", 1)]


def test_pools_to_people_orders_and_status(called):
    orders = query_views(called, "SELECT reason, source_tube, id_number, priority, home_visit, due_by, fulfilled"
                           " FROM resample_orders(?) ORDER BY ALL")
    call_p1 = datetime(2022, 4, 4, 16, tzinfo=SH)
    call_p3 = datetime(2022, 4, 4, 20, tzinfo=SH)
    assert orders == sorted(
        [("pool_positive", "TA", P[i], "urgent", True, call_p1 + timedelta(hours=6), False) for i in (1, 2, 3)]
        + [("pool_positive", "TC", P[6], "urgent", True, call_p3 + timedelta(hours=6), False),
           ("single_target", "TD", P[7], "urgent", True, call_p3 + timedelta(hours=6), False),
           ("invalid", "TF", P[9], "normal", True, call_p3 + timedelta(hours=24), False)]
    )
    status = dict(query_views(called, "SELECT id_number, status FROM person_status('R1', ?)"))
    expected = {1: "pool_positive", 2: "pool_positive", 3: "pool_positive", 4: "negative", 5: "negative",
                6: "pool_positive", 7: "pool_positive", 8: "negative", 9: "resample", 10: "negative",
                11: "positive", 12: "positive", 13: "negative", 14: "sampled", 15: "sampled", 16: "untested"}
    assert status == {P[i]: s for i, s in expected.items()}


def test_single_resamples_resolve_people(called, tmp_path):
    ingest(resamples(tmp_path / "morning"), called)
    rows = query_views(called, "SELECT id_number, status, tube_barcode FROM person_status('R1', ?)")
    status = {n: (s, t) for n, s, t in rows}
    assert status[P[1]] == ("negative", "RS1")
    assert status[P[2]] == ("positive", "RS2")
    assert status[P[3]] == ("pool_positive", "TA")  # re-sampled, no result yet: still flagged
    fulfilled = dict(query_views(called, "SELECT id_number, fulfilled FROM resample_orders(?) WHERE source_tube = 'TA'"))
    assert fulfilled == {P[1]: True, P[2]: True, P[3]: True}
    # a re-sample is a single tube: positive on it makes a person positive, never a pool order
    assert query_views(called, "SELECT count(*) FROM resample_orders(?) WHERE source_tube LIKE 'RS%'") == [(0,)]


def test_amended_results_supersede_and_are_audited(called, tmp_path):
    wells = dict(PLATES["P1"][1])
    wells["TB"] = ("24", "25", "30")  # the lab re-exports plate P1: TB is positive after all
    write(tmp_path / "amend/results/L1/P1-amended.csv", results_csv("P1", "16:00", wells))
    ingest(tmp_path / "amend", called)
    assert calls(called)["TB"] == ("positive", None)
    audit = query_views(called, "SELECT entity, entity_key, action FROM audit WHERE entity = 'plate'", [])
    assert audit == [("plate", "L1|P1|P1", "amend")]
    kept = query_views(called, "SELECT count(DISTINCT source_hash) FROM results WHERE plate_id = 'P1'", [])
    assert kept == [(2,)]  # the first export stays: history, not overwritten


def test_a_batch_looks_for_superseded_readings_only_for_plates_reported_again(called, tmp_path, monkeypatch):
    """Issue 15: a results batch finds its plates reported again once (stored, or in two of its
    files); only their files look for the readings they supersede, each audited as one by one."""
    import warehouse.writer as writer
    from ingest.discover import discover
    from ingest.take import take_batch

    looked: list[str] = []
    audit_plates = writer._audit_amended_plates
    monkeypatch.setattr(writer, "_audit_amended_plates",
                        lambda con, run_id: (looked.extend(h for (h,) in con.sql("SELECT DISTINCT source_hash FROM staged")
                                                           .fetchall()), audit_plates(con, run_id)))
    wells = dict(PLATES["P1"][1])
    wells["TB"] = ("24", "25", "30")
    write(tmp_path / "again/results/L1/P1-a.csv", results_csv("P1", "16:50", wells))
    write(tmp_path / "again/results/L1/P9.csv", results_csv("P9", "16:55", dict(CONTROLS)))  # a new plate
    write(tmp_path / "again/results/L1/P1-b.csv", results_csv("P1", "17:00", wells))
    files = discover(tmp_path / "again")
    outcomes = take_batch(files, called)
    assert [o.status for o in outcomes] == ["accepted"] * 3
    by_name = {o.file_name: o.content_hash for o in outcomes}
    assert sorted(looked) == sorted(h for name, h in by_name.items() if "P1-" in name)
    audit = query_views(called, "SELECT entity_key, action, after->>'files' FROM audit WHERE entity = 'plate' ORDER BY audit_id", [])
    assert [(k, a) for k, a, _ in audit] == [("L1|P1|P1", "amend")] * 2  # each re-export supersedes what came before


def test_roles_from_config_and_internal_control_override(tmp_path, cfg):
    """Targets are mapped to roles by config (a kit naming ORF1ab 'FAM'); with the kit rule
    that a detected target makes a missing internal control irrelevant, TF-like tubes call."""
    cfg = replace(cfg, assay=replace(cfg.assay, orf1ab_target="FAM", positive_overrides_internal_control=True))
    open_test_round(cfg)
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
               "SELECT * FROM tube_calls(?) ORDER BY ALL",
               # issue 15: the snapshot's plates are the ones its runs read; a tubes list derives its own
               "SELECT * FROM tube_runs WHERE finished_at <= ? ORDER BY ALL",
               "SELECT * FROM tube_calls(?, tubes := ['TA', 'TH', 'TI']) ORDER BY ALL",
               "SELECT * FROM lab_anomalies(?) ORDER BY ALL")
    with open_warehouse(called.warehouse.path, id_hash_key()) as con:
        define_views(con, called)
        plain = [con.execute(q, [AS_OF]).fetchall() for q in queries]
        define_views(con, called, snapshot=True)
        snap = [con.execute(q, [AS_OF]).fetchall() for q in queries]
        assert con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('tube_members_snapshot', "
                       "'plate_qc_snapshot')").fetchall() == [(2,)]
    assert snap == plain and all(plain)


def test_the_status_over_the_reports_orders_is_the_status_that_derives_them(called, tmp_path):
    """Issue 15: the nightly report derives the round's orders once and reads the person status
    over them (``person_status_given``); it is the status ``person_status`` derives, person by
    person, and it reads the orders it is given (none given: nobody flagged, nobody ordered)."""
    ingest(resamples(tmp_path / "morning"), called)
    with open_warehouse(called.warehouse.path, id_hash_key()) as con:
        define_views(con, called)
        con.execute("CREATE TEMP TABLE given AS SELECT * FROM resample_orders(?) WHERE round_id = 'R1'", [AS_OF])
        con.execute("CREATE TEMP TABLE none_given AS SELECT * FROM given WHERE false")
        derived, given, without = (
            con.execute(f"SELECT * FROM {source} ORDER BY ALL", [AS_OF]).fetchall()
            for source in ("person_status('R1', ?)", "person_status_given('R1', ?, 'given')",
                           "person_status_given('R1', ?, 'none_given')"))
    assert given == derived
    statuses = {row[8] for row in derived}
    assert {"pool_positive", "resample"} & statuses and not {"pool_positive", "resample"} & {row[8] for row in without}


def test_a_well_given_two_samples_in_one_file_is_an_anomaly(called, tmp_path):
    rows = [RESULT_HEADER] + [f"L1,P9,P9,A1,{s},{t},{ct},2022-04-04T21:00:00+08:00"
                              for s in ("TB", "PC") for t, ct in (("ORF1ab", "30"), ("N", "30"), ("IC", "30"))]
    rows += [f"L1,P9,P9,A2,NC,{t},,2022-04-04T21:00:00+08:00" for t in ("ORF1ab", "N", "IC")]
    write(tmp_path / "clash/results/L1/P9.csv", "\n".join(rows) + "\n")
    ingest(tmp_path / "clash", called)
    found = query_views(called, "SELECT kind, detail FROM lab_anomalies(?) WHERE kind = 'well_reported_twice'")
    assert found == [("well_reported_twice", "lab L1 run P9 plate P9 well A1: 2 different samples in one file; "
                                             "none of them is called from it")]
    # neither sample's reading decides anything: the positive control's makes the plate invalid
    assert query_views(called, "SELECT qc_reason FROM plate_qc WHERE plate_id = 'P9'", []) == [
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
