"""Collect and deliver on a tiny hand-made round: every anomaly kind, every order reason so far,
person status, re-samples after the window, and many small scan files = one big file."""

from datetime import datetime
from zoneinfo import ZoneInfo


from tests.conftest import write
from tests.builders import REGISTER_HEADER, SCAN_HEADER, open_test_round, register_row, ric, take_all
from kernel.config import Config
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse

SH = ZoneInfo("Asia/Shanghai")
AS_OF = datetime(2022, 4, 5, 12, 0, tzinfo=SH)
P = {i: ric(f"31010119800101{i:03d}") for i in range(1, 21)}
V1, V2 = "E0000001", "E0000002"

GRID = {**{i: "G1" for i in range(1, 13)}, 13: "G2", 14: "G2", 15: "G3", 16: "G3", 17: "G3", 18: "G1", 19: "G1", 20: "G1"}


def register_csv() -> str:
    rows = []
    for i, number in P.items():
        row = register_row(number, grid=GRID[i], key_group="medical" if i == 18 else "",
                           mobility="true" if i == 20 else "false")
        household = {15: "H9", 16: "H9", 17: "H10"}.get(i, f"H{i}")
        rows.append(row.replace(",H1,", f",{household},"))
    return REGISTER_HEADER + "\n" + "\n".join(rows) + "\n"


def scan(t, site, tube, event, who="", cap="10", id_type="RIC"):
    number = P.get(who, who) if isinstance(who, int) else who
    kind = "" if event == "seal" else ("PASSPORT" if str(number).startswith("E") else id_type)
    return f"2022-04-04T{t}:00+08:00,{site},C1,{tube},{event},{kind},{number},,,{cap}"


SCANS = [
    scan("09:00", "S1", "T1", "add", 1), scan("09:01", "S1", "T1", "add", 2), scan("09:02", "S1", "T1", "add", 3),
    scan("09:03", "S1", "T1", "void", 2), scan("09:10", "S1", "T1", "seal"),
    scan("11:00", "S1", "T2", "add", V1), scan("11:01", "S1", "T2", "add", 4), scan("12:00", "S1", "T2", "seal"),
    *[scan(f"11:0{n}", "S1", "T3", "add", i) for n, i in enumerate([5, 6, 7, 13, 14, 20])], scan("12:00", "S1", "T3", "seal"),
    scan("11:00", "S1", "T4", "add", 8, cap="2"), scan("11:01", "S1", "T4", "add", 9, cap="2"),
    scan("11:30", "S1", "T4", "seal"), scan("11:40", "S1", "T4", "add", 10, cap="2"),
    scan("11:00", "S1", "T5", "add", 15), scan("11:01", "S1", "T5", "add", 17), scan("12:00", "S1", "T5", "seal"),
    scan("11:00", "S1", "T6", "add", 11), scan("12:00", "S2", "T6", "seal"),
    scan("11:00", "SX", "T7", "add", 12), scan("12:00", "SX", "T7", "seal"),
    scan("11:00", "S1", "T8", "add", 18), scan("11:01", "S1", "T8", "add", 1), scan("12:00", "S1", "T8", "seal"),
    scan("11:00", "S1", "T9", "add", 16),
    scan("11:00", "S1", "T11", "add", V2), scan("12:00", "S1", "T11", "seal"),
]
MANIFESTS = """box_id,tube_barcode,site_id,packed_at,courier_id,departed_at,lab_id
B1,T1,S1,2022-04-04T12:10:00+08:00,K1,2022-04-04T12:30:00+08:00,L1
B1,T2,S1,2022-04-04T12:10:00+08:00,K1,2022-04-04T12:30:00+08:00,L1
B1,T4,S1,2022-04-04T12:10:00+08:00,K1,2022-04-04T12:30:00+08:00,L1
B1,T5,S1,2022-04-04T12:10:00+08:00,K1,2022-04-04T12:30:00+08:00,L1
B2,T3,S1,2022-04-04T12:10:00+08:00,K2,2022-04-04T12:30:00+08:00,L1
B4,T6,S1,2022-04-04T12:10:00+08:00,K1,2022-04-04T12:30:00+08:00,L2
B4,T7,S1,2022-04-04T12:10:00+08:00,K1,2022-04-04T12:30:00+08:00,L2
B4,T8,S1,2022-04-04T12:10:00+08:00,K1,2022-04-04T12:30:00+08:00,L2
"""
RECEIPTS = """lab_id,box_id,tube_barcode,received_at,condition
L2,B1,T1,2022-04-04T14:00:00+08:00,ok
L2,B1,T2,2022-04-04T14:00:00+08:00,leaked
L2,B1,T4,2022-04-04T14:00:00+08:00,
L2,B1,T5,2022-04-04T14:00:00+08:00,ok
L2,B1,T11,2022-04-04T14:00:00+08:00,ok
L2,B4,T6,2022-04-04T14:00:00+08:00,ok
L2,B4,T7,2022-04-04T14:00:00+08:00,ok
L2,B4,T8,2022-04-04T14:00:00+08:00,ok
L2,B4,T10,2022-04-04T14:00:00+08:00,ok
L2,B4,T12,2022-04-04T14:00:00+08:00,broken
"""
RESAMPLES = "\n".join([
    SCAN_HEADER,
    f"2022-04-05T08:00:00+08:00,SH,C9,R1,add,RIC,{P[4]},,,1",
    "2022-04-05T08:01:00+08:00,SH,C9,R1,seal,,,,,",
    f"2022-04-05T08:00:00+08:00,SH,C9,R2,add,RIC,{P[19]},,,10",
]) + "\n"
RESAMPLE_CUSTODY = ("box_id,tube_barcode,site_id,packed_at\nB9,R1,SH,2022-04-05T08:30:00+08:00\n",
                    "lab_id,box_id,tube_barcode,received_at\nL1,B9,R1,2022-04-05T10:00:00+08:00\n")


