"""The round rule's order look-up (issue 15.3) derives a re-sample's orders from the facts of its
person's own tubes (``kernel.scope.scoped_to_tubes``), not the city's: it must give the very
orders the whole-city ``resample_orders`` gives. A small city with every kind of order: positive
pools, a persisting single target, an invalid tube, a refused tube, lost tubes, people whose
ordinary order falls away because they have another good tube, and re-samples scanned before
the results that order them (they wait, then join the order's round)."""

import shutil
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sampling.rounds import look_up_orders
from tests.conftest import write
from tests.builders import P, REGISTER_HEADER, SCAN_HEADER, build, ingest, open_test_round, register_row, resamples, ric
from kernel.scope import scoped_to_tubes, warehouse_tables
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse

SH = ZoneInfo("Asia/Shanghai")
INFINITY = datetime.max.replace(tzinfo=SH)
Q = {i: ric(f"31010119950101{i:03d}") for i in range(1, 6)}


def custody_city(root):
    """More tubes of the round: TL1 (P4, Q1) and TL2 (Q2) never reach a lab (lost at round end
    + 12 h; P4 has the good tube TB, so only Q1 and Q2 are ordered), TR (P5, Q3) is refused
    (P5 has TB too), TQ (Q4, Q5) arrives fine."""
    write(root / "register/q.csv", REGISTER_HEADER + "\n" + "\n".join(
        register_row(n).replace(",H1,", f",Q{i},") for i, n in Q.items()) + "\n")
    tubes = {"TL1": (P[4], Q[1]), "TL2": (Q[2],), "TR": (P[5], Q[3]), "TQ": (Q[4], Q[5])}
    scans = [SCAN_HEADER]
    for tube, people in tubes.items():
        scans += [f"2022-04-04T12:00:00+08:00,S1,C1,{tube},add,RIC,{n},,,10" for n in people]
        scans.append(f"2022-04-04T12:30:00+08:00,S1,C1,{tube},seal,,,,,")
    write(root / "scans/q.csv", "\n".join(scans) + "\n")
    write(root / "receipts/q.csv", "lab_id,box_id,tube_barcode,received_at,condition\n"
          "L1,B2,TR,2022-04-04T15:00:00+08:00,leaked\nL1,B2,TQ,2022-04-04T15:00:00+08:00,ok\n")
    return root


@pytest.fixture
def city(tmp_path, cfg):
    open_test_round(cfg)
    root = build(tmp_path / "in")
    shutil.move(root / "results", tmp_path / "held")  # the lab's files come last
    ingest(root, cfg)
    ingest(custody_city(tmp_path / "more"), cfg)
    early = resamples(tmp_path / "early")  # RS1-RS3 of P1-P3 (pool TA), scanned before TA's results
    shutil.rmtree(early / "results")
    ingest(early, cfg)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        assert con.sql("SELECT count(*) FROM waiting_scans").fetchall() == [(6,)]
    shutil.move(tmp_path / "held", tmp_path / "late" / "results")
    ingest(tmp_path / "late", cfg)
    return cfg


ORDER = "round_id, person_key, reason, source_tube, priority, raised_at, due_by, fulfilled, fulfilled_at"


def candidates(con, people):
    """``incoming`` as the round rule sees it: one single-tube re-sample scan per person, the
    morning after the round."""
    con.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT 'add' AS event, 1 AS capacity,"
                " TIMESTAMPTZ '2022-04-06 08:00:00+08' AS scanned_at, unnest($p::UHUGEINT[]) AS person_key",
                {"p": [str(p) for p in people]})


