"""Benchmark: whole cities through the real pipeline (issue 6). For each size (default 1 M, 5 M
and 25.7 M residents) the project's simulator writes the city's inbox (Parquet register and
scans), and the inbox is taken link by link through ``ingest.take.take_batch`` (called directly,
without Prefect: the flows add one task run per batch around the same call; each link's stretch
is cut into batches by ``ingest.take.plan_batches``, as the flow does):

1. reference data and the register (the round opened first, from ``_truth.json``);
2. collect: the round's scan files;
3. deliver: boxes (manifests) and receipts;
4. test: the results files (all but one, held back for the latency figure);
5. positive-pool latency: the held-back results file lands, is taken, and the alert query the
   ingest flow runs after each results file (``reporting.alerts.positive_pools``) returns its
   positive pools with their people to re-sample;
6. re-samples: the next morning's files (single tubes ordered by the first results, their
   boxes, receipts and results), in the order ``discover`` gives;
7. report: ``define_views(snapshot=True)`` and ``reporting.report.write_report`` as
   ``flows/report.py`` runs them, as of the next day at noon.

Then, with the city loaded: the coverage per grid and the pool orders (positive pooled tube →
members → urgent re-sampling orders) on tubetrail's views, the same logic in plain pandas and in
SQL on PostgreSQL 15 (``bench.baselines``) over the accepted facts, every result asserted equal;
a micro-batch: one more scan file of 50,000 scans of registered people, taken (four in a row, from
a settled layout: the fourth's close merges the small batches' row groups); the fixed cost a
file; and a register update of 100 people (every other one with a new phone) in a warm process.

The floor (``bench.floor``, issue 15): the same inbox loaded in bulk with plain DuckDB SQL, link
by link in child processes, its coverage per grid asserted equal to tubetrail's, and tubetrail ÷
floor per link and end to end. "Last file → report": the round taken again wave by wave
(``devtools.demo.waves``), then the last wave and the nightly report, timed together.

Every step runs in a child process of its own (``python -m bench.city --child``), timed from
the parent (start to exit, interpreter start and imports included) and inside the child (the
work alone); its peak memory is the child's maximum resident set size, read with ``os.wait4``.
End to end = the sum of the seven links above.

    python -m bench.city --sizes 1000000,5000000,25700000 --workdir /tmp/tubetrail-bench-city
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

PG_PORT = 5434
MICRO_BATCH = 50_000
#: micro-batches taken one after the other: the first is the figure; four in a row hold one that merges
#: the tables' tail row groups (``warehouse.writer.VACUUM_EVERY_BATCHES``)
MICRO_BATCHES = 4
LINKS = ("reference and register", "collect (scans)", "deliver (boxes, receipts)", "test (results)",
         "positive-pool latency", "re-samples (next morning)", "report")


# --- child side ---------------------------------------------------------------------------------

def _cfg(spec: dict):
    """The step's configuration; tubetrail's ingest is imported here, before any timer starts
    (``tubetrail_take`` imports it lazily: a step's work never counts the imports)."""
    import ingest.take  # noqa: F401
    from kernel.config import Config

    return Config().with_warehouse(Path(spec["warehouse"]))


def _as_of(truth: dict) -> datetime:
    """The nightly report's time, as the demo judges it: the day after the round at noon."""
    from devtools.demo import report_time

    return report_time(datetime.fromisoformat(truth["round"]["end"]), "Asia/Shanghai")


def tubetrail_take(files: list, cfg) -> list:
    """tubetrail's ingest of ``files`` (``[kind, path, label]`` rows, in order), as the ingest
    flow takes them: cut into batches (``ingest.take.plan_batches``), one ``take_batch`` call
    each. Every use the bench makes of tubetrail's ingest goes through here. Returns one
    ``FileOutcome`` per file."""
    from ingest.discover import InboxFile
    from ingest.take import plan_batches, take_batch

    inbox = [InboxFile(kind, Path(path), label) for kind, path, label in files]
    return [o for batch in plan_batches(inbox, cfg) for o in take_batch(batch, cfg)]


def child_take(spec: dict) -> dict:
    from kernel.secrets import id_hash_key
    from warehouse.connection import open_configured
    from warehouse.writer import open_round

    cfg = _cfg(spec)
    if spec.get("open_round"):
        rnd = spec["truth"]["round"]
        with open_configured(cfg.warehouse, id_hash_key()) as con:
            open_round(con, round_id=rnd["id"], starts_at=datetime.fromisoformat(rnd["start"]),
                       ends_at=datetime.fromisoformat(rnd["end"]), districts=rnd.get("districts"),
                       pool_size=rnd["pool_size"], run_id=None)
    start = time.perf_counter()
    out = {"files": 0, "accepted": 0, "refused": 0, "skipped": 0, "rows_read": 0, "rows_accepted": 0,
           "rows_quarantined": 0}
    for o in tubetrail_take(spec["files"], cfg):
        out["files"] += 1
        out[o.status] = out.get(o.status, 0) + 1
        out["rows_read"] += o.rows_read
        out["rows_accepted"] += o.rows_accepted
        out["rows_quarantined"] += o.rows_quarantined
    out["work_s"] = time.perf_counter() - start
    return out


def child_latency(spec: dict) -> dict:
    from reporting.alerts import positive_pools
    from kernel.secrets import id_hash_key
    from warehouse.views import define_views
    from warehouse.connection import open_configured

    cfg = _cfg(spec)
    start = time.perf_counter()
    (o,) = tubetrail_take([spec["file"]], cfg)
    taken = time.perf_counter()
    with open_configured(cfg.warehouse, id_hash_key()) as con:  # as flows/alerts.py does after each file
        define_views(con, cfg)
        from datetime import timezone
        alerts = positive_pools(con, cfg, [o.content_hash], datetime.now(timezone.utc))
    done = time.perf_counter()
    return {"status": o.status, "rows": o.rows_accepted, "take_s": taken - start, "alert_s": done - taken,
            "total_s": done - start, "pools": len(alerts), "people": sum(a.people for a in alerts)}


def child_report(spec: dict) -> dict:
    from reporting.report import write_report
    from kernel.secrets import id_hash_key
    from warehouse.views import define_views
    from warehouse.connection import open_configured

    cfg = _cfg(spec)
    as_of = _as_of(spec["truth"])
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        start = time.perf_counter()
        define_views(con, cfg, snapshot=True)
        snap = time.perf_counter()
        figures = write_report(con, cfg, spec["truth"]["round"]["id"], as_of, Path(spec["out"]))
        done = time.perf_counter()
    # the district packs (door-to-door worklists), as the round-report flow's Dask tasks write
    # them, here one after the other in this process
    from reporting.districts import report_districts, write_district_pack

    packs = [write_district_pack(Path(spec["out"]), d) for d in report_districts(Path(spec["out"]))]
    city = figures.city
    return {"snapshot_s": snap - start, "write_report_s": done - snap, "district_packs_s": time.perf_counter() - done,
            "registered": city.get("registered"), "sampled": city.get("sampled"), "coverage": city.get("coverage"),
            "statuses": dict(figures.statuses), "orders": dict(figures.orders), "files": len(figures.files),
            "districts": len(packs), "worklists": sum(p.worklists for p in packs), "parts_s": dict(figures.timings)}


PK = "(person_key & 9223372036854775807::UHUGEINT)::BIGINT"


def child_logic(spec: dict) -> dict:
    """tubetrail's coverage per grid and pool orders (timed), its answers and the accepted facts
    exported for the baselines (Parquet for pandas, CSV for PostgreSQL's COPY)."""
    from kernel.secrets import id_hash_key
    from warehouse.views import define_views
    from lab.calling import pin_tube_calls
    from reporting.coverage import define_coverage_views
    from warehouse.connection import open_configured

    cfg = _cfg(spec)
    a = cfg.assay
    assert (a.detected_below, a.grey_below, a.orf1ab_target.lower(), a.n_target.lower(),
            a.internal_control_target.lower(), a.positive_control_sample.strip().upper(),
            a.negative_control_sample.strip().upper(), a.positive_overrides_internal_control) == (
        37, 40, "orf1ab", "n", "ic", "PC", "NC", False), "the baselines hard-code the default [assay]"
    rid = spec["truth"]["round"]["id"]
    as_of = _as_of(spec["truth"])
    facts = Path(spec["facts"])
    facts.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        t = time.perf_counter()
        define_views(con, cfg, snapshot=True)
        define_coverage_views(con)
        out["snapshot_s"] = time.perf_counter() - t
        t = time.perf_counter()
        # tube_calls derived once, as the report does (unpinned, coverage at 25.7 M ran out of the
        # default 3.5 GB memory limit): its time counts in coverage's
        pin_tube_calls(con, as_of)
        con.execute("CREATE TEMP TABLE tt_coverage AS SELECT grid, registered, sampled, coverage "
                    "FROM coverage($rid, $as_of) WHERE level = 'grid'", {"rid": rid, "as_of": as_of})
        out["coverage_s"] = time.perf_counter() - t
        t = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE tt_orders AS SELECT {PK} AS pk, source_tube, reason FROM resample_orders($as_of) "
                    "WHERE urgent_reason(reason)", {"as_of": as_of})
        out["orders_s"] = time.perf_counter() - t
        out["districts"] = con.execute("SELECT districts, pool_size FROM rounds WHERE round_id = ?", [rid]).fetchall()[0]
        assert out["districts"][0] is None, "the baselines take the whole register as the round's scope"
        out["pool_size"] = out.pop("districts")[1]
        con.execute(f"COPY tt_coverage TO '{facts / 'tt_coverage.parquet'}' (FORMAT parquet)")
        con.execute(f"COPY tt_orders TO '{facts / 'tt_orders.parquet'}' (FORMAT parquet)")
        out["grids"], out["registered"], out["sampled"] = con.sql(
            "SELECT count(*), sum(registered), sum(sampled) FROM tt_coverage").fetchall()[0]
        out["order_people"], out["pools"] = con.sql(
            "SELECT count(*), count(DISTINCT source_tube) FROM tt_orders").fetchall()[0]
        out["tubes"] = con.execute("SELECT count(*) FROM tubes WHERE round_id = ?", [rid]).fetchall()[0][0]
        t = time.perf_counter()
        queries = {
            "register": f"SELECT {PK} AS pk, district, grid FROM register",
            "scans": f"SELECT round_id, tube_barcode, {PK} AS pk, event, scanned_at, capacity FROM scans",
            "receipts": "SELECT tube_barcode, received_at, condition FROM receipts",
            "readings": "SELECT r.lab_id, r.run_id, r.plate_id, r.well, r.sample, r.target, r.ct, r.finished_at, "
                        "l.ingested_at, r.source_line FROM results r JOIN ingest_ledger l ON l.content_hash = r.source_hash",
        }
        con.execute("SET TimeZone = 'UTC'")
        out["fact_rows"] = {}
        for name, q in queries.items():
            con.execute(f"COPY ({q}) TO '{facts / (name + '.parquet')}' (FORMAT parquet)")
            con.execute(f"COPY ({q}) TO '{facts / (name + '.csv')}' (HEADER, DELIMITER ',')")
            out["fact_rows"][name] = con.sql(f"SELECT count(*) FROM ({q})").fetchall()[0][0]
        out["export_s"] = time.perf_counter() - t
    return out


