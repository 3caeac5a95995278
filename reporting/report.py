"""The report of a round (DESIGN §7): the files a command centre, grid workers and CDC read.

``write_report(con, cfg, round_id, as_of, out)`` writes, set-based from the derived views:

* ``coverage.parquet`` (grids and rollups), ``person_status.parquet``,
  ``resample_orders.parquet``/``.csv``, ``untested.parquet``/``.csv``, ``anomalies.parquet``,
  ``tat.parquet``: exactly the columns of DESIGN §7;
* ``key_groups_overdue.parquet``/``.csv``: key-group members overdue on their test cycle;
* ``daily.parquet`` (the daily and zero report, 日报告、零报告: per day, district and lab, silent
  units marked) and ``lab_load.parquet`` (per lab and day: received, tested, backlog, capacity,
  utilisation, TAT breaches): ``reporting.daily``;
* ``door_to_door.parquet``: the untested whom ``sampling_route`` sends no site, with the reason:
  the input of the door-to-door worklists;
* ``district_orders.parquet``: the orders with their person's district (for a visitor outside
  the register, the district of the site that sampled them) and ``fulfilled``, by district: the
  input of the district packs;
* ``stock.parquet`` (``reporting.stock``: per holder and item, and the city's total, last count,
  used since, in hand, need per round, days of whole-population testing in hand, under the
  minimum) and ``pool_advice.parquet`` (``sampling.pool_advice``: Dorfman, per district);
* ``report.xlsx`` (``reporting.workbook``): the aggregate tables for the command's Excel
  users, one sheet per table of :func:`workbook_sheets`;
* ``report.html`` (``reporting.html``): aggregate and masked only; it links ``report.xlsx``.

The district packs (``districts/<district>/``: untested, orders, the door-to-door worklists per
grid) are cut from these files by ``reporting.districts``, one district at a time (the flow fans
them out). The orders, untested list, person status and packs hold personal data: they are for
authorised staff. Everything returned for artifacts is aggregate.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from reporting.coverage import define_coverage_views, worst_grids
from reporting.figures import ReportFigures
from reporting.daily import (DAILY_COLUMNS, LAB_LOAD_COLUMNS, ROUND_TAIL_DAYS, daily_frame, lab_load_frame,
                             materialise_calls)
from reporting.keygroups import define_key_group_views
from reporting.people_csv import city_times, write_people_csv, write_people_csv_batches
from reporting.tat import LINKS, define_tat_views
from reporting.workbook import WORKBOOK, write_workbook
from kernel.config import Config

COVERAGE_COLUMNS = ("round_id", "district", "subdistrict", "community", "grid", "registered", "sampled", "resulted",
                    "untested", "coverage", "outside_register")
PERSON_STATUS_COLUMNS = ("round_id", "id_type", "id_number", "status", "tube_barcode")
ORDER_COLUMNS = ("round_id", "id_type", "id_number", "name", "phone", "address", "grid", "reason", "source_tube",
                 "priority", "due_by", "home_visit")
UNTESTED_COLUMNS = ("round_id", "id_type", "id_number", "name", "phone", "address", "district", "subdistrict",
                    "community", "grid", "mobility_limited")
ANOMALY_COLUMNS = ("kind", "tube_barcode", "box_id", "detail", "detected_at")
TAT_COLUMNS = ("tube_barcode", "collected_at", "sealed_at", "departed_at", "received_at", "called_at", "published_at",
               *LINKS, "total_hours")
KEY_GROUP_COLUMNS = ("id_type", "id_number", "name", "phone", "district", "subdistrict", "community", "grid",
                     "key_group", "cycle_days", "last_sampled_at", "due_by", "compliance")
#: the report file the district packs read the untested door-to-door people from
DOOR_TO_DOOR = "door_to_door.parquet"
WORKLIST_COLUMNS = ("task", "grid", "name", "id_type", "id_number", "phone", "address", "reason", "priority",
                    "due_by", "source_tube")
#: report.xlsx: the coverage sheets' columns, and how many of the worst grids its sheet lists
DISTRICT_SHEET_COLUMNS = ("round_id", "level", "district", "registered", "sampled", "resulted", "untested", "coverage",
                          "outside_register")
GRID_SHEET_COLUMNS = ("round_id", "district", "subdistrict", "community", "grid", "registered", "sampled", "resulted",
                      "untested", "coverage")
WORST_GRIDS_SHEET = 50


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> pl.DataFrame:
    return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())


#: the untested list, materialised once per report (``untested.parquet``/``.csv``, ``door_to_door.parquet``)
REPORT_UNTESTED = "report_untested"
#: the report's grids ranked by district and grid (the order of its person-level files)
REPORT_GRID_ORDER = "report_grid_order"
#: rows per chunk of a person-level CSV streamed from DuckDB (a chunk at a time in Python)
CSV_CHUNK_ROWS = 100_000


def report_frames(con: duckdb.DuckDBPyConnection, round_id: str, as_of: datetime) -> dict[str, pl.DataFrame]:
    """The report's tables that Python holds (aggregates, and lists bounded by the round's
    orders, anomalies and tubes), after materialising the whole-city ones it streams:
    ``report_orders`` (``resample_orders``), ``report_status`` (``person_status`` over them),
    :data:`REPORT_UNTESTED` and ``report_key_groups`` (``key_group_compliance``). Needs
    ``define_views(con, cfg, snapshot=True)`` for a city (and, for one derivation of the calls,
    ``lab.calling.pin_tube_calls``)."""
    p = {"rid": round_id, "as_of": as_of}
    # the round's orders once: the person status reads them (``person_status_given``), as do the
    # orders file, the daily report and lab load
    con.execute(
        "CREATE OR REPLACE TEMP TABLE report_orders AS SELECT * FROM resample_orders($as_of) WHERE round_id = $rid", p)
    con.execute("CREATE OR REPLACE TEMP TABLE report_status AS "
                "SELECT * FROM person_status_given($rid, $as_of, 'report_orders')", p)
    # the report's order of people: by district, grid and ID number. The grids are ranked once
    # (a few thousand rows), so a whole-city sort compares an integer and the ID number, not
    # three strings (the same order; at 5 M residents half the sort's time; the register holds no
    # NULL district or grid, so the join keeps every person)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {REPORT_GRID_ORDER} AS
        SELECT district, grid, row_number() OVER (ORDER BY district, grid) AS grid_ord
        FROM (SELECT DISTINCT district, grid FROM report_status)""")
    # the untested with their door-to-door reason, in the report's order (``ord``: one order for
    # the three files cut from it)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {REPORT_UNTESTED} AS
        SELECT st.round_id, st.id_type, st.id_number, reg.name, reg.phone, reg.address, st.district, st.subdistrict,
               st.community, st.grid, reg.mobility_limited, rt.door_to_door_reason,
               row_number() OVER (ORDER BY g.grid_ord, st.id_number) AS ord
        FROM report_status st JOIN {REPORT_GRID_ORDER} g USING (district, grid) JOIN register reg USING (person_key)
        JOIN sampling_route($as_of) rt USING (person_key)
        WHERE st.status = 'untested'""", {"as_of": as_of})
    con.execute("CREATE OR REPLACE TEMP TABLE report_key_groups AS SELECT * FROM key_group_compliance($as_of)",
                {"as_of": as_of})
    frames = {
        "coverage": _frame(con, "SELECT * FROM coverage($rid, $as_of) ORDER BY level = 'city', district, subdistrict, "
                                "community, grid NULLS LAST", p),
        "resample_orders": _frame(con, """
            WITH scanned AS (
                SELECT person_key, arg_min(name, scanned_at) AS name, arg_min(phone, scanned_at) AS phone FROM scans
                WHERE person_key IN (SELECT person_key FROM report_orders) AND event = 'add' GROUP BY person_key
            )
            -- a person outside the register (a visitor) has no district of their own: their order
            -- goes to the district of the site that sampled them, so it has an owner
            SELECT o.round_id, o.id_type, o.id_number, coalesce(reg.name, s.name) AS name,
                   coalesce(reg.phone, s.phone) AS phone, reg.address, coalesce(reg.district, site.district) AS district,
                   reg.grid, o.reason, o.source_tube, o.priority, o.due_by, o.home_visit, o.fulfilled
            FROM report_orders o LEFT JOIN register reg USING (person_key) LEFT JOIN scanned s USING (person_key)
            LEFT JOIN tubes t ON t.tube_barcode = o.source_tube AND t.round_id = o.round_id
            LEFT JOIN sites site ON site.site_id = t.site_id
            ORDER BY o.priority = 'normal', o.due_by, reg.grid, o.id_number, o.source_tube""", {}),
        "anomalies": _frame(con, """
            SELECT kind, tube_barcode, box_id, detail, detected_at FROM (
                SELECT kind, round_id, tube_barcode, box_id, detail, detected_at FROM tube_anomalies
                UNION ALL SELECT * FROM custody_anomalies($as_of)
                UNION ALL SELECT * FROM lab_anomalies($as_of))
            WHERE round_id = $rid OR round_id IS NULL ORDER BY kind, detected_at, tube_barcode, box_id, detail""", p),
        "tat": _frame(con, "SELECT * FROM tube_tat($rid, $as_of) ORDER BY collected_at, tube_barcode", p),
        "key_groups_overdue": _frame(con, "SELECT * FROM report_key_groups WHERE compliance <> 'in cycle' "
                                          "ORDER BY compliance, key_group, grid, id_number", {}),
    }
    return frames


def copy_parquet(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """Stream a query's rows into a Parquet file with DuckDB's ``COPY`` (zstd, as polars
    writes): a person-level file never passes through Python."""
    target = "'" + str(path).replace("'", "''") + "'"
    con.execute(f"COPY ({query}) TO {target} (FORMAT parquet, COMPRESSION zstd)")


def copy_people_csv(con: duckdb.DuckDBPyConnection, query: str, path: Path, timezone: str) -> int:
    """A person-level CSV streamed from DuckDB in chunks of :data:`CSV_CHUNK_ROWS` through the
    people-CSV rules (``reporting.people_csv``: BOM, formula cells neutralised, city times):
    the same bytes as the whole frame written at once. Returns the rows written. The reader is
    closed whatever happens: a write that fails (a full disk) leaves the connection usable and
    its own error the one raised, not DuckDB's "open result" on the next statement."""
    reader = con.sql(query).to_arrow_reader(CSV_CHUNK_ROWS)
    try:
        empty = city_times(pl.from_arrow(reader.schema.empty_table()), timezone)
        return write_people_csv_batches((city_times(pl.from_arrow(batch), timezone) for batch in reader), path, empty)
    finally:
        reader.close()


