"""Benchmark: the test link at Shanghai scale. Results files for 2.43 M pooled tubes (10 people
each, 24.3 M people) are taken through the real results feed (parse, check, one transaction per
file), then called and expanded to people set-based: plate QC, calls with re-runs, re-sampling
orders and person status. The naive baseline in the same run calls the same readings tube by
tube in a Python loop.

The round's facts before the results (register, scans, boxes, receipts) are bulk-generated
straight into the warehouse tables here: their ingest is measured by the simulate and register
benchmarks, and this one is about the results.

    python -m bench.calls --tubes 2430000 --workdir /tmp/bench-calls
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from ingest.take import plan_batches, take_batch
from kernel.config import Config
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_configured
from ingest.discover import discover
from warehouse.writer import open_round

ROUND_START = datetime(2022, 4, 4, 6, tzinfo=timezone.utc)
ROUND_END = datetime(2022, 4, 4, 22, tzinfo=timezone.utc)
POOL = 10
TUBES_PER_PLATE = 94


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def build_round(con, tubes: int) -> None:
    """Register, scans, manifests and receipts of ``tubes`` pooled tubes, in bulk SQL."""
    people = tubes * POOL
    con.execute(f"""
        INSERT INTO register
        SELECT person_key('RIC', id_number), 'RIC', id_number, '张' || (i % 1000), '+86138' || lpad((i % 100000000)::VARCHAR, 8, '0'),
               'D' || (i % 16), 'S' || (i % 200), 'C' || (i % 5000), 'G' || (i % 50000), 'road ' || i, 'H' || (i // 3),
               i % 97 = 0, NULL, 'bench', i, now()
        FROM (SELECT i, lpad(i::VARCHAR, 18, '0') AS id_number FROM range({people}) t(i))
    """)
    con.execute(f"""
        INSERT INTO scans
        SELECT 'B1', TIMESTAMPTZ '{ROUND_START.isoformat()}' + to_seconds((i // {POOL}) % 50000), 'S' || ((i // {POOL}) % 9000),
               'C1', 'T' || lpad((i // {POOL})::VARCHAR, 9, '0'), 'add', person_key('RIC', lpad(i::VARCHAR, 18, '0')),
               'RIC', lpad(i::VARCHAR, 18, '0'), NULL, NULL, {POOL}, FALSE, 'bench', i
        FROM range({people}) t(i)
        UNION ALL
        SELECT 'B1', TIMESTAMPTZ '{ROUND_START.isoformat()}' + to_seconds(t % 50000 + 60), 'S' || (t % 9000), 'C1',
               'T' || lpad(t::VARCHAR, 9, '0'), 'seal', NULL, NULL, NULL, NULL, NULL, NULL, FALSE, 'bench', t
        FROM range({tubes}) s(t)
    """)
    con.execute(f"""
        INSERT INTO manifests
        SELECT 'BOX' || (t // 200), 'T' || lpad(t::VARCHAR, 9, '0'), 'S' || (t % 9000),
               TIMESTAMPTZ '{ROUND_START.isoformat()}' + to_seconds(t % 50000 + 600), 'K1', NULL, NULL, 'bench', t
        FROM range({tubes}) s(t)
    """)
    con.execute(f"""
        INSERT INTO receipts
        SELECT 'L' || (t % 3), 'BOX' || (t // 200), 'T' || lpad(t::VARCHAR, 9, '0'),
               TIMESTAMPTZ '{ROUND_START.isoformat()}' + to_seconds(t % 50000 + 3600), 'ok', 'bench', t
        FROM range({tubes}) s(t)
    """)
    con.execute("UPDATE rounds SET round_id = 'B1' WHERE round_id = 'B1'")


def write_results(con, tubes: int, out: Path, files: int) -> int:
    """Generic CSV results: 94 tubes and two controls per plate, ORF1ab, N and IC per well. About
    0.05 % of tubes positive, 0.05 % grey, 0.03 % single target, 0.05 % invalid, and one plate in
    200 failing its negative control; those are re-run on plates of their own."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE bench_wells AS
        SELECT t, 'T' || lpad(t::VARCHAR, 9, '0') AS sample, t // {TUBES_PER_PLATE} AS plate,
               CASE WHEN hash(t) % 2000 = 0 THEN 'positive' WHEN hash(t) % 2000 = 1 THEN 'grey'
                    WHEN hash(t) % 3333 = 2 THEN 'single' WHEN hash(t) % 2000 = 3 THEN 'invalid' ELSE 'negative' END AS outcome
        FROM range({tubes}) s(t)
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE bench_reruns AS
        SELECT row_number() OVER (ORDER BY t) - 1 AS slot, sample, CASE outcome WHEN 'grey' THEN 'negative' ELSE outcome END AS outcome
        FROM bench_wells WHERE outcome IN ('grey', 'single', 'invalid') OR plate % 200 = 7
    """)
    rows = f"""
        WITH w AS (
            SELECT 'P' || plate AS plate_id, (plate % 3) AS lab, sample, outcome, t % {TUBES_PER_PLATE} AS slot,
                   TIMESTAMPTZ '{ROUND_START.isoformat()}' + to_seconds(plate % 50000 + 10000) AS finished, plate % 200 = 7 AS failed
            FROM bench_wells
            UNION ALL
            SELECT 'RR' || (slot // {TUBES_PER_PLATE}), (slot // {TUBES_PER_PLATE}) % 3, sample, outcome, slot % {TUBES_PER_PLATE},
                   TIMESTAMPTZ '{ROUND_START.isoformat()}' + to_seconds(70000), FALSE
            FROM bench_reruns
        ), plates AS (SELECT DISTINCT plate_id, lab, finished, failed FROM w)
        SELECT 'L' || lab AS lab_id, plate_id AS run_id, plate_id, chr((65 + slot // 12)::INTEGER) || (slot % 12 + 1) AS well, sample, target,
               CASE WHEN target = 'ORF1ab' AND outcome = 'positive' THEN '25.1'
                    WHEN target = 'ORF1ab' AND outcome = 'grey' THEN '38.2'
                    WHEN target = 'N' AND outcome IN ('positive', 'single') THEN '27.3'
                    WHEN target = 'IC' AND outcome <> 'invalid' THEN '29.9' ELSE 'Undetermined' END AS ct,
               strftime(finished, '%Y-%m-%dT%H:%M:%S+00:00') AS finished_at, lab AS part
        FROM w, (VALUES ('ORF1ab'), ('N'), ('IC')) x(target)
        UNION ALL
        SELECT 'L' || lab, plate_id, plate_id, CASE c WHEN 'PC' THEN 'H11' ELSE 'H12' END, c, target,
               CASE WHEN c = 'PC' THEN '30.0' WHEN failed AND target = 'N' THEN '33.0' ELSE '' END,
               strftime(finished, '%Y-%m-%dT%H:%M:%S+00:00'), lab
        FROM plates, (VALUES ('PC'), ('NC')) y(c), (VALUES ('ORF1ab'), ('N'), ('IC')) x(target)
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE bench_results AS {rows}")
    con.execute(f"UPDATE bench_results SET part = hash(run_id) % {files}")
    out.mkdir(parents=True, exist_ok=True)
    for part in range(files):
        lab_dir = out / "results"
        lab_dir.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY (SELECT * EXCLUDE (part) FROM bench_results WHERE part = {part}) "
                    f"TO '{lab_dir / f'results_{part:03d}.csv'}' (HEADER, DELIMITER ',')")
    n = con.sql("SELECT count(*) FROM bench_results").fetchall()[0][0]
    con.execute("DROP TABLE bench_results")
    return n


def naive_calls(con) -> dict[str, str]:
    """The baseline: every reading into Python, plate QC and calls tube by tube in loops."""
    rows = con.sql("SELECT run_id, sample, target, ct, finished_at FROM results").fetchall()
    plates: dict[str, dict] = defaultdict(lambda: {"pc": set(), "nc": set()})
    tubes: dict[str, dict[str, dict[str, float | None]]] = defaultdict(lambda: defaultdict(dict))
    finished: dict[str, datetime] = {}
    for run, sample, target, ct, at in rows:
        finished[run] = at
        if sample == "PC" and ct is not None and ct < 37 and target in ("ORF1ab", "N"):
            plates[run]["pc"].add(target)
        elif sample == "NC" and ct is not None and ct < 40 and target in ("ORF1ab", "N"):
            plates[run]["nc"].add(target)
        elif sample not in ("PC", "NC"):
            tubes[sample][run][target] = ct
    calls: dict[str, str] = {}
    for sample, runs in tubes.items():
        valid = sorted((finished[r], r) for r in runs if len(plates[r]["pc"]) == 2 and not plates[r]["nc"])
        decided = "rerun"
        for attempt, (_, run) in enumerate(valid[:2]):
            cts = runs[run]
            cut = 37 if attempt == 0 else 40
            ic = cts.get("IC")
            orf, n = cts.get("ORF1ab"), cts.get("N")
            if ic is None or ic >= 40:
                call = "invalid"
            elif orf is not None and orf < cut and n is not None and n < cut:
                call = "positive"
            elif attempt == 0 and any(x is not None and 37 <= x < 40 for x in (orf, n)):
                call = "grey"
            elif (orf is not None and orf < cut) or (n is not None and n < cut):
                call = "single_target"
            else:
                call = "negative"
            if attempt == 0 and call in ("positive", "negative"):
                decided = call
                break
            if attempt == 1:
                decided = call
        calls[sample] = decided
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tubes", type=int, default=2_430_000)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tubetrail-bench-calls"))
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    cfg = Config().with_warehouse(args.workdir / "bench.duckdb")
    key = id_hash_key()
    figures: dict[str, object] = {"tubes": args.tubes, "people": args.tubes * POOL}

    def timed(name: str, fn):
        start = time.perf_counter()
        value = fn()
        figures[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {figures[name]} s (peak RSS so far {peak_gb():.1f} GB)", flush=True)
        return value

    with open_configured(cfg.warehouse, key) as con:
        open_round(con, round_id="B1", starts_at=ROUND_START, ends_at=ROUND_END, districts=None, pool_size=POOL, run_id=None)
        timed("setup: register, scans, boxes, receipts (bulk SQL)", lambda: build_round(con, args.tubes))
        figures["result rows"] = timed("setup: write results CSV files",
                                       lambda: write_results(con, args.tubes, args.workdir / "inbox", args.files))
    files = discover(args.workdir / "inbox")
    outcomes = timed("results ingest (parse, check, write; one transaction per batch, as the flow takes them)",
                     lambda: [o for batch in plan_batches(files, cfg) for o in take_batch(batch, cfg)])
    assert all(o.status == "accepted" and o.rows_quarantined == 0 for o in outcomes), outcomes
    as_of = datetime(2022, 4, 6, tzinfo=timezone.utc)
    with open_configured(cfg.warehouse, key) as con:
        define_views(con, cfg)  # as the ingest flow's alert task does: no snapshot
        calls = timed("calls: plate QC + tube calls with re-runs (views, no snapshot)",
                      lambda: dict(con.execute("SELECT call, count(*) FROM tube_calls(?) GROUP BY 1", [as_of]).fetchall()))
        from reporting.alerts import positive_pools
        last = outcomes[-1].content_hash
        alerts = timed("positive-pool alerts of one results file (as the flow does after each file)",
                       lambda: positive_pools(con, cfg, [last], as_of))
    with open_configured(cfg.warehouse, key) as con:
        timed("snapshot of the base views for a read session", lambda: define_views(con, cfg, snapshot=True))
        orders = timed("pools to people: every re-sampling order with identities (materialised)",
                       lambda: con.execute("CREATE TEMP TABLE bench_orders AS SELECT * FROM resample_orders(?)", [as_of])
                       and dict(con.sql("SELECT reason, count(*) FROM bench_orders GROUP BY 1").fetchall()))
        status = timed(f"person status ({args.tubes * POOL:,} people, materialised)",
                       lambda: con.execute("CREATE TEMP TABLE bench_status AS SELECT * FROM person_status('B1', ?)", [as_of])
                       and dict(con.sql("SELECT status, count(*) FROM bench_status GROUP BY 1").fetchall()))
        if not args.skip_naive:
            naive = timed("naive baseline: the same calls in a Python loop", lambda: naive_calls(con))
            set_based = dict(con.execute("SELECT tube_barcode, call FROM tube_calls(?)", [as_of]).fetchall())
            assert naive == set_based, "naive and set-based calls differ"
    figures.update(calls=calls, orders=orders, status=status, alerts_in_one_file=len(alerts),
                   peak_rss_gb=round(peak_gb(), 1))
    print(json.dumps(figures, indent=1, default=str))
    (args.workdir / "figures.json").write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