def _compare(name: str, coverage, orders, facts: Path) -> dict:
    """Assert a baseline's answers equal tubetrail's; fail loudly with the first differences."""
    import pandas as pd

    tt_cov = pd.read_parquet(facts / "tt_coverage.parquet").sort_values("grid", ignore_index=True)
    tt_ord = pd.read_parquet(facts / "tt_orders.parquet")
    cov = coverage.sort_values("grid", ignore_index=True)
    if list(cov["grid"]) != list(tt_cov["grid"]):
        raise AssertionError(f"{name}: the grids differ from tubetrail's ({len(cov)} against {len(tt_cov)})")
    for col in ("registered", "sampled"):
        diff = (cov[col].astype("int64").to_numpy() != tt_cov[col].astype("int64").to_numpy()).sum()
        if diff:
            raise AssertionError(f"{name}: {col} differs from tubetrail's in {diff} grid(s)")
    worst = float((cov["coverage"].astype("float64") - tt_cov["coverage"].astype("float64")).abs().max() or 0.0)
    if worst > 1e-4 + 1e-12:  # both round to 4 places; only a tie could round apart
        raise AssertionError(f"{name}: coverage differs from tubetrail's by up to {worst}")
    mine = set(zip(orders["pk"].astype("int64"), orders["source_tube"].astype(str), orders["reason"].astype(str)))
    theirs = set(zip(tt_ord["pk"].astype("int64"), tt_ord["source_tube"].astype(str), tt_ord["reason"].astype(str)))
    if mine != theirs or len(orders) != len(tt_ord):
        raise AssertionError(f"{name}: pool orders differ from tubetrail's: {len(mine - theirs)} only in {name}, "
                             f"{len(theirs - mine)} only in tubetrail ({len(orders)} rows against {len(tt_ord)})")
    return {"grids": len(cov), "registered": int(cov["registered"].sum()), "sampled": int(cov["sampled"].sum()),
            "order_people": len(orders), "pools": len({t for _, t, _ in mine}), "equal": True}