def write_report(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime, out: Path) -> ReportFigures:
    """Write every report file of a round to ``out`` (replacing a previous report there, whose
    district packs are removed: ``reporting.districts`` writes them from these files).

    Issue 15, bounded memory: ``tube_calls(as_of)`` is derived once for the whole report
    (``lab.calling.pin_tube_calls``); the whole-city lists (person status, untested, door to
    door) are streamed by DuckDB (``COPY`` to Parquet, chunked CSV), never a frame in Python."""
    from lab.calling import pin_tube_calls, unpin_tube_calls

    define_coverage_views(con)
    define_tat_views(con, cfg.tat)
    define_key_group_views(con, cfg.key_groups)
    if not con.execute("SELECT 1 FROM rounds WHERE round_id = ?", [round_id]).fetchall():
        raise ValueError(f"round {round_id} is not open in this warehouse")
    figures = ReportFigures(round_id, as_of)
    clock = _PartClock(figures.timings)
    # every file of the report is written in an explicit order, so DuckDB need not keep rows in
    # insertion order inside its plans: that buffering took the 25.7 M report of a warehouse
    # built wave by wave over its memory limit (``person_status``: out of memory at 3.5 GB and at
    # 4.5 GB; within 3.5 GB without it, all 13,335 files byte for byte the same as at 8 GB with it;
    # docs/benchmarks.md, 2026-12-01). The session's setting is put back afterwards.
    (keep_order,) = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0]
    con.execute("SET preserve_insertion_order = false")
    try:
        pin_tube_calls(con, as_of)
        clock.lap("calls (once for the whole report)")
        try:
            _write_report(con, cfg, round_id, as_of, out, figures, clock)
        finally:
            unpin_tube_calls(con)
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if keep_order else 'false'}")
    return figures