def build_inbox(root, scan_parts=1):
    write(root / "sites/s.csv", "site_id,name,district,kind\nS1,One,黄浦区,fixed\nS2,Two,黄浦区,fixed\nSH,Home,黄浦区,home\n")
    write(root / "labs/l.csv", "lab_id,name\nL1,Lab1\nL2,Lab2\n")
    write(root / "zones/z.csv", "grid,zone\nG2,controlled\nG3,sealed\n")
    write(root / "register/r.csv", register_csv())
    size = -(-len(SCANS) // scan_parts)
    for n in range(scan_parts):
        part = SCANS[n * size:(n + 1) * size]
        if part:
            write(root / f"scans/site/part{n:03d}.csv", SCAN_HEADER + "\n" + "\n".join(part) + "\n")
    write(root / "manifests/m.csv", MANIFESTS)
    write(root / "receipts/r.csv", RECEIPTS)
    return root


def snapshot(cfg, as_of=AS_OF):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        anomalies = con.execute(
            "SELECT kind, coalesce(tube_barcode, box_id) FROM (SELECT kind, tube_barcode, box_id FROM tube_anomalies"
            " UNION ALL SELECT kind, tube_barcode, box_id FROM custody_anomalies(?)) ORDER BY ALL", [as_of]).fetchall()
        orders = con.execute("SELECT reason, source_tube, id_number, home_visit, fulfilled FROM resample_orders(?)"
                             " ORDER BY ALL", [as_of]).fetchall()
        status = dict(con.execute("SELECT id_number, status FROM person_status('R1', ?)", [as_of]).fetchall())
        tubes = con.execute("SELECT tube_barcode, members, capacity FROM tubes ORDER BY 1").fetchall()
        outside = con.execute("SELECT sum(people) FROM outside_register").fetchall()[0][0]
    return anomalies, orders, status, tubes, outside


def test_every_anomaly_order_and_status(tmp_path, cfg):
    open_test_round(cfg)
    outcomes = take_all(build_inbox(tmp_path / "in"), cfg)
    receipts = next(o for o in outcomes if o.kind == "receipts")
    assert receipts.quarantined_by_reason == {"condition not one of insufficient, leaked, ok, unlabelled": 1}
    anomalies, orders, status, tubes, outside = snapshot(cfg)
    assert anomalies == sorted([
        ("over_capacity", "T4"), ("add_after_seal", "T4"),
        ("above_zone_policy", "T3"), ("above_zone_policy", "T5"), ("above_zone_policy", "T8"),
        ("tube_two_sites", "T6"), ("unknown_site", "T7"), ("unsealed_at_round_end", "T9"),
        # G3 is sealed: its residents are sampled door to door, never at the fixed site S1 (issue 13.3)
        ("sealed_at_site", "T5"), ("sealed_at_site", "T9"),
        ("received_not_collected", "T10"), ("not_on_manifest", "T11"), ("wrong_lab", "B1"),
        ("tube_late", "T1"), ("tube_late", "T3"), ("tube_lost", "T3"), ("tube_lost", "T9"),
        ("box_lost", "B2"),  # B2 (T3) departed and neither it nor its tube reached a lab
    ])
    assert orders == sorted(
        [("tube_refused", "T2", n, False, False) for n in (V1, P[4])]
        + [("tube_lost", "T3", P[i], i == 20, False) for i in (5, 6, 7, 13, 14, 20)]
        + [("tube_lost", "T9", P[16], False, False)]
    )
    resample = {P[i] for i in (4, 5, 6, 7, 13, 14, 16, 20)}
    untested = {P[2], P[19]}
    assert {n for n, s in status.items() if s == "resample"} == resample
    assert {n for n, s in status.items() if s == "untested"} == untested
    assert {n for n, s in status.items() if s == "sampled"} == set(P.values()) - resample - untested
    assert ("T1", 2, 10) in tubes and ("T4", 3, 2) in tubes
    assert outside == 2

    # Before the round ends nothing is lost or unsealed yet.
    early, _, early_status, _, _ = snapshot(cfg, datetime(2022, 4, 4, 15, tzinfo=SH))
    assert not {k for k, _ in early} & {"tube_lost", "box_lost", "unsealed_at_round_end"}
    assert early_status[P[5]] == "sampled"


#: ``tube_policy`` as it was first written: every member of every tube joined to the register and
#: their grid's zone (the reference the narrowed rule must equal)
WHOLE_CITY_TUBE_POLICY = """
    WITH z AS (SELECT grid, zone, coalesce(since, TIMESTAMPTZ '-infinity') AS since FROM zones),
    mem AS (SELECT tm.round_id, tm.tube_barcode, coalesce(tm.added_at, TIMESTAMPTZ 'infinity') AS added_at,
                   reg.grid, reg.key_group, reg.household_id
            FROM tube_members tm LEFT JOIN register reg USING (person_key)),
    member_zone AS (SELECT mem.*, z.zone FROM mem ASOF LEFT JOIN z ON mem.grid = z.grid AND mem.added_at >= z.since)
    SELECT mz.round_id, mz.tube_barcode,
           min(zone_pool_size(mz.key_group, mz.zone, mz.household_id, r.pool_size)) AS allowed_size,
           coalesce(bool_or(mz.zone = 'sealed'), FALSE) AS sealed_zone,
           count(*) FILTER (WHERE mz.zone = 'sealed') AS sealed_members,
           count(DISTINCT mz.household_id) FILTER (WHERE mz.zone = 'sealed') AS sealed_households
    FROM member_zone mz JOIN rounds r USING (round_id) GROUP BY mz.round_id, mz.tube_barcode"""


def test_tube_policy_joins_only_special_members_and_equals_the_whole_city_rule(tmp_path, cfg):
    """Issue 15: ``tube_policy`` joins only the members of a key group or of a grid ever sealed or
    controlled; a tube of ordinary members allows the round's size. On a round holding every
    case (ordinary only, ordinary with a controlled-zone and a limited-mobility member, two
    sealed households, a key group with an ordinary member, a visitor) it equals the rule over
    every member; a tube of one sealed household alone has no size (not the round's)."""
    open_test_round(cfg)
    root = build_inbox(tmp_path / "in")
    # one sealed household alone (H9: P15, P16), sampled at home: the household rule, no size
    write(root / "scans/site/household.csv", SCAN_HEADER + "\n" + "\n".join(
        [scan("13:00", "SH", "TH", "add", 15, cap="20"), scan("13:01", "SH", "TH", "add", 16, cap="20"),
         scan("13:02", "SH", "TH", "seal")]) + "\n")
    take_all(root, cfg)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        narrowed = con.execute("SELECT * FROM tube_policy ORDER BY ALL").fetchall()
        reference = con.execute(WHOLE_CITY_TUBE_POLICY + " ORDER BY ALL").fetchall()
        policy = {row[1]: row[2] for row in narrowed}
    assert narrowed == reference
    assert len(narrowed) == 11
    assert policy["T1"] == 10 and policy["T2"] == 10  # ordinary; ordinary and a visitor
    assert policy["T3"] == Config().pool_policy.controlled_size  # G2 members with ordinary ones
    assert policy["T8"] == Config().pool_policy.key_group_size  # a key group member with an ordinary one
    assert policy["TH"] is None  # one sealed household: no size limit


def test_tube_policy_takes_each_members_zone_at_the_time_they_were_added(tmp_path, cfg):
    """Issue 15: a grid's zone holds from its ``since`` until the next one's (an equality join on
    the grid, not an ASOF join). G3, sealed, is lifted to precaution at 11:00:30: T5's P15
    (11:00) and T9's P16 (11:00) were sampled under the seal, T5's P17 (11:01) after it. Equal to
    the ASOF rule over every member."""
    open_test_round(cfg)
    root = build_inbox(tmp_path / "in")
    write(root / "zones/lifted.csv", "grid,zone,since\nG3,precaution,2022-04-04T11:00:30+08:00\n")
    take_all(root, cfg)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        assert con.execute("SELECT count(*) FROM zones WHERE grid = 'G3'").fetchall() == [(2,)]
        narrowed = con.execute("SELECT * FROM tube_policy ORDER BY ALL").fetchall()
        reference = con.execute(WHOLE_CITY_TUBE_POLICY + " ORDER BY ALL").fetchall()
    assert narrowed == reference
    sealed_members = {row[1]: row[4] for row in narrowed}
    assert sealed_members["T5"] == 1 and sealed_members["T9"] == 1


def test_resample_after_the_window_belongs_to_the_order_round(tmp_path, cfg):
    open_test_round(cfg)
    take_all(build_inbox(tmp_path / "in"), cfg)
    write(tmp_path / "late/scans/resample.csv", RESAMPLES)
    write(tmp_path / "late/manifests/m.csv", RESAMPLE_CUSTODY[0])
    write(tmp_path / "late/receipts/r.csv", RESAMPLE_CUSTODY[1])
    (scans, *_rest) = take_all(tmp_path / "late", cfg)
    # P19's pooled scan after the window has no order to belong to: quarantined with that reason
    assert scans.quarantined_by_reason == {"scanned outside every open round": 1}
    assert scans.rows_accepted == 2
    _, orders, status, tubes, _ = snapshot(cfg)
    assert status[P[4]] == "sampled"
    assert ("tube_refused", "T2", P[4], False, True) in orders


def test_a_lost_tubes_person_resampled_before_the_tube_is_declared_lost_is_not_ordered_again(tmp_path, cfg):
    """A tube is declared lost at round end + 12 h (here 04-05 10:00); a grid that re-samples the
    tube's people earlier (08:00, once the tube was late) has answered the order: it is
    fulfilled and the person is no longer ``resample`` (issue 14's note: 77 people of a
    20,000-person city stayed on worklists with a negative re-sample)."""
    open_test_round(cfg)
    take_all(build_inbox(tmp_path / "in"), cfg)
    write(tmp_path / "late/scans/resample.csv", "\n".join([
        SCAN_HEADER, f"2022-04-05T08:00:00+08:00,SH,C9,R5,add,RIC,{P[5]},,,1",
        "2022-04-05T08:01:00+08:00,SH,C9,R5,seal,,,,,"]) + "\n")
    (scans,) = take_all(tmp_path / "late", cfg)
    assert scans.rows_accepted == 2 and scans.rows_quarantined == 0
    _, orders, status, _, _ = snapshot(cfg)
    assert ("tube_lost", "T3", P[5], False, True) in orders
    assert ("tube_lost", "T3", P[6], False, False) in orders  # not re-sampled: still ordered
    assert status[P[5]] == "sampled" and status[P[6]] == "resample"


def test_a_resample_invalid_twice_does_not_answer_its_own_order(tmp_path, cfg):
    """An ordinary order is answered by a re-sample after the person's sample in the failed tube;
    the failed tube itself, when it is a re-sample, never answers the order it raised: P4's tube
    T2 was refused, their re-sample R1 is invalid twice, so R1's ``invalid`` order stays open."""
    from tests.builders import CONTROLS, ND, results_csv

    open_test_round(cfg)
    take_all(build_inbox(tmp_path / "in"), cfg)
    write(tmp_path / "late/scans/resample.csv", RESAMPLES)
    write(tmp_path / "late/manifests/m.csv", RESAMPLE_CUSTODY[0])
    write(tmp_path / "late/receipts/r.csv", RESAMPLE_CUSTODY[1])
    for plate, finished in (("P6", "11:00"), ("P7", "11:30")):
        write(tmp_path / f"late/results/L1/{plate}.csv",
              results_csv(plate, finished, {**CONTROLS, "R1": (ND, ND, ND)}, day="2022-04-05"))
    take_all(tmp_path / "late", cfg)
    _, orders, status, _, _ = snapshot(cfg)
    assert ("tube_refused", "T2", P[4], False, True) in orders  # answered by R1
    assert ("invalid", "R1", P[4], False, False) in orders  # R1 answers nothing it raised itself
    assert status[P[4]] == "resample"


def test_a_resample_scanned_before_its_order_waits_and_joins_the_order_round(tmp_path, cfg):
    """Issue 13.8: a re-sample whose scan reaches the inbox before the results file that orders
    it was quarantined for good ("scanned outside every open round") and its order showed
    unfulfilled. Here the pool TA (P1, P2, P3) turns positive on plate P1; the next morning's
    re-sample scans of P1 to P3 arrive before that plate's results."""
    import shutil

    from tests.builders import AS_OF as CALLED_AS_OF
    from tests.builders import P as CP
    from tests.builders import build, resamples

    open_test_round(cfg)
    root = build(tmp_path / "in")
    held = tmp_path / "held"
    shutil.move(root / "results", held)  # the lab's files come last
    take_all(root, cfg)
    early = resamples(tmp_path / "early")
    shutil.rmtree(early / "results")
    scans = next(o for o in take_all(early, cfg) if o.kind == "scans")
    assert scans.rows_quarantined == 0 and scans.rows_accepted == 6  # RS1-RS3: add and seal each, waiting
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        assert con.sql("SELECT count(*) FROM waiting_scans").fetchall() == [(6,)]
    shutil.move(held, tmp_path / "late" / "results")
    take_all(tmp_path / "late", cfg)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        assert con.sql("SELECT count(*) FROM waiting_scans").fetchall() == [(0,)]
        placed = con.sql("SELECT DISTINCT round_id, resample FROM scans WHERE tube_barcode LIKE 'RS%'").fetchall()
        audit = con.sql("SELECT entity_key, after FROM audit WHERE action = 'assign_waiting'").fetchall()
        define_views(con, cfg)
        fulfilled = con.execute("SELECT id_number, fulfilled FROM resample_orders(?) WHERE source_tube = 'TA'"
                                " ORDER BY 1", [CALLED_AS_OF]).fetchall()
    assert placed == [("R1", True)]
    assert len(audit) == 1 and '"rows":6' in audit[0][1].replace(" ", "")
    assert fulfilled == sorted((CP[i], True) for i in (1, 2, 3))  # re-sampled, by the scans that waited


def test_one_inbox_holding_the_round_and_next_morning_resamples(tmp_path, cfg):
    """Chain files are taken in the order things happened, so the re-sample scanned the next
    morning finds the order raised by the receipt of the day before."""
    open_test_round(cfg)
    inbox = build_inbox(tmp_path / "in")
    write(inbox / "scans/zz-early-name/resample.csv", RESAMPLES)
    write(inbox / "manifests/a-resample.csv", RESAMPLE_CUSTODY[0])
    write(inbox / "receipts/a-resample.csv", RESAMPLE_CUSTODY[1])
    outcomes = take_all(inbox, cfg)
    assert [o.file_name for o in outcomes][-3:] == [
        "scans/zz-early-name/resample.csv", "manifests/a-resample.csv", "receipts/a-resample.csv"]
    _, orders, status, _, _ = snapshot(cfg)
    assert status[P[4]] == "sampled"
    assert ("tube_refused", "T2", P[4], False, True) in orders


def test_many_small_scan_files_equal_one_big_file_and_reingest_changes_nothing(tmp_path, cfg):
    open_test_round(cfg)
    take_all(build_inbox(tmp_path / "one"), cfg)
    one = snapshot(cfg)
    assert {o.status for o in take_all(tmp_path / "one", cfg)} == {"skipped"}
    assert snapshot(cfg) == one

    split_cfg = cfg.with_warehouse(tmp_path / "split.duckdb")
    open_test_round(split_cfg)
    outcomes = take_all(build_inbox(tmp_path / "split", scan_parts=len(SCANS)), split_cfg)
    assert sum(o.kind == "scans" for o in outcomes) == len(SCANS)
    assert snapshot(split_cfg) == one