def read(path: Path, columns: list[str] | None = None, categories: list[str] | None = None):
    """A Parquet file into pandas with compact dtypes: low-cardinality text as categories,
    nullable integers (the person key has nulls on seal scans: as float64 it would lose digits)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    ints = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
    return pq.read_table(path, columns=columns).to_pandas(categories=categories, types_mapper=ints.get)


def child_pandas(spec: dict) -> dict:
    import pandas as pd

    from bench.baselines import pandas_coverage, pandas_pool_orders

    facts = Path(spec["facts"])
    as_of = pd.Timestamp(_as_of(spec["truth"]))
    rid = spec["truth"]["round"]["id"]
    t = time.perf_counter()
    register = read(facts / "register.parquet", columns=["pk", "grid"])
    scans = read(facts / "scans.parquet", categories=["round_id", "event"])
    receipts = read(facts / "receipts.parquet", categories=["condition"])
    readings = read(facts / "readings.parquet", categories=["lab_id", "well", "target"])
    load = time.perf_counter() - t
    t = time.perf_counter()
    coverage = pandas_coverage(register, scans, receipts, rid, as_of)
    cov_s = time.perf_counter() - t
    del register, receipts
    t = time.perf_counter()
    orders = pandas_pool_orders(readings, scans, spec["pool_size"], as_of)
    ord_s = time.perf_counter() - t
    del scans, readings
    return {"load_s": load, "coverage_s": cov_s, "orders_s": ord_s, **_compare("pandas", coverage, orders, facts)}


def child_postgres(spec: dict) -> dict:
    import pandas as pd
    import psycopg

    from bench.baselines import PG_COVERAGE, PG_POOL_ORDERS_STEPS, PG_TABLES

    facts = Path(spec["facts"])
    as_of = _as_of(spec["truth"])
    params = {"rid": spec["truth"]["round"]["id"], "as_of": as_of, "pool_size": spec["pool_size"]}
    out: dict = {"load_s": {}}
    with psycopg.connect(spec["dsn"], autocommit=False) as con:
        with con.cursor() as cur:
            for name, columns in PG_TABLES.items():
                t = time.perf_counter()
                # table and COPY in one transaction (wal_level = minimal: no WAL for the rows)
                cur.execute(f"DROP TABLE IF EXISTS {name}")
                cur.execute(f"CREATE TABLE {name} ({columns})")
                with cur.copy(f"COPY {name} FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                        (facts / f"{name}.csv").open("rb") as f:
                    while chunk := f.read(1 << 20):
                        copy.write(chunk)
                con.commit()
                cur.execute(f"ANALYZE {name}")
                con.commit()
                out["load_s"][name] = time.perf_counter() - t
            t = time.perf_counter()
            cur.execute(PG_COVERAGE, params)
            coverage = pd.DataFrame(cur.fetchall(), columns=["grid", "registered", "sampled", "coverage"])
            out["coverage_s"] = time.perf_counter() - t
            t = time.perf_counter()
            for step in PG_POOL_ORDERS_STEPS:
                cur.execute(step, params if "%(" in step else None)
            orders = pd.DataFrame(cur.fetchall(), columns=["pk", "source_tube", "reason"])
            out["orders_s"] = time.perf_counter() - t
            cur.execute("SELECT version()")
            out["server"] = cur.fetchall()[0][0].split(" on ")[0]
    out["load_total_s"] = sum(out["load_s"].values())
    return {**out, **_compare("PostgreSQL", coverage, orders, facts)}


def child_microbatch(spec: dict) -> dict:
    """``batches`` scan files of ``scans`` scans each in the simulator's format: registered people
    (the register's identities, spread over the city by a hash, other people in each file), pools
    of 10 at the city's sites; then, from a settled layout (``warehouse.writer.merge_tail_row_groups``,
    untimed), taken one after the other, each a batch of its own. The first is the micro-batch's
    figure (``take_s``); ``takes`` are all of them and ``mean_s`` their mean, ``vacuumed`` says
    whose close merged the tables' tail row groups (``warehouse.writer.note_vacuum_debt``: every
    fourth batch, so four in a row show the merge's cost too)."""
    import duckdb

    from kernel.secrets import id_hash_key
    from warehouse.connection import open_configured
    from warehouse.writer import VACUUM_DEBT, merge_tail_row_groups

    cfg = _cfg(spec)
    out = Path(spec["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    n = spec["scans"]
    tubes = -(-n // 11)  # up to 10 adds and one seal per tube
    adds = n - tubes
    paths = [out.with_name(f"{out.stem}_{j}{out.suffix}") if j else out for j in range(spec.get("batches", 1))]
    t = time.perf_counter()
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        # every file's people at once (one pass over the register), numbered in that order
        con.execute(f"""CREATE TEMP TABLE micro_people AS
                        SELECT id_type, id_number, name, phone, row_number() OVER () - 1 AS k
                        FROM (SELECT * FROM register ORDER BY hash(person_key) LIMIT {adds * len(paths)})""")
        for j, path in enumerate(paths):
            con.execute(f"""
                COPY (
                  WITH people AS (
                    SELECT id_type, id_number, name, phone, k - {j * adds} AS k FROM micro_people
                    WHERE k >= {j * adds} AND k < {(j + 1) * adds}
                  ), sites AS (SELECT site_id, row_number() OVER (ORDER BY site_id) - 1 AS s FROM sites WHERE kind <> 'home'),
                  nsites AS (SELECT count(*) AS c FROM sites),
                  ev AS (
                    SELECT TIMESTAMPTZ '2022-04-04 21:00:00+08' + to_seconds(p.k * 0.07) AS at, p.k // 10 AS tube,
                           'add' AS event, p.id_type, p.id_number, p.name, p.phone FROM people p
                    UNION ALL
                    SELECT TIMESTAMPTZ '2022-04-04 21:00:00+08' + to_seconds((t * 10 + 9) * 0.07 + 1), t, 'seal',
                           NULL, NULL, NULL, NULL FROM range({tubes}) r(t)
                  )
                  SELECT strftime(ev.at AT TIME ZONE 'Asia/Shanghai', '%Y-%m-%dT%H:%M:%S+08:00') AS scanned_at, st.site_id,
                         'C' || substr(st.site_id, 2) AS collector_id,
                         'MB' || {j} || lpad(ev.tube::VARCHAR, 8, '0') AS tube_barcode,
                         ev.event, ev.id_type, ev.id_number, ev.name, ev.phone, '10' AS capacity
                  FROM ev, nsites JOIN sites st ON st.s = ev.tube % nsites.c
                  ORDER BY ev.at
                ) TO '{path}' (FORMAT parquet)""")
        merge_tail_row_groups(con)  # what the links before left is merged here, not in the first batch
        rows = duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall()[0][0]
    written = time.perf_counter() - t
    takes, vacuumed, outcomes = [], [], []
    for path in paths:
        t = time.perf_counter()
        (o,) = tubetrail_take([["scans", str(path), f"scans/{path.name}"]], cfg)
        takes.append(time.perf_counter() - t)
        assert o.status == "accepted", o.message
        outcomes.append(o)
        con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
        try:  # a batch that vacuumed left no debt behind it
            (debt,) = con.execute("SELECT value FROM warehouse_settings WHERE name = ?", [VACUUM_DEBT]).fetchone()
        finally:
            con.close()
        vacuumed.append(json.loads(debt)["batches"] == 0)
    return {"write_s": written, "take_s": takes[0], "scans": rows, "accepted": outcomes[0].rows_accepted,
            "quarantined": outcomes[0].rows_quarantined, "takes": takes, "vacuumed": vacuumed,
            "mean_s": sum(takes) / len(takes)}


def micro_series(m: dict) -> str:
    """The micro-batches in a row, each taken time, "merged" after the one whose close vacuumed."""
    takes = [f"{t:.2f} s" + (" merged" if v else "") for t, v in zip(m.get("takes", []), m.get("vacuumed", []))]
    return f"{len(takes)} in a row: " + ", ".join(takes) + f"; mean {m['mean_s']:.2f} s" if takes else "one"


#: the fixed cost a file (issue 15: ≤ 20 ms): this many one-row files against one file of as many rows
FILE_COST_FILES = 200


def child_file_cost(spec: dict) -> dict:
    """The fixed cost a file, with the city loaded: ``files`` manifest files of one row each, then
    one manifest file of ``files`` rows (other boxes and tubes), each set taken as the ingest flow
    takes it; the cost a file is the difference over the extra files. Manifests are the smallest
    chain feed (a box packed at a site), so little of the difference is rows."""
    from kernel.secrets import id_hash_key
    from warehouse.connection import open_configured
    from warehouse.writer import merge_tail_row_groups

    cfg = _cfg(spec)
    n, root = spec["files"], Path(spec["out"])
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        sites = [r[0] for r in con.execute("SELECT site_id FROM sites ORDER BY site_id LIMIT 50").fetchall()]
        labs = [r[0] for r in con.execute("SELECT lab_id FROM labs ORDER BY lab_id").fetchall()]
        merge_tail_row_groups(con)  # the steps before are merged here, untimed
    header = "box_id,tube_barcode,site_id,packed_at,courier_id,departed_at,lab_id\n"

    def row(kind: str, i: int) -> str:
        return (f"FC{kind}{i:06d},FC{kind}T{i:06d},{sites[i % len(sites)]},2022-04-04T21:00:00+08:00,K{i % 7},"
                f"2022-04-04T21:10:00+08:00,{labs[i % len(labs)]}\n")

    many = []
    for i in range(n):
        path = root / "many" / "manifests" / f"m{i:04d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + row("M", i))
        many.append(["manifests", str(path), f"manifests/m{i:04d}.csv"])
    one = root / "one" / "manifests" / "all.csv"
    one.parent.mkdir(parents=True, exist_ok=True)
    one.write_text(header + "".join(row("O", i) for i in range(n)))
    t = time.perf_counter()
    outcomes = tubetrail_take(many, cfg)
    many_s = time.perf_counter() - t
    t = time.perf_counter()
    (single,) = tubetrail_take([["manifests", str(one), "manifests/all.csv"]], cfg)
    one_s = time.perf_counter() - t
    accepted = sum(o.rows_accepted for o in outcomes if o.status == "accepted")
    assert accepted == n and single.rows_accepted == n, (accepted, single.rows_accepted, single.message)
    return {"files": n, "rows": n, "many_s": many_s, "one_s": one_s,
            "per_file_ms": 1000 * (many_s - one_s) / (n - 1)}


#: a district's register update file (issue 15: ≤ 0.2 s at 25.7 M): this many people
REGISTER_UPDATE_ROWS = 100


def child_register_update(spec: dict) -> dict:
    """A register update of ``rows`` people with the city loaded, taken as the ingest flow takes
    it: the register's own rows of people spread over the city by a hash, every other one with a
    new mobile number (the rest repeat their row). A first update of other people is taken before
    in the same process, so the one measured is a warm process's, as the flow's worker is. The
    people the update changed are counted from the audit."""
    from kernel.secrets import id_hash_key
    from kernel.sql import sql_text
    from sampling.register import COLUMNS
    from warehouse.connection import open_configured
    from warehouse.writer import merge_tail_row_groups

    cfg = _cfg(spec)
    n, root = spec["rows"], Path(spec["out"])
    columns = ", ".join(f"{c}::VARCHAR AS {c}" for c in COLUMNS)  # as the inbox's register files hold them
    audited = "SELECT count(*) FROM audit WHERE entity = 'register'"
    paths, rows = [], 0
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        for part in ("warm", "measured"):
            path = root / "register" / f"update_{part}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            offset = 0 if part == "warm" else n
            (rows,) = con.execute(f"""
                COPY (SELECT * EXCLUDE (k) REPLACE (
                          CASE WHEN k % 2 = 0 THEN '139' || lpad((hash(id_number, '{part}', {sql_text(str(root))}) % 100000000)::VARCHAR, 8, '0')
                               ELSE phone END AS phone)
                      FROM (SELECT * EXCLUDE (person_key), row_number() OVER (ORDER BY hash(person_key), person_key)
                                       - 1 - {offset} AS k
                            FROM (SELECT person_key, {columns}
                                  FROM register ORDER BY hash(person_key), person_key LIMIT {2 * n}))
                      WHERE k >= 0 AND k < {n} ORDER BY k) TO '{path}' (FORMAT parquet)""").fetchall()[0]
            paths.append(path)
    (warm,) = tubetrail_take([["register", str(paths[0]), "register/update_warm.parquet"]], cfg)
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        (before,) = con.execute(audited).fetchall()[0]
        merge_tail_row_groups(con)  # the steps before are merged here, untimed
    t = time.perf_counter()
    (o,) = tubetrail_take([["register", str(paths[1]), "register/update_measured.parquet"]], cfg)
    taken = time.perf_counter() - t
    assert warm.status == "accepted" and o.status == "accepted", (warm.message, o.message)
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        (after,) = con.execute(audited).fetchall()[0]
    return {"rows": rows, "accepted": o.rows_accepted, "quarantined": o.rows_quarantined, "changed": after - before,
            "take_s": taken}


def child_last_wave(spec: dict) -> dict:
    """"Last file → report": the round's last wave lands (its files taken), then the nightly
    report is written (``child_report``'s work) at once; timed from the first file taken."""
    cfg = _cfg(spec)
    start = time.perf_counter()
    outcomes = tubetrail_take(spec["files"], cfg)
    taken = time.perf_counter()
    report = child_report(spec)
    done = time.perf_counter()
    refused = [o.file_name for o in outcomes if o.status == "refused"]
    if refused:
        raise RuntimeError(f"last wave: {len(refused)} file(s) refused")
    return {"files": len(outcomes), "rows_accepted": sum(o.rows_accepted for o in outcomes), "take_s": taken - start,
            "report_s": done - taken, "total_s": done - start, "registered": report["registered"],
            "sampled": report["sampled"], "coverage": report["coverage"]}


def _child_floor(spec: dict) -> dict:
    from bench.floor import child_floor

    return child_floor(spec)


CHILDREN = {"take": child_take, "latency": child_latency, "report": child_report, "logic": child_logic,
            "pandas": child_pandas, "postgres": child_postgres, "microbatch": child_microbatch,
            "file_cost": child_file_cost, "register_update": child_register_update,
            "floor": _child_floor, "last_wave": child_last_wave}


# --- parent side --------------------------------------------------------------------------------

def _timed(argv: list[str], **popen) -> tuple[int, float, float]:
    """Run ``argv`` to its end: exit code, wall seconds (start to exit, from the parent) and the
    child's peak RSS in GB (``os.wait4``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, **popen)
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024 ** 2


def run_child(name: str, spec: dict, workdir: Path) -> dict:
    """Run one step in a child process: wall time from the parent, peak RSS by ``os.wait4``."""
    spec_path = workdir / f"step-{name}.json"
    result_path = workdir / f"step-{name}.result.json"
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**spec, "task": name, "result": str(result_path)}, default=str))
    code, wall, peak = _timed([sys.executable, "-m", "bench.city", "--child", str(spec_path)])
    if code != 0:
        raise RuntimeError(f"bench step {name} failed (exit {code}, {wall:.0f} s, peak {peak:.1f} GB)")
    result = json.loads(result_path.read_text())
    return {**result, "wall_s": round(wall, 2), "peak_gb": round(peak, 2)}


def run_command(argv: list[str]) -> dict:
    code, wall, peak = _timed(argv, stdout=subprocess.DEVNULL)
    if code != 0:
        raise RuntimeError(f"{argv[0]} failed")
    return {"wall_s": round(wall, 2), "peak_gb": round(peak, 2)}


def machine() -> dict:
    import duckdb
    import pandas
    import polars
    import psycopg
    import pyarrow

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    swap_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("SwapTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem_kb / 1024 ** 2, 1), "swap_gb": round(swap_kb / 1024 ** 2, 1),
            "os": platform.platform(), "python": platform.python_version(), "polars": polars.__version__,
            "duckdb": duckdb.__version__, "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
            "psycopg": psycopg.__version__}


def postgres_bindir() -> Path:
    """Debian's PostgreSQL 15, installed with apt-get when missing (needs root)."""
    bindir = Path("/usr/lib/postgresql/15/bin")
    if not (bindir / "initdb").exists():
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql-15"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return bindir


@contextmanager
def postgres_cluster(port: int = PG_PORT):
    """A throwaway cluster in a temp dir on loopback (unix socket in the temp dir), stopped and
    removed at the end, also on error. Runs as the ``postgres`` user when started as root."""
    bindir = postgres_bindir()
    tmp = Path(tempfile.mkdtemp(prefix="tubetrail-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = tmp / "data"
    started = False
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "bench", "--auth=trust",
                        "-E", "UTF8", "--locale=C"], check=True, stdout=subprocess.DEVNULL)
        settings = ("-c listen_addresses=127.0.0.1 -c shared_buffers=2GB -c work_mem=512MB "
                    "-c maintenance_work_mem=1GB -c wal_level=minimal -c max_wal_senders=0 -c synchronous_commit=off "
                    "-c max_parallel_workers_per_gather=2 -c jit=off")
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", f"-p {port} -k {tmp} {settings}", "-l", str(tmp / "server.log"),
                        "-w", "start"], check=True, stdout=subprocess.DEVNULL)
        started = True
        yield f"host={tmp} port={port} user=bench dbname=postgres", settings
    finally:
        if started:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def plan_links(sim: Path) -> tuple[dict[str, list], list | None]:
    """The inbox's files per link, in ``discover`` order, and the results file held back for the
    latency figure: the first-day results file with the most tubes showing both viral targets."""
    import polars as pl

    from lab.instruments import parse_export
    from ingest.feeds import EVENT_TIME
    from ingest.discover import discover

    files = discover(sim)
    links: dict[str, list] = {name: [] for name in LINKS}
    next_morning = False
    for f in files:
        row = [f.kind, str(f.path), f.label]
        if f.kind not in EVENT_TIME or f.kind == "stock":  # stock counts: reference-sized, taken with it
            links["reference and register"].append(row)
            continue
        next_morning = next_morning or "resample" in f.label
        if next_morning:
            links["re-samples (next morning)"].append(row)
        else:
            links[{"scans": "collect (scans)", "manifests": "deliver (boxes, receipts)",
                   "receipts": "deliver (boxes, receipts)", "results": "test (results)"}[f.kind]].append(row)
    best, held = 0, None
    for row in links["test (results)"]:
        rec = parse_export(Path(row[1])).records
        viral = (rec.filter(pl.col("ct") < 37).group_by("sample").agg(pl.col("target").str.to_lowercase().unique())
                 .filter(pl.col("target").list.contains("orf1ab") & pl.col("target").list.contains("n")))
        if viral.height >= best and viral.height > 0:
            best, held = viral.height, row
    if held is not None:
        links["test (results)"].remove(held)
    return links, held


def bench_city(residents: int, root: Path, pg_dsn: str | None, keep: bool, inbox: Path | None = None,
               progress=lambda fig: None) -> dict:
    """One city; ``inbox``: a city this size simulated before (read only), else simulated here.
    ``progress(fig)`` after every step, so a run stopped half-way keeps what it measured."""
    work = root / f"city-{residents}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fig: dict = {"residents": residents}
    say = lambda msg: print(f"[{datetime.now():%H:%M:%S}] {residents:,}: {msg}", flush=True)  # noqa: E731
    if inbox is None:
        sim = work / "inbox"
        say("simulating")
        fig["simulate"] = run_command([str(Path(sys.executable).parent / "tubetrail"), "simulate", "--residents",
                                       str(residents), "--out", str(sim), "--format", "parquet"])
    else:
        sim = inbox
        measured = inbox.parent / "simulate.json"  # written by whoever simulated it, if measured
        fig["simulate"] = json.loads(measured.read_text()) if measured.exists() else {"wall_s": 0.0, "peak_gb": 0.0}
        fig["simulate"]["given"] = str(inbox)
    truth = json.loads((sim / "_truth.json").read_text())
    links, held = plan_links(sim)
    fig["inbox_files"] = sum(len(v) for v in links.values()) + (held is not None)
    fig["inbox_gb"] = round(sum(p.stat().st_size for p in sim.rglob("*") if p.is_file()) / 1024 ** 3, 2)
    base = {"warehouse": str(work / "warehouse.duckdb"), "truth": truth}
    fig["links"] = {}
    progress(fig)
    for name in LINKS:
        say(name)
        if name == "positive-pool latency":
            if held is None:
                continue
            fig["links"][name] = run_child("latency", {**base, "file": held}, work)
        elif name == "report":
            fig["links"][name] = run_child("report", {**base, "out": str(work / "report")}, work)
        else:
            fig["links"][name] = run_child("take", {**base, "files": links[name],
                                                    "open_round": name == "reference and register"}, work)
            if fig["links"][name].get("refused"):
                raise RuntimeError(f"{name}: {fig['links'][name]['refused']} file(s) refused")
        progress(fig)
    fig["end_to_end"] = {"wall_s": round(sum(v["wall_s"] for v in fig["links"].values()), 2),
                         "peak_gb": max(v["peak_gb"] for v in fig["links"].values())}
    say("tubetrail coverage and pool orders; facts for the baselines")
    facts = work / "facts"
    fig["tubetrail"] = run_child("logic", {**base, "facts": str(facts)}, work)
    progress(fig)
    run_floor(fig, sim, links, held, work, facts, say)
    progress(fig)
    say("last file → report: the round wave by wave, then its last wave and the nightly report")
    fig["last_file_to_report"] = run_waves(sim, truth, work)
    progress(fig)
    spec = {**base, "facts": str(facts), "pool_size": fig["tubetrail"]["pool_size"]}
    say("pandas baseline")
    try:
        fig["pandas"] = run_child("pandas", spec, work)
    except RuntimeError as exc:  # recorded, not hidden: e.g. out of memory at 25.7 M
        fig["pandas"] = {"failed": str(exc)}
        say(f"pandas baseline FAILED: {exc}")
    progress(fig)
    if pg_dsn:
        say("PostgreSQL baseline")
        fig["postgres"] = run_child("postgres", {**spec, "dsn": pg_dsn}, work)
        progress(fig)
    say("micro-batch of 50,000 scans")
    fig["micro_batch"] = run_child("microbatch", {**base, "out": str(work / "micro" / "scans" / "micro_batch.parquet"),
                                                  "scans": MICRO_BATCH, "batches": MICRO_BATCHES}, work)
    say(f"fixed cost a file: {FILE_COST_FILES} one-row files against one file of {FILE_COST_FILES} rows")
    fig["file_cost"] = run_child("file_cost", {**base, "out": str(work / "filecost"), "files": FILE_COST_FILES}, work)
    say(f"a register update of {REGISTER_UPDATE_ROWS} rows")
    fig["register_update"] = run_child("register_update", {**base, "out": str(work / "regupdate"),
                                                            "rows": REGISTER_UPDATE_ROWS}, work)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return fig


def run_floor(fig: dict, sim: Path, links: dict, held: list | None, work: Path, facts: Path, say) -> None:
    """The floor (``bench.floor``): each link in a child process on a DuckDB file of its own, its
    coverage asserted equal to tubetrail's, the ratios tubetrail ÷ floor per link and end to end."""
    from bench import floor

    files = floor.floor_files(links, held)
    base = {"floor_db": str(work / "floor.duckdb"), "truth": json.loads((sim / "_truth.json").read_text())}
    base["as_of"] = _as_of(base["truth"]).isoformat()
    fl: dict = {"links": {}}
    for name in floor.FLOOR_LINKS:
        say(f"floor: {name}")
        try:
            fl["links"][name] = run_child("floor", {**base, "link": name, "files": files[name],
                                                    "out": str(facts / "floor_coverage.parquet")}, work)
        except RuntimeError as exc:  # recorded, not hidden (e.g. out of memory); a different answer raises
            fig["floor"] = {"failed": f"{name}: {exc}", "links": fl["links"]}
            say(f"floor FAILED: {exc}")
            return
    fl["end_to_end"] = {"wall_s": round(sum(v["wall_s"] for v in fl["links"].values()), 2),
                        "peak_gb": max(v["peak_gb"] for v in fl["links"].values())}
    fl["compared"] = floor.compare(fl["links"]["coverage"], fig["tubetrail"], facts, facts / "floor_coverage.parquet")
    # the same row rules: rows accepted per link, the floor's against tubetrail's (recorded, shown when they differ)
    fl["rows_tubetrail"] = {name: sum(fig["links"][n].get("rows_accepted", fig["links"][n].get("rows", 0))
                                      for n in floor.COMPARED[name] if n in fig["links"])
                            for name in ("collect", "deliver", "test", "re-samples")}
    fl["ratio"] = floor.ratios(fig["links"], fl)
    fl["ratio"]["end to end"] = round(fig["end_to_end"]["wall_s"] / fl["end_to_end"]["wall_s"], 2)
    fig["floor"] = fl
    (work / "floor.duckdb").unlink(missing_ok=True)


def run_waves(sim: Path, truth: dict, work: Path) -> dict:
    """The round ingested wave by wave as the demo hands it over (``devtools.demo.waves``: the
    reference data and register, then one wave per hour of event time), on a warehouse of its
    own: every wave but the last, then the last wave and the nightly report in one child: the
    time from the last wave's files landing to the report written."""
    from kernel.config import Config
    from devtools.demo import waves

    planned = [(label, [[f.kind, str(f.path), f.label] for f in files]) for label, files in waves(sim, Config().city.timezone)]
    before = [f for _, files in planned[:-1] for f in files]
    base = {"warehouse": str(work / "waves" / "warehouse.duckdb"), "truth": truth}
    (work / "waves").mkdir(parents=True, exist_ok=True)
    earlier = run_child("take", {**base, "files": before, "open_round": True}, work)
    last = run_child("last_wave", {**base, "files": planned[-1][1], "out": str(work / "waves" / "report")}, work)
    shutil.rmtree(work / "waves", ignore_errors=True)
    return {"waves": len(planned), "last_wave": planned[-1][0], "earlier_waves_s": earlier["wall_s"],
            "earlier_files": earlier["files"], **last}


def report_parts(v: dict) -> list[tuple[str, float, float]]:
    """The report link's parts (``ReportFigures.timings``): (part, seconds, % of the nightly
    report = snapshot + write_report + district packs), for the parts issue 14 added beside the
    whole of the rest."""
    whole = v.get("snapshot_s", 0.0) + v.get("write_report_s", 0.0) + v.get("district_packs_s", 0.0)
    return [(part, seconds, 100 * seconds / whole) for part, seconds in v.get("parts_s", {}).items() if whole]


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}×" if a and b else "–"