def _write_report(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime, out: Path,
                  figures: ReportFigures, clock: _PartClock) -> None:
    from reporting.html import render_report

    # every time people read is city time with its offset (the warehouse keeps UTC)
    frames = {name: city_times(frame, cfg.city.timezone) for name, frame in report_frames(con, round_id, as_of).items()}
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "districts", ignore_errors=True)

    def put(name: str, frame: pl.DataFrame, csv: bool = False) -> None:
        frame.write_parquet(out / f"{name}.parquet")
        figures.files.append(f"{name}.parquet")
        if csv:
            write_people_csv(frame, out / f"{name}.csv")
            figures.files.append(f"{name}.csv")

    coverage = frames["coverage"]
    put("coverage", coverage.filter(pl.col("level") == "grid").select(COVERAGE_COLUMNS))
    coverage.write_parquet(out / "coverage_rollup.parquet")
    figures.files.append("coverage_rollup.parquet")
    # the whole city's people: streamed by DuckDB (no times in these files: nothing to convert)
    copy_parquet(con, f"SELECT {', '.join(PERSON_STATUS_COLUMNS)} FROM report_status JOIN {REPORT_GRID_ORDER} "
                      "USING (district, grid) ORDER BY grid_ord, id_number", out / "person_status.parquet")
    figures.files.append("person_status.parquet")
    put("resample_orders", frames["resample_orders"].select(ORDER_COLUMNS), csv=True)
    frames["resample_orders"].select(*ORDER_COLUMNS, "fulfilled", "district").sort(
        "district", nulls_last=True, maintain_order=True).write_parquet(out / "district_orders.parquet")
    figures.files.append("district_orders.parquet")
    untested = f"SELECT {', '.join(UNTESTED_COLUMNS)} FROM {REPORT_UNTESTED} ORDER BY ord"
    copy_parquet(con, untested, out / "untested.parquet")
    copy_people_csv(con, untested, out / "untested.csv", cfg.city.timezone)
    figures.files += ["untested.parquet", "untested.csv"]
    # the untested sampled door to door (sealed zone, limited mobility, controlled zone without a
    # site in the community: ``sampling_route``), the input of the grid workers' worklists
    copy_parquet(con, f"SELECT {', '.join(UNTESTED_COLUMNS)}, door_to_door_reason FROM {REPORT_UNTESTED} "
                      "WHERE door_to_door_reason IS NOT NULL ORDER BY ord", out / DOOR_TO_DOOR)
    figures.files.append(DOOR_TO_DOOR)
    put("anomalies", frames["anomalies"].select(ANOMALY_COLUMNS))
    put("tat", frames["tat"].select(TAT_COLUMNS))
    overdue = frames["key_groups_overdue"]
    overdue.select(KEY_GROUP_COLUMNS).write_parquet(out / "key_groups_overdue.parquet")
    write_people_csv(overdue.select(KEY_GROUP_COLUMNS), out / "key_groups_overdue.csv")
    figures.files += ["key_groups_overdue.parquet", "key_groups_overdue.csv"]
    for group, state, n in con.execute("SELECT key_group, compliance, count(*) FROM report_key_groups "
                                       "GROUP BY ALL ORDER BY ALL").fetchall():
        figures.key_groups.setdefault(group, {})[state] = n
    # issue 14: the daily and zero report (日报告、零报告) and the labs' load per day, from the
    # snapshot and the orders materialised above (``reporting.daily``; city times)
    clock.lap("coverage, status, orders, untested, anomalies, TAT, key groups")
    calls = materialise_calls(con, as_of)
    clock.lap("final calls (shared by the daily report, lab load and pool advice)")
    frames["daily"] = daily_frame(con, cfg, round_id, as_of, orders="report_orders", calls=calls)
    put("daily", frames["daily"].select(DAILY_COLUMNS))
    clock.lap("daily report")
    frames["lab_load"] = lab_load_frame(con, cfg, round_id, as_of, calls=calls)
    put("lab_load", frames["lab_load"].select(LAB_LOAD_COLUMNS))
    clock.lap("lab load")

    city = coverage.filter(pl.col("level") == "city").to_dicts()
    figures.city = city[0] if city else {}
    figures.districts = coverage.filter(pl.col("level") == "district").sort("district", nulls_last=True).select(
        "district", "registered", "sampled", "resulted", "untested", "coverage").to_dicts()
    figures.statuses = dict(con.execute("SELECT status, count(*) FROM report_status GROUP BY status "
                                        "ORDER BY status").fetchall())
    figures.orders = dict(frames["resample_orders"].group_by("reason").len().sort("reason").iter_rows())
    figures.anomalies = dict(frames["anomalies"].group_by("kind").len().sort("kind").iter_rows())
    # --- stock and capacity, pool-size advice (reporting/plan.py, reporting/stock.py, sampling/pool_advice.py):
    # ``stock.parquet`` and ``pool_advice.parquet``, kept in ``frames`` (``stock``, ``pool_advice``) and
    # the plan's figures in ``figures.plan`` for report.html and the workbook
    from reporting.plan import capacity_plan

    plan = capacity_plan(con, cfg, round_id, as_of, calls=calls)
    frames["stock"] = city_times(plan.stock, cfg.city.timezone)
    frames["pool_advice"] = plan.advice
    figures.plan = plan.figures
    put("stock", frames["stock"])
    put("pool_advice", frames["pool_advice"])
    clock.lap("stock, capacity and pool-size advice")
    figures.sheets = write_workbook(out / WORKBOOK, workbook_sheets(frames), as_of=as_of, timezone=cfg.city.timezone,
                                    title=f"tubetrail · round {round_id} · report")
    figures.files.append(WORKBOOK)
    clock.lap("report.xlsx")
    (out / "report.html").write_text(render_report(con, cfg, figures, frames), encoding="utf-8")
    figures.files.append("report.html")
    clock.lap("report.html")