def test_the_scoped_look_up_gives_the_whole_city_orders(city):
    with open_warehouse(city.warehouse.path, id_hash_key()) as con:
        define_views(con, city)
        assert con.sql("SELECT count(*) FROM waiting_scans").fetchall() == [(0,)]
        assert con.sql("SELECT DISTINCT round_id, resample FROM scans WHERE tube_barcode LIKE 'RS%'").fetchall() \
            == [("R1", True)]
        people = [r[0] for r in con.sql("SELECT DISTINCT person_key FROM scans WHERE person_key IS NOT NULL").fetchall()]
        whole = con.execute(f"SELECT {ORDER} FROM resample_orders(?) ORDER BY ALL", [INFINITY]).fetchall()
        rounds = dict(con.execute("SELECT person_key, arg_max(round_id, starts_at) FROM resample_orders(?)"
                                  " JOIN rounds USING (round_id) GROUP BY ALL", [INFINITY]).fetchall())
        numbers = dict(con.sql("SELECT DISTINCT person_key, id_number FROM scans WHERE person_key IS NOT NULL").fetchall())
        # the city has every kind of order, and ordinary orders that fall away (P4, P5: good tube TB)
        by_reason = {}
        for row in whole:
            by_reason.setdefault(row[2], set()).add(numbers[row[1]])
        assert by_reason == {
            "pool_positive": {P[1], P[2], P[3], P[6]}, "single_target": {P[7]}, "invalid": {P[9]},
            "tube_lost": {Q[1], Q[2]}, "tube_refused": {Q[3]}}
        assert {numbers[r[1]]: r[7] for r in whole if r[2] == "pool_positive" and r[3] == "TA"} \
            == {P[1]: True, P[2]: True, P[3]: True}  # fulfilled by the scans that waited

        # all people at once, then each alone: the same round per person as the whole city's
        candidates(con, people)
        assert look_up_orders(con) == len(rounds)
        assert dict(con.sql("SELECT person_key, round_id FROM round_rule_orders").fetchall()) == rounds
        for person in people:
            candidates(con, [person])
            look_up_orders(con)
            assert dict(con.sql("SELECT person_key, round_id FROM round_rule_orders").fetchall()) \
                == ({person: rounds[person]} if person in rounds else {}), numbers[person]

        # the orders themselves, row for row, derived in a scope holding only each person's tubes
        for person in people:
            theirs = f"SELECT tube_barcode FROM scans WHERE person_key = {person}::UHUGEINT"
            with scoped_to_tubes(con, theirs):
                scoped = con.execute(f"SELECT {ORDER} FROM resample_orders(?) WHERE person_key = ?::UHUGEINT"
                                     " ORDER BY ALL", [INFINITY, str(person)]).fetchall()
            assert scoped == [r for r in whole if r[1] == person], numbers[person]


def test_a_scope_reads_only_its_tubes_and_leaves_nothing_behind(city):
    with open_warehouse(city.warehouse.path, id_hash_key()) as con:
        define_views(con, city)
        before = con.sql("SELECT count(*) FROM tube_members").fetchall()
        with scoped_to_tubes(con, "SELECT 'TA' AS tube_barcode UNION ALL SELECT 'TL1'") as tubes:
            assert tubes == 2
            assert con.sql("SELECT DISTINCT tube_barcode FROM tube_members ORDER BY 1").fetchall() == [("TA",), ("TL1",)]
            assert con.sql("SELECT DISTINCT plate_id FROM results ORDER BY 1").fetchall() == [("P1",)]  # TA's plate
            assert con.sql("SELECT count(*) FROM register").fetchall() == [(0,)]
            with pytest.raises(RuntimeError, match="already scoped"), scoped_to_tubes(con, "SELECT 'TB' AS tube_barcode"):
                pass
        assert con.sql("SELECT count(*) FROM tube_members").fetchall() == before
        with pytest.raises(ZeroDivisionError), scoped_to_tubes(con, "SELECT 'TA' AS tube_barcode"):
            1 / 0
        assert con.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM tube_members").fetchall() == before


def test_a_scope_copies_its_tubes_rows_whole_within_an_open_batch(city):
    """A batch scopes tubes inside its own transaction (the pool alerts of the results it has
    just inserted): the scope copies each fact table's rows of its tubes by their row ids, and
    must copy exactly those rows, whole, with the batch's uncommitted inserts, updates and
    deletes seen as the batch sees them."""
    tubes = ("TA", "TL1", "TQ")
    with open_warehouse(city.warehouse.path, id_hash_key()) as con:
        define_views(con, city)
        wh = warehouse_tables(con)
        (tq_scans,) = con.sql(f"SELECT count(*) FROM {wh}.scans WHERE tube_barcode = 'TQ'").fetchall()[0]
        con.execute("BEGIN")
        con.execute(f"INSERT INTO {wh}.scans SELECT * REPLACE (source_line + 1000 AS source_line)"
                    f" FROM {wh}.scans WHERE tube_barcode = 'TQ'")
        con.execute(f"DELETE FROM {wh}.scans WHERE tube_barcode = 'TL1' AND event = 'seal'")
        con.execute(f"UPDATE {wh}.receipts SET condition = 'leaked' WHERE tube_barcode = 'TQ'")
        facts = {name: con.sql(f"SELECT * FROM {wh}.{name} WHERE tube_barcode IN {tubes} ORDER BY ALL").fetchall()
                 for name in ("scans", "manifests", "receipts")}
        assert sum(r[4] == "TQ" for r in facts["scans"]) == 2 * tq_scans  # the batch's own rows are there
        with scoped_to_tubes(con, "SELECT unnest(['TA', 'TL1', 'TQ']) AS tube_barcode"):
            for name, rows in facts.items():
                assert con.sql(f"SELECT * FROM temp.main.{name} ORDER BY ALL").fetchall() == rows, name
            assert con.sql("SELECT count(*) FROM temp.main.scans WHERE tube_barcode = 'TL1' AND event = 'seal'"
                           ).fetchall() == [(0,)]
            assert con.sql("SELECT DISTINCT condition FROM temp.main.receipts WHERE tube_barcode = 'TQ'"
                           ).fetchall() == [("leaked",)]
        con.execute("ROLLBACK")