def print_city(fig: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"City of {fig['residents']:,} residents ({fig['inbox_files']} files, {fig['inbox_gb']} GB)")
    for col in ("step", "time (s)", "in child (s)", "peak RSS (GB)", "note"):
        table.add_column(col, justify="left" if col in ("step", "note") else "right")
    table.add_row("simulate (not part of the pipeline)", f"{fig['simulate']['wall_s']:.1f}", "", f"{fig['simulate']['peak_gb']:.2f}", "")
    for name, v in fig["links"].items():
        inner = v.get("work_s") or v.get("total_s") or ((v.get("snapshot_s", 0) + v.get("write_report_s", 0)
                                                          + v.get("district_packs_s", 0)) or None)
        note = (f"{v['files']} files, {v['rows_accepted']:,} rows" if "rows_accepted" in v else
                f"take {v['take_s']:.2f} s + alert {v['alert_s']:.2f} s: {v['pools']} pools, {v['people']} people" if "pools" in v else
                f"snapshot {v['snapshot_s']:.1f} s, write_report {v['write_report_s']:.1f} s, "
                f"district packs {v.get('district_packs_s', 0):.1f} s")
        table.add_row(name, f"{v['wall_s']:.1f}", f"{inner:.2f}" if inner else "", f"{v['peak_gb']:.2f}", note)
        for part, seconds, share in report_parts(v):
            table.add_row(f"  of it: {part}", "", f"{seconds:.2f}", "", f"{share:.1f} % of the nightly report")
    e = fig["end_to_end"]
    table.add_row("[bold]end to end (inbox → report)[/bold]", f"{e['wall_s']:.1f}", "", f"{e['peak_gb']:.2f}", "max over the links")
    m = fig["micro_batch"]
    table.add_row("micro-batch: one file of 50,000 scans", f"{m['wall_s']:.1f}", f"{m['take_s']:.2f}", f"{m['peak_gb']:.2f}",
                  f"{m['accepted']:,} accepted; {micro_series(m)}")
    fc = fig.get("file_cost")
    if fc:
        table.add_row(f"fixed cost a file: {fc['files']} one-row files vs one file", f"{fc['wall_s']:.1f}",
                      f"{fc['many_s']:.2f} / {fc['one_s']:.2f}", f"{fc['peak_gb']:.2f}", f"{fc['per_file_ms']:.1f} ms a file")
    ru = fig.get("register_update")
    if ru:
        table.add_row(f"register update: {ru['rows']} rows ({ru['changed']} changed), warm process", f"{ru['wall_s']:.1f}",
                      f"{ru['take_s']:.2f}", f"{ru['peak_gb']:.2f}", f"{ru['accepted']:,} accepted")
    tt = fig["tubetrail"]
    tt_q = tt["coverage_s"] + tt["orders_s"]
    table.add_row("tubetrail: coverage per grid + pool orders", "", f"{tt_q:.2f}", f"{tt['peak_gb']:.2f}",
                  f"{tt['grids']:,} grids, {tt['pools']} pools, {tt['order_people']:,} people; snapshot {tt['snapshot_s']:.1f} s")
    p = fig.get("pandas", {})
    if "failed" in p:
        table.add_row("pandas baseline", "", "", "", p["failed"])
    elif p:
        pq = p["coverage_s"] + p["orders_s"]
        table.add_row("pandas: same logic", f"{p['wall_s']:.1f}", f"{pq:.2f}", f"{p['peak_gb']:.2f}",
                      f"load {p['load_s']:.1f} s; {ratio(pq, tt_q)} tubetrail's query time; equal")
    g = fig.get("postgres")
    if g:
        gq = g["coverage_s"] + g["orders_s"]
        table.add_row("PostgreSQL 15: same logic", f"{g['wall_s']:.1f}", f"{gq:.2f}", f"{g['peak_gb']:.2f} (client)",
                      f"COPY {g['load_total_s']:.1f} s; {ratio(gq, tt_q)} tubetrail's query time; equal")
    for row in floor_rows(fig):
        table.add_row(*row)
    Console(width=170).print(table)