class _PartClock:
    """Seconds per part of the report into ``timings`` (a measurement for ``make bench``, never a rule)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.mark = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.timings[part] = round(now - self.mark, 3)
        self.mark = now


def workbook_sheets(frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The sheets of ``report.xlsx``, in order (name → aggregate frame; a sheet is one line
    here). Never a person: ``reporting.workbook`` refuses a personal column."""
    coverage = frames["coverage"]
    grids = coverage.filter(pl.col("level") == "grid")
    return {
        # issue 14: the daily and zero report first (per day, district and lab; silent marked)
        "daily report": frames["daily"].select(DAILY_COLUMNS),
        # the district rows, then the city's
        "coverage by district": coverage.filter(pl.col("level").is_in(["district", "city"])).select(
            DISTRICT_SHEET_COLUMNS),
        "worst grids": worst_grids(grids, WORST_GRIDS_SHEET).select(GRID_SHEET_COLUMNS),
        "coverage by grid": grids.select(GRID_SHEET_COLUMNS),
        # issue 14: every lab's load per day of the round
        "lab load": frames["lab_load"].select(LAB_LOAD_COLUMNS),
        # issue 14: reagents and consumables per holder and item (days in hand), pool-size advice per district
        "stock": frames["stock"],
        "pool-size advice": frames["pool_advice"],
    }