def floor_rows(fig: dict) -> list[tuple[str, str, str, str, str]]:
    """The printout's rows for the floor (per link: time, in child, peak, tubetrail ÷ floor) and
    for "last file → report"."""
    rows = []
    fl = fig.get("floor")
    if fl and "failed" in fl:
        rows.append(("floor (plain DuckDB, bulk)", "", "", "", f"failed: {fl['failed']}"))
    elif fl:
        from bench.floor import COMPARED

        for name, v in fl["links"].items():
            rows.append((f"floor: {name}", f"{v['wall_s']:.1f}", f"{v['work_s']:.2f}", f"{v['peak_gb']:.2f}",
                         f"tubetrail ({' + '.join(COMPARED[name])}) ÷ floor: {ratio_text(fl['ratio'].get(name))}"))
        e, c = fl["end_to_end"], fl["compared"]
        rows.append(("[bold]floor end to end (inbox → coverage)[/bold]", f"{e['wall_s']:.1f}", "", f"{e['peak_gb']:.2f}",
                     f"tubetrail ÷ floor: {ratio_text(fl['ratio'].get('end to end'))}; {c['grids']:,} grids, "
                     f"{c['sampled']:,} sampled, {c['tubes']:,} tubes, {c['pools']} positive pools: equal"))
    w = fig.get("last_file_to_report")
    if w:
        rows.append(("last file → report (wave by wave)", f"{w['wall_s']:.1f}", f"{w['total_s']:.2f}", f"{w['peak_gb']:.2f}",
                     f"last wave {w['last_wave']} ({w['files']} files): take {w['take_s']:.1f} s + report "
                     f"{w['report_s']:.1f} s; {w['waves']} waves"))
    return rows


def ratio_text(r: float | None) -> str:
    """tubetrail ÷ floor with two decimals: the issue's goal is 1.5×, and 1.54× must not print as 1.5×."""
    return f"{r:.2f}×" if r else "–"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,5000000,25700000")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tubetrail-bench-city"))
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep each city's inbox, warehouse and facts")
    parser.add_argument("--inbox", type=Path, help="one size only: take this simulated inbox instead of simulating")
    parser.add_argument("--markdown", type=Path, help="print a run's figures.json as the tables of docs/benchmarks.md")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.child:
        spec = json.loads(args.child.read_text())
        result = CHILDREN[spec["task"]](spec)
        Path(spec["result"]).write_text(json.dumps(result, default=str))
        return
    from kernel.secrets import id_hash_key

    id_hash_key()  # fail fast without the key
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    figures: dict = {"started": datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
                     "loadavg_start": os.getloadavg(), "cities": []}

    def save() -> None:
        (args.workdir / "figures.json").write_text(json.dumps(figures, indent=1, default=str))

    start = time.perf_counter()

    if args.inbox and len(sizes) != 1:
        raise SystemExit("--inbox goes with one size")

    def run_all(dsn: str | None) -> None:
        for n in sizes:
            def progress(fig: dict) -> None:
                figures["partial"] = {**fig, "loadavg_now": os.getloadavg()}
                save()

            fig = bench_city(n, args.workdir, dsn, args.keep, args.inbox, progress)
            figures.pop("partial", None)
            fig["loadavg_after"] = os.getloadavg()
            figures["cities"].append(fig)
            save()
            print_city(fig)

    if args.skip_postgres:
        run_all(None)
    else:
        with postgres_cluster() as (dsn, options):
            figures["postgres_settings"] = options
            figures["machine"]["postgres"] = subprocess.run([str(postgres_bindir() / "postgres"), "--version"],
                                                            capture_output=True, text=True).stdout.strip()
            run_all(dsn)
    figures["loadavg_end"] = os.getloadavg()
    figures["total_s"] = round(time.perf_counter() - start, 1)
    save()
    print(f"figures: {args.workdir / 'figures.json'} (whole run {figures['total_s']:.0f} s, load average "
          f"{figures['loadavg_start']} at start, {figures['loadavg_end']} at end)")