# --- issue 16: the nightly report's round and the flow's artifacts (``flows.report``) -------------

#: a nightly report follows a round until this long after its window closed (its re-samples):
#: the days the daily report gives a round
REPORT_AFTER_ROUND = f"{ROUND_TAIL_DAYS} days"


def current_round(con: duckdb.DuckDBPyConnection, when: datetime) -> str:
    """The round a nightly report is about: the latest whose window has started and that ended
    no more than :data:`REPORT_AFTER_ROUND` before ``when`` (a schedule never reports a round
    long over, e.g. a replayed one, as of the wall clock). Reads the ``rounds`` table only."""
    rows = con.execute(f"SELECT round_id FROM rounds WHERE starts_at <= ? AND ends_at + INTERVAL '{REPORT_AFTER_ROUND}' > ?"
                       " ORDER BY starts_at DESC LIMIT 1", [when, when]).fetchall()
    if not rows:
        raise ValueError(f"no round is current at {when.isoformat(timespec='minutes')}")
    return rows[0][0]


def coverage_by_district_rows(figures: ReportFigures) -> list[dict]:
    """The ``coverage-by-district`` table: coverage per district as the report computed it
    (issue 15: not derived a second time), coverage in per cent."""
    return [{"district": d["district"], "registered": d["registered"], "sampled": d["sampled"],
             "resulted": d["resulted"], "untested": d["untested"], "coverage %": round(100 * (d["coverage"] or 0), 2)}
            for d in figures.districts]


def round_report_markdown(figures: ReportFigures, packs: list[dict], where: str) -> str:
    """The ``round-report`` artifact: the city's headline, people by status, re-sampling orders
    by reason, and per district pack (``reporting.districts``, as counted by its task) the
    untested, orders and worklists; ``where`` is the page (a link, else its path). Counts only."""
    city = figures.city
    return "\n".join([
        f"# Round {figures.round_id}: nightly report", "",
        f"As of {figures.as_of.isoformat(timespec='minutes')}. Report: {where}", "",
        "| registered | sampled | coverage | resulted | untested |", "|---:|---:|---:|---:|---:|",
        f"| {city.get('registered', 0):,} | {city.get('sampled', 0):,} | {100 * (city.get('coverage') or 0):.2f} % "
        f"| {city.get('resulted', 0):,} | {city.get('untested', 0):,} |", "",
        "| person status | people |", "|---|---:|", *[f"| {k} | {v:,} |" for k, v in figures.statuses.items()], "",
        "| re-sampling orders | orders |", "|---|---:|", *[f"| {k} | {v:,} |" for k, v in figures.orders.items()], "",
        "| district pack | untested | orders | worklists |", "|---|---:|---:|---:|",
        *[f"| {p['district']} | {p['untested']:,} | {sum(p['orders'].values()):,} | {p['worklists']:,} |"
          for p in packs], "",
        f"Door-to-door worklists: {sum(p['worklists'] for p in packs)} grid(s) in `districts/<district>/worklists/`. "
        f"Files: {', '.join(figures.files)}."])