def markdown(figures: dict) -> str:
    """The figures of a run as the tables of ``docs/benchmarks.md`` (``--markdown figures.json``)."""
    def s(x: float) -> str:
        return f"{x:,.1f} s" if x < 600 else f"{x / 60:,.1f} min"

    lines = ["| residents | end to end (inbox → report) | peak RSS | floor (inbox → coverage) | tubetrail ÷ floor "
             "| last file → report | 50,000-scan micro-batch | results file → pool orders "
             "| pandas ÷ tubetrail (queries) | PostgreSQL ÷ tubetrail (queries) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in figures["cities"]:
        tt = c["tubetrail"]["coverage_s"] + c["tubetrail"]["orders_s"]
        p, g = c.get("pandas", {}), c.get("postgres", {})
        lat = c["links"].get("positive-pool latency")
        fl, w = c.get("floor") or {}, c.get("last_file_to_report")
        lines.append("| {:,} | {} | {:.1f} GB | {} | {} | {} | {:.1f} s | {} | {} | {} |".format(
            c["residents"], s(c["end_to_end"]["wall_s"]), c["end_to_end"]["peak_gb"],
            "failed" if "failed" in fl else f"{s(fl['end_to_end']['wall_s'])} ({fl['end_to_end']['peak_gb']:.1f} GB)" if fl else "–",
            ratio_text(fl.get("ratio", {}).get("end to end")), s(w["wall_s"]) if w else "–", c["micro_batch"]["take_s"],
            f"{lat['total_s']:.1f} s ({lat['pools']:,} pools, {lat['people']:,} people)" if lat else "–",
            ("out of memory" if "failed" in p else f"{(p['coverage_s'] + p['orders_s']) / tt:.1f}×") if p else "–",
            f"{(g['coverage_s'] + g['orders_s']) / tt:.1f}×" if g else "–"))
    partial = [{**figures["partial"], "loadavg_after": figures["partial"]["loadavg_now"]}] if figures.get("partial") else []
    for c in figures["cities"] + partial:
        lines += ["", f"### {c['residents']:,} residents" + (" (stopped before the end)" if c in partial else ""), "",
                  f"Inbox: {c['inbox_files']:,} files, {c['inbox_gb']} GB (simulated in {s(c['simulate']['wall_s'])}, "
                  f"peak {c['simulate']['peak_gb']:.1f} GB). Load average "
                  f"{'at its last finished step' if c in partial else 'after this city'}: "
                  f"{', '.join(f'{x:.1f}' for x in c['loadavg_after'])}.", "",
                  "| link | files | rows accepted | time | of it, the work | peak RSS |", "|---|---:|---:|---:|---:|---:|"]
        for name, v in c["links"].items():
            if "rows_accepted" in v:
                lines.append(f"| {name} | {v['files']} | {v['rows_accepted']:,} | {s(v['wall_s'])} | {s(v['work_s']) if 'work_s' in v else '–'} "
                             f"| {v['peak_gb']:.2f} GB |")
            elif "pools" in v:
                lines.append(f"| {name}: one results file taken ({v['rows']:,} readings), then the alert query "
                             f"({v['pools']} positive pools, {v['people']:,} people to re-sample) | 1 | {v['rows']:,} "
                             f"| {s(v['wall_s'])} | {v['total_s']:.2f} s (take {v['take_s']:.2f} s + alert "
                             f"{v['alert_s']:.2f} s) | {v['peak_gb']:.2f} GB |")
            else:
                packs = v.get("district_packs_s", 0.0)
                lines.append(f"| {name}: snapshot {s(v['snapshot_s'])}, `write_report` {s(v['write_report_s'])} "
                             f"({v['files']} files), district packs {s(packs)} ({v.get('districts', '–')} districts, "
                             f"{v['worklists']:,} worklists) | | | {s(v['wall_s'])} "
                             f"| {s(v['snapshot_s'] + v['write_report_s'] + packs)} | {v['peak_gb']:.2f} GB |")
                lines += [f"| &nbsp;&nbsp;of it: {part} ({share:.1f} % of the nightly report) | | | | {s(seconds)} | |"
                          for part, seconds, share in report_parts(v)]
        if c in partial:
            lines += ["", "Not run: " + ", ".join(n for n in LINKS if n not in c["links"]) + ", end to end, the baselines, "
                      "the micro-batch."]
            continue
        e, m = c["end_to_end"], c["micro_batch"]
        lines.append(f"| **end to end** (the links above) | | | **{s(e['wall_s'])}** | | **{e['peak_gb']:.2f} GB** |")
        lines.append(f"| micro-batch: one more file of {m['scans']:,} scans ({micro_series(m)}) | 1 | {m['accepted']:,} "
                     f"| {s(m['wall_s'])} | {m['take_s']:.2f} s | {m['peak_gb']:.2f} GB |")
        fc = c.get("file_cost")
        if fc:
            lines.append(f"| fixed cost a file: {fc['files']} one-row manifest files ({fc['many_s']:.2f} s) against one file "
                         f"of {fc['rows']} rows ({fc['one_s']:.2f} s) | {fc['files'] + 1} | {2 * fc['rows']:,} | {s(fc['wall_s'])} "
                         f"| **{fc['per_file_ms']:.1f} ms a file** | {fc['peak_gb']:.2f} GB |")
        ru = c.get("register_update")
        if ru:
            lines.append(f"| register update: {ru['rows']} rows ({ru['changed']} changed), taken in a warm process | 1 "
                         f"| {ru['accepted']:,} | {s(ru['wall_s'])} | **{ru['take_s']:.2f} s** | {ru['peak_gb']:.2f} GB |")
        tt = c["tubetrail"]
        tq = tt["coverage_s"] + tt["orders_s"]
        lines += ["", f"Coverage per grid ({tt['grids']:,} grids, {tt['registered']:,} registered, {tt['sampled']:,} sampled) "
                  f"and pool orders ({tt['pools']:,} positive pools → {tt['order_people']:,} people):", "",
                  "| engine | load | coverage per grid | pool orders | both queries | ÷ tubetrail | peak RSS |",
                  "|---|---:|---:|---:|---:|---:|---:|",
                  f"| tubetrail (DuckDB views over the warehouse) | snapshot {s(tt['snapshot_s'])} | {tt['coverage_s']:.2f} s "
                  f"| {tt['orders_s']:.2f} s | {tq:.2f} s | 1.0× | {tt['peak_gb']:.2f} GB |"]
        p = c.get("pandas")
        if p and "failed" in p:
            lines.append(f"| pandas | | | | | | failed: {p['failed']} |")
        elif p:
            pq = p["coverage_s"] + p["orders_s"]
            lines.append(f"| pandas (vectorised) | Parquet {s(p['load_s'])} | {p['coverage_s']:.2f} s | {p['orders_s']:.2f} s "
                         f"| {pq:.2f} s | {pq / tq:.1f}× | {p['peak_gb']:.2f} GB |")
        g = c.get("postgres")
        if g:
            gq = g["coverage_s"] + g["orders_s"]
            lines.append(f"| PostgreSQL 15 | COPY + ANALYZE {s(g['load_total_s'])} | {g['coverage_s']:.2f} s "
                         f"| {g['orders_s']:.2f} s | {gq:.2f} s | {gq / tq:.1f}× | {g['peak_gb']:.2f} GB (client) |")
        lines += floor_markdown(c, s)
    return "\n".join(lines)


def floor_markdown(c: dict, s) -> list[str]:
    """A city's floor table (per link: the floor, tubetrail's same links, tubetrail ÷ floor) and
    its "last file → report" line, for ``markdown``."""
    fl, w = c.get("floor"), c.get("last_file_to_report")
    lines: list[str] = []
    if fl and "failed" in fl:
        lines += ["", f"The floor (plain DuckDB, bulk): failed: {fl['failed']}"]
    elif fl:
        from bench.floor import COMPARED

        k = fl["compared"]
        lines += ["", f"The floor (`bench/floor.py`: the same inbox loaded in bulk with plain DuckDB SQL, same row rules, "
                  f"round rule and re-samples, no ledger): coverage per grid equal to tubetrail's ({k['grids']:,} grids, "
                  f"{k['sampled']:,} people sampled, {k['tubes']:,} tubes, {k['pools']:,} positive pools):", "",
                  "| floor link | rows accepted | time | of it, the work | peak RSS | tubetrail's links | tubetrail | "
                  "tubetrail ÷ floor |", "|---|---:|---:|---:|---:|---|---:|---:|"]
        for name, v in fl["links"].items():
            theirs = [n for n in COMPARED[name] if n in c["links"]]
            tt = sum(c["links"][n]["wall_s"] for n in theirs)
            rows = f"{v['rows_accepted']:,}" if "rows_accepted" in v else f"{v.get('people', v.get('grids', 0)):,}"
            theirs_rows = fl.get("rows_tubetrail", {}).get(name)
            if theirs_rows is not None and theirs_rows != v.get("rows_accepted"):
                rows += f" (tubetrail {theirs_rows:,})"
            lines.append(f"| {name} | {rows} | {s(v['wall_s'])} | {s(v['work_s'])} | {v['peak_gb']:.2f} GB "
                         f"| {' + '.join(theirs)} | {s(tt)} | {ratio_text(fl['ratio'].get(name))} |")
        e = fl["end_to_end"]
        lines.append(f"| **end to end** (inbox → coverage) | | **{s(e['wall_s'])}** | | **{e['peak_gb']:.2f} GB** "
                     f"| inbox → report | {s(c['end_to_end']['wall_s'])} | **{ratio_text(fl['ratio'].get('end to end'))}** |")
    if w:
        lines += ["", f"Last file → report: the round taken wave by wave as the demo hands it over ({w['waves']} waves; "
                  f"the waves before the last {s(w['earlier_waves_s'])}), then the last wave ({w['last_wave']}, "
                  f"{w['files']} file{'' if w['files'] == 1 else 's'}, {w['rows_accepted']:,} rows) taken in {s(w['take_s'])} and the nightly report "
                  f"written in {s(w['report_s'])}: **{s(w['wall_s'])}** from its files landing to the report "
                  f"({w['total_s']:.1f} s of work, peak {w['peak_gb']:.2f} GB)."]
    return lines


if __name__ == "__main__":
    main()
