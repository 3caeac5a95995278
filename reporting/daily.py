"""The daily and zero report (日报告、零报告), the labs' load per day, and silent districts and
labs (漏报): what a screening command asks of every district and lab each day, set-based over
the derived views (the report's snapshot), never per day or per unit in Python.

**Days.** A round's days are city-time calendar days (``[city] timezone``), from the day its
window starts to the day of ``as_of``, but no later than the day of its end + ``ROUND_TAIL``
(two days: its re-samples, the next morning's results; the nightly report follows a round as
long, ``flows.report``). A day's figures are judged at its *cut*: the end of the day, or
``as_of`` on the day of ``as_of``. Facts after ``as_of`` never count.

**Units.** Every district of the round's scope (its ``districts``; without them every district
of the register and the sites) and every lab (every lab of ``labs``, and any other lab that
received a tube of the round) has a row for every day, 0 written as 0, never omitted.

``daily(rid, as_of, orders, calls)`` per day and unit (``level`` ``district`` or ``lab``); a report
reads the orders and calls it derived once anyway, so they are given by name: ``orders`` a table
of the round's ``resample_orders(as_of)`` (the report's ``report_orders``), ``calls`` one of the
final ``tube_calls(as_of)`` (:func:`materialise_calls`):

* ``sampled``: people swabbed that day (人次): the members of the round's tubes added that day,
  at the district's sites; for a lab, the members of the tubes it received that day. A person
  in two tubes counts twice; a voided scan does not count;
* ``tubes_received``: the round's tubes received that day (first receipt, ``custody``), from
  the district's sites / by the lab, refused ones included;
* ``tested``: the round's tubes whose call became final that day (``tube_calls``), from the
  district / by the lab that called them;
* ``positive_pools``: among them pooled tubes called positive or persisting single target
  (``viral_call``: their people are re-sampled urgently);
* ``positive_people``: the people of single tubes called so (a person positive);
* ``pending``: at the cut, the district's tubes sealed and not called, refused or lost; for a
  lab, its backlog: tubes it received (not refused) and not called;
* ``overdue_orders``: re-sampling orders due before the cut and not fulfilled by it, by the
  person's district (a visitor: the district that sampled them) / by the lab whose call or
  refusal raised them (a lost tube's order has no lab);
* ``silent`` and ``last_heard_at`` (below).

A call is judged with what is known at ``as_of`` (``tube_calls(as_of)``): a tube final by then
was final from its ``called_at`` on. Refusal, loss and fulfilment likewise at their times.

``lab_load(rid, as_of, calls)`` per lab and day of the round, the lab's whole load (every tube it
received, whatever its round or whether it was scanned: ``tube_receipts``): ``received``,
``tested`` (calls it made final that day), ``backlog`` (received, not refused, not called at the
cut), ``daily_capacity``, ``utilisation`` (received ÷ daily capacity; null without a capacity)
and ``tat_breaches`` (tubes it called that day later than the TAT target after collection:
``tat_breach`` of ``reporting.tat``, 12 h, 6 h for key groups). A lab over its daily capacity
on a day (received > capacity) is alerted once per lab and day (``LAB_OVER_CAPACITY``, subject
``<lab>:<day>``, raised when the tube over capacity arrived).

**Silent (漏报).** A district is *heard* when its sites scan (add, seal, void) or pack or send
a box; a lab when it receives a tube or a plate finishes (a results reading). While a round is
open at ``as_of`` (its window holds ``as_of``), a unit heard nothing in the round for
``[alerts] silent_hours`` before ``as_of`` is silent; one never heard in the round is silent
from the round's start + ``silent_hours``. Districts: those of the round's scope. Labs: only
those with a daily capacity or that received a tube since the round started, so a lab on the
list but not used by this round does not cry wolf. ``silent_units(rid, as_of)`` lists them;
``daily`` marks them on the day of ``as_of`` (earlier days: ``silent`` false, ``last_heard_at``
as of the day's end); ``silent_unit_alerts`` raises ``DISTRICT_SILENT`` / ``LAB_SILENT`` with
subject ``<round>:<unit>:<last heard at>`` (``never`` for a unit not heard in the round), so a
silence alerts once and a new silence after the unit spoke again alerts again.

Cost at a city: the big tables are read once each and reduced before anything else: scan events
and tube members are grouped into 15-minute buckets of their time first (every UTC offset in
use is a multiple of 15 minutes, so a bucket never straddles a city-time midnight), and only the
buckets are turned into city days.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from kernel.config import Config
from kernel.sql import sql_text

#: how long after its window a round still has days in the daily report (its re-samples, the
#: next morning's results); the nightly report follows a round as long (``flows.report``)
ROUND_TAIL_DAYS = 2
#: 15 minutes in microseconds: the time buckets the big tables are reduced to
BUCKET_US = 900_000_000

DAILY_COLUMNS = ("round_id", "day", "level", "unit", "sampled", "tubes_received", "tested", "positive_pools",
                 "positive_people", "pending", "overdue_orders", "silent", "last_heard_at")
LAB_LOAD_COLUMNS = ("lab_id", "lab_name", "day", "received", "tested", "backlog", "daily_capacity", "utilisation",
                    "tat_breaches")
#: the tables ``daily_frame`` and ``lab_load_frame`` derive the round's orders and the final
#: calls into when they are not given them
DAILY_ORDERS = "daily_orders"
DAILY_CALLS = "daily_calls"


def define_daily_views(con: duckdb.DuckDBPyConnection, cfg: Config) -> None:
    """The macros of this module. Needs :func:`warehouse.views.define_views` and
    :func:`reporting.tat.define_tat_views` (``lab_load``)."""
    from reporting.tat import define_tat_views

    define_tat_views(con, cfg.tat)
    tz = sql_text(cfg.city.timezone)
    silent = f"INTERVAL '{cfg.alerts.silent_hours * 3600:.0f} seconds'"
    con.execute(f"CREATE OR REPLACE TEMP MACRO city_day(ts) AS CAST(timezone({tz}, ts) AS DATE)")
    con.execute(f"CREATE OR REPLACE TEMP MACRO city_day_start(day) AS timezone({tz}, CAST(day AS TIMESTAMP))")
    con.execute(f"CREATE OR REPLACE TEMP MACRO bucket_day(b) AS city_day(to_timestamp(b * {BUCKET_US // 1_000_000}))")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO round_days(rid, as_of) AS TABLE
        SELECT r.round_id, d.day, city_day_start(d.day) AS day_start,
               least(city_day_start(d.day + 1), as_of) AS cut, d.day = city_day(as_of) AS as_of_day
        FROM rounds r, LATERAL (
            SELECT CAST(unnest(generate_series(city_day(r.starts_at),
                                               least(city_day(as_of), city_day(r.ends_at + INTERVAL {ROUND_TAIL_DAYS} DAY)),
                                               INTERVAL 1 DAY)) AS DATE) AS day) d
        WHERE r.round_id = rid
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO scope_districts(rid) AS TABLE
        WITH r AS (SELECT districts FROM rounds WHERE round_id = rid)
        SELECT DISTINCT unnest(districts) AS district FROM r WHERE districts IS NOT NULL
        UNION SELECT DISTINCT district FROM register WHERE (SELECT districts FROM r) IS NULL
        UNION SELECT DISTINCT district FROM sites WHERE (SELECT districts FROM r) IS NULL
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO unit_heard(rid, as_of) AS TABLE
        -- per unit and city day, the last thing it sent in the round up to as_of
        WITH r AS (SELECT starts_at FROM rounds WHERE round_id = rid),
        site_b AS (
            SELECT site_id, epoch_us(scanned_at) // {BUCKET_US} AS b, max(scanned_at) AS fact_at FROM scans
            WHERE scanned_at >= (SELECT starts_at FROM r) AND scanned_at <= as_of GROUP BY ALL
            UNION ALL
            SELECT site_id, epoch_us(fact_at) // {BUCKET_US}, max(fact_at) FROM (
                SELECT site_id, packed_at AS fact_at FROM manifests UNION ALL SELECT site_id, departed_at FROM manifests)
            WHERE fact_at >= (SELECT starts_at FROM r) AND fact_at <= as_of GROUP BY ALL
        ), lab_b AS (
            SELECT lab_id, epoch_us(received_at) // {BUCKET_US} AS b, max(received_at) AS fact_at FROM receipts
            WHERE received_at >= (SELECT starts_at FROM r) AND received_at <= as_of GROUP BY ALL
            UNION ALL
            -- a reading without a run time is the file's (as ``result_readings`` reads it)
            SELECT f.lab_id, epoch_us(coalesce(f.fact_at, l.ingested_at)) // {BUCKET_US}, coalesce(f.fact_at, l.ingested_at)
            FROM (SELECT lab_id, source_hash, epoch_us(finished_at) // {BUCKET_US} AS b, max(finished_at) AS fact_at
                  FROM results GROUP BY ALL) f
            JOIN ingest_ledger l ON l.content_hash = f.source_hash
            WHERE coalesce(f.fact_at, l.ingested_at) >= (SELECT starts_at FROM r) AND coalesce(f.fact_at, l.ingested_at) <= as_of
        )
        SELECT 'district' AS level, st.district AS unit, bucket_day(h.b) AS day, max(h.fact_at) AS last_at
        FROM site_b h JOIN sites st USING (site_id) GROUP BY ALL
        UNION ALL
        SELECT 'lab', lab_id, bucket_day(b), max(fact_at) FROM lab_b GROUP BY ALL
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO silent_units(rid, as_of) AS TABLE
        WITH r AS (SELECT * FROM rounds WHERE round_id = rid AND starts_at <= as_of AND as_of < ends_at),
        heard AS (SELECT level, unit, max(last_at) AS last_at FROM unit_heard(rid, as_of) GROUP BY ALL),
        units AS (
            SELECT 'district' AS level, district AS unit FROM scope_districts(rid)
            UNION
            -- labs with a daily capacity, or that received a tube since the round started
            SELECT 'lab', lab_id FROM labs WHERE daily_capacity_tubes > 0
            UNION
            SELECT 'lab', lab_id FROM receipts WHERE received_at >= (SELECT starts_at FROM r) AND received_at <= as_of
        )
        SELECT r.round_id, u.level, u.unit, h.last_at AS last_heard_at,
               coalesce(h.last_at, r.starts_at) + {silent} AS silent_from
        FROM units u CROSS JOIN r LEFT JOIN heard h USING (level, unit)
        WHERE coalesce(h.last_at, r.starts_at) + {silent} <= as_of
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO daily(rid, as_of, orders, calls) AS TABLE
        WITH days AS MATERIALIZED (SELECT * FROM round_days(rid, as_of)),
        bounds AS (SELECT min(day) AS first_day, max(day) AS last_day FROM days),
        k AS (SELECT tube_barcode, lab_id, called_at, call FROM query_table(calls)),
        t0 AS (
            SELECT c.tube_barcode, st.district, c.lab_id AS received_lab, k.lab_id AS called_lab, c.members, c.capacity,
                   k.call, k.called_at,
                   CASE WHEN c.sealed_at <= as_of THEN c.sealed_at END AS sealed_at,
                   CASE WHEN c.received_at <= as_of THEN c.received_at END AS received_at,
                   CASE WHEN c.received_at <= as_of AND NOT c.refused THEN c.received_at END AS accepted_at,
                   -- the tube leaves the pending: called, refused or lost
                   least(k.called_at, CASE WHEN c.received_at <= as_of AND c.refused THEN c.received_at END,
                         lost.detected_at) AS closed_at
            FROM custody c LEFT JOIN sites st USING (site_id) LEFT JOIN k USING (tube_barcode)
            LEFT JOIN tube_lost(as_of) lost USING (round_id, tube_barcode)
            WHERE c.round_id = rid
        ), t AS MATERIALIZED (
            SELECT tube_barcode, district, received_lab, called_lab, members, capacity, call,
                   city_day(sealed_at) AS sealed_day, city_day(received_at) AS received_day,
                   city_day(called_at) AS called_day,
                   CASE WHEN sealed_at IS NOT NULL AND closed_at IS NOT NULL THEN city_day(greatest(sealed_at, closed_at)) END
                       AS pending_closed_day,
                   city_day(accepted_at) AS accepted_day,
                   CASE WHEN accepted_at IS NOT NULL AND called_at IS NOT NULL THEN city_day(greatest(accepted_at, called_at)) END
                       AS backlog_closed_day
            FROM t0
        ), swabs AS (
            SELECT tube_barcode, epoch_us(added_at) // {BUCKET_US} AS b, count(*) AS people
            FROM tube_members WHERE round_id = rid AND added_at <= as_of GROUP BY ALL
        ), flows AS (
            SELECT 'district' AS level, t.district AS unit, bucket_day(s.b) AS day, 'sampled' AS m, sum(s.people) AS n
            FROM swabs s JOIN t USING (tube_barcode) GROUP BY ALL
            UNION ALL SELECT 'district', district, received_day, 'received', count(*) FROM t GROUP BY ALL
            UNION ALL SELECT 'district', district, called_day, 'tested', count(*) FROM t GROUP BY ALL
            UNION ALL SELECT 'district', district, called_day, 'positive_pools', count(*) FROM t
                      WHERE capacity > 1 AND viral_call(call) GROUP BY ALL
            UNION ALL SELECT 'district', district, called_day, 'positive_people', sum(members) FROM t
                      WHERE capacity = 1 AND viral_call(call) GROUP BY ALL
            UNION ALL SELECT 'district', district, sealed_day, 'pending', count(*) FROM t GROUP BY ALL
            UNION ALL SELECT 'district', district, pending_closed_day, 'pending', -count(*) FROM t GROUP BY ALL
            UNION ALL SELECT 'lab', received_lab, received_day, 'sampled', sum(members) FROM t GROUP BY ALL
            UNION ALL SELECT 'lab', received_lab, received_day, 'received', count(*) FROM t GROUP BY ALL
            UNION ALL SELECT 'lab', called_lab, called_day, 'tested', count(*) FROM t GROUP BY ALL
            UNION ALL SELECT 'lab', called_lab, called_day, 'positive_pools', count(*) FROM t
                      WHERE capacity > 1 AND viral_call(call) GROUP BY ALL
            UNION ALL SELECT 'lab', called_lab, called_day, 'positive_people', sum(members) FROM t
                      WHERE capacity = 1 AND viral_call(call) GROUP BY ALL
            UNION ALL SELECT 'lab', received_lab, accepted_day, 'pending', count(*) FROM t GROUP BY ALL
            UNION ALL SELECT 'lab', received_lab, backlog_closed_day, 'pending', -count(*) FROM t GROUP BY ALL
        ), ord AS MATERIALIZED (
            SELECT o.person_key, o.source_tube, o.due_by, o.fulfilled_at, c.lab_id, st.district AS site_district
            FROM query_table(orders) o
            LEFT JOIN custody c ON c.round_id = o.round_id AND c.tube_barcode = o.source_tube
            LEFT JOIN sites st ON st.site_id = c.site_id
            WHERE o.round_id = rid
        ), ord_unit AS (
            SELECT o.*, coalesce(reg.district, o.site_district) AS district
            FROM ord o LEFT JOIN (SELECT person_key, district FROM register
                                  WHERE person_key IN (SELECT person_key FROM ord)) reg USING (person_key)
        ), overdue AS (
            SELECT 'district' AS level, o.district AS unit, d.day, 'overdue' AS m, count(*) AS n
            FROM days d JOIN ord_unit o ON o.due_by < d.cut AND (o.fulfilled_at IS NULL OR o.fulfilled_at > d.cut)
            GROUP BY ALL
            UNION ALL
            SELECT 'lab', o.lab_id, d.day, 'overdue', count(*)
            FROM days d JOIN ord_unit o ON o.due_by < d.cut AND (o.fulfilled_at IS NULL OR o.fulfilled_at > d.cut)
            GROUP BY ALL
        ), units AS (
            SELECT 'district' AS level, district AS unit FROM scope_districts(rid)
            UNION SELECT 'lab', lab_id FROM labs
            UNION SELECT DISTINCT 'lab', received_lab FROM t WHERE received_day IS NOT NULL
        ), grid AS (
            SELECT d.round_id, d.day, d.as_of_day, u.level, u.unit FROM days d CROSS JOIN units u
        ), per_day AS (
            -- a running count's change before the round's first day counts on the first day; a
            -- change after its last day is after every cut
            SELECT f.level, f.unit, CASE WHEN f.m = 'pending' THEN greatest(f.day, b.first_day) ELSE f.day END AS day,
                   f.m, sum(f.n) AS n
            FROM (SELECT * FROM flows UNION ALL SELECT * FROM overdue) f, bounds b
            WHERE f.day IS NOT NULL AND f.unit IS NOT NULL AND f.day <= b.last_day
            GROUP BY ALL
        ), heard AS (
            SELECT level, unit, day, max(last_at) AS last_at FROM unit_heard(rid, as_of) GROUP BY ALL
        ), counted AS (
            SELECT g.round_id, g.day, g.as_of_day, g.level, g.unit,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'sampled'), 0) AS sampled,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'received'), 0) AS tubes_received,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'tested'), 0) AS tested,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'positive_pools'), 0) AS positive_pools,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'positive_people'), 0) AS positive_people,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'pending'), 0) AS pending_change,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'overdue'), 0) AS overdue_orders
            FROM grid g LEFT JOIN per_day p USING (level, unit, day)
            GROUP BY ALL
        )
        SELECT c.round_id, c.day, c.level, c.unit, c.sampled::BIGINT AS sampled,
               c.tubes_received::BIGINT AS tubes_received, c.tested::BIGINT AS tested,
               c.positive_pools::BIGINT AS positive_pools, c.positive_people::BIGINT AS positive_people,
               (sum(c.pending_change) OVER running)::BIGINT AS pending, c.overdue_orders::BIGINT AS overdue_orders,
               c.as_of_day AND s.unit IS NOT NULL AS silent,
               max(h.last_at) OVER running AS last_heard_at
        FROM counted c LEFT JOIN heard h USING (level, unit, day)
        LEFT JOIN silent_units(rid, as_of) s USING (level, unit)
        WINDOW running AS (PARTITION BY c.level, c.unit ORDER BY c.day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO lab_received(as_of) AS TABLE
        -- per lab and city day: the tubes it received (first receipt), refused ones included
        SELECT lab_id, city_day(received_at) AS day, count(*) AS received,
               count(*) FILTER (WHERE condition = 'ok') AS accepted
        FROM tube_receipts WHERE received_at <= as_of GROUP BY ALL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO lab_load(rid, as_of, calls) AS TABLE
        WITH days AS MATERIALIZED (SELECT * FROM round_days(rid, as_of)),
        bounds AS (SELECT min(day) AS first_day, max(day) AS last_day FROM days),
        k AS (SELECT tube_barcode, lab_id, called_at FROM query_table(calls)),
        received AS MATERIALIZED (SELECT * FROM lab_received(as_of)),
        flows AS (
            SELECT lab_id, day, 'received' AS m, received AS n FROM received
            UNION ALL SELECT lab_id, city_day(called_at), 'tested', count(*) FROM k GROUP BY ALL
            -- backlog: in when received (not refused), out when called
            UNION ALL SELECT lab_id, day, 'backlog', accepted FROM received
            UNION ALL SELECT r.lab_id, city_day(greatest(r.received_at, k.called_at)), 'backlog', -count(*)
                      FROM tube_receipts r JOIN k USING (tube_barcode)
                      WHERE r.received_at <= as_of AND r.condition = 'ok' GROUP BY ALL
            UNION ALL SELECT k.lab_id, city_day(k.called_at), 'tat_breaches', count(*)
                      FROM k JOIN custody c USING (tube_barcode)
                      LEFT JOIN key_group_tubes kt USING (round_id, tube_barcode)
                      WHERE tat_breach(c.collected_at, k.called_at, kt.tube_barcode IS NOT NULL) GROUP BY ALL
        ), per_day AS (
            SELECT f.lab_id, CASE WHEN f.m = 'backlog' THEN greatest(f.day, b.first_day) ELSE f.day END AS day,
                   f.m, sum(f.n) AS n
            FROM flows f, bounds b WHERE f.day <= b.last_day AND f.lab_id IS NOT NULL GROUP BY ALL
        ), units AS (
            SELECT lab_id FROM labs UNION SELECT lab_id FROM per_day
        ), counted AS (
            SELECT u.lab_id, d.day,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'received'), 0) AS received,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'tested'), 0) AS tested,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'backlog'), 0) AS backlog_change,
                   coalesce(sum(p.n) FILTER (WHERE p.m = 'tat_breaches'), 0) AS tat_breaches
            FROM days d CROSS JOIN units u LEFT JOIN per_day p USING (lab_id, day)
            GROUP BY ALL
        )
        SELECT c.lab_id, l.name AS lab_name, c.day, c.received::BIGINT AS received, c.tested::BIGINT AS tested,
               (sum(c.backlog_change) OVER (PARTITION BY c.lab_id ORDER BY c.day
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))::BIGINT AS backlog,
               l.daily_capacity_tubes AS daily_capacity,
               round(c.received / nullif(l.daily_capacity_tubes, 0), 4) AS utilisation,
               c.tat_breaches::BIGINT AS tat_breaches
        FROM counted c LEFT JOIN labs l USING (lab_id)
        """
    )


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> pl.DataFrame:
    return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())


def _city(frame: pl.DataFrame, timezone: str) -> pl.DataFrame:
    from reporting.people_csv import city_times

    return city_times(frame, timezone)


def materialise_calls(con: duckdb.DuckDBPyConnection, as_of: datetime, name: str = DAILY_CALLS) -> str:
    """The final calls as of ``as_of`` (``tube_calls``) into the temporary table ``name``, once
    for ``daily`` and ``lab_load``; returns ``name``."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT tube_barcode, lab_id, called_at, call "
                "FROM tube_calls($as_of) WHERE final", {"as_of": as_of})
    return name


def daily_frame(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime,
                orders: str | None = None, calls: str | None = None) -> pl.DataFrame:
    """``daily.parquet``: the daily and zero report of a round as of ``as_of`` (exactly
    :data:`DAILY_COLUMNS`, times in city time), ordered by day, level (districts first), unit.
    ``orders``: a table holding the round's ``resample_orders(as_of)`` (the report's
    ``report_orders``), ``calls`` one from :func:`materialise_calls` at ``as_of``; without them
    they are derived here. Needs :func:`warehouse.views.define_views` (``snapshot=True`` for a city)."""
    define_daily_views(con, cfg)
    if orders is None:
        orders = DAILY_ORDERS
        con.execute(f"CREATE OR REPLACE TEMP TABLE {DAILY_ORDERS} AS SELECT * FROM resample_orders($as_of) "
                    "WHERE round_id = $rid", {"as_of": as_of, "rid": round_id})
    calls = calls or materialise_calls(con, as_of)
    frame = _frame(con, f"SELECT {', '.join(DAILY_COLUMNS)} FROM daily($rid, $as_of, {sql_text(orders)}, "
                        f"{sql_text(calls)}) ORDER BY day, level = 'lab', unit", {"rid": round_id, "as_of": as_of})
    return _city(frame, cfg.city.timezone)


def lab_load_frame(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime,
                   calls: str | None = None) -> pl.DataFrame:
    """``lab_load.parquet``: every lab's load per day of the round (:data:`LAB_LOAD_COLUMNS`),
    ordered by lab and day; ``calls`` as for :func:`daily_frame`. Needs
    :func:`warehouse.views.define_views`."""
    define_daily_views(con, cfg)
    calls = calls or materialise_calls(con, as_of)
    return _frame(con, f"SELECT {', '.join(LAB_LOAD_COLUMNS)} FROM lab_load($rid, $as_of, {sql_text(calls)}) "
                       "ORDER BY lab_id, day", {"rid": round_id, "as_of": as_of})


def silent_frame(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> pl.DataFrame:
    """The districts and labs silent at ``as_of`` (none when the round is not open then), longest
    silent first: ``level``, ``unit``, ``last_heard_at`` (null: never in the round),
    ``silent_from``, in city time."""
    define_daily_views(con, cfg)
    frame = _frame(con, "SELECT level, unit, last_heard_at, silent_from FROM silent_units($rid, $as_of) "
                        "ORDER BY silent_from, level, unit", {"rid": round_id, "as_of": as_of})
    return _city(frame, cfg.city.timezone)


def _local(at: datetime, zone: ZoneInfo) -> str:
    local = at.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%m-%d %H:%M} {offset[:3]}:{offset[3:]}"


def daily_dashboard_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[str]:
    """Markdown lines for the live round dashboard: per lab today's received, capacity,
    utilisation, backlog and TAT breaches; the silent districts and labs. Counts and places
    only. Needs :func:`warehouse.views.define_views`."""
    zone = ZoneInfo(cfg.city.timezone)
    load = lab_load_frame(con, cfg, round_id, as_of)
    today = load.filter(pl.col("day") == as_of.astimezone(zone).date())
    lines = [f"## Lab load today ({as_of.astimezone(zone):%Y-%m-%d}, as of {_local(as_of, zone)})", ""]
    if today.height:
        lines += ["| lab | received | daily capacity | utilisation | backlog | tested | TAT breaches |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in today.iter_rows(named=True):
            use = f"{100 * r['utilisation']:.0f} %" if r["utilisation"] is not None else "–"
            if r["daily_capacity"] and r["received"] > r["daily_capacity"]:
                use += " OVER CAPACITY"
            capacity = f"{r['daily_capacity']:,}" if r["daily_capacity"] else "–"
            lines.append(f"| {r['lab_id']} | {r['received']:,} | {capacity} | {use} | {r['backlog']:,} "
                         f"| {r['tested']:,} | {r['tat_breaches']:,} |")
    else:
        lines.append("No day of the round holds this time.")
    silent = silent_frame(con, cfg, round_id, as_of)
    lines += ["", f"## Silent districts and labs (nothing sent for {cfg.alerts.silent_hours:g} h, 漏报)", ""]
    if silent.height:
        for r in silent.iter_rows(named=True):
            heard = f"last heard {_local(r['last_heard_at'], zone)}" if r["last_heard_at"] else "not heard in the round"
            lines.append(f"- SILENT {r['level']} **{r['unit']}**: {heard}, silent since {_local(r['silent_from'], zone)}")
    else:
        lines.append("None silent.")
    return [*lines, ""]


# --- alerts judged at a time (``reporting.timed_alerts.TIMED_ALERT_RULES``) ------------------------------

def silent_unit_alerts(con: duckdb.DuckDBPyConnection, cfg: Config, as_of: datetime) -> list:
    """``DISTRICT_SILENT`` / ``LAB_SILENT`` for every unit silent at ``as_of`` in a round open
    then; subject ``<round>:<unit>:<last heard at, city time | never>``, raised when it became
    silent. Needs :func:`warehouse.views.define_views`."""
    from reporting.alerts import DISTRICT_SILENT, LAB_SILENT, generic_alert

    define_daily_views(con, cfg)
    zone = ZoneInfo(cfg.city.timezone)
    hours = cfg.alerts.silent_hours
    alerts = []
    rounds = [r[0] for r in con.execute("SELECT round_id FROM rounds WHERE starts_at <= $as_of AND $as_of < ends_at "
                                        "ORDER BY round_id", {"as_of": as_of}).fetchall()]
    for rid in rounds:  # windows never overlap: one round at most
        for level, unit, last, since in con.execute(
                "SELECT level, unit, last_heard_at, silent_from FROM silent_units($rid, $as_of) ORDER BY level, unit",
                {"rid": rid, "as_of": as_of}).fetchall():
            kind = DISTRICT_SILENT if level == "district" else LAB_SILENT
            heard = last.astimezone(zone).isoformat() if last else "never"
            what = "no scan and no box" if level == "district" else "no receipt and no result"
            title = (f"{level.capitalize()} {unit} silent in round {rid}: {what} for {hours:g} h "
                     + (f"(last heard {_local(last, zone)})" if last else "(not heard in the round)"))
            alerts.append(generic_alert(
                kind, f"{rid}:{unit}:{heard}", since, title=title,
                summary=(f"Call the {level} {unit}: it has sent nothing since "
                         + (_local(last, zone) if last else "the round opened")
                         + f". A silent {level} of an open round is a missed report (漏报) until it sends again."),
                resource=unit, round_id=rid,
                facts={"round": rid, level: unit, "last_heard_at": heard, "silent_from": since.astimezone(zone).isoformat(),
                       "silent_hours": hours, "judged_at": as_of.astimezone(zone).isoformat()}))
    return alerts


def lab_over_capacity_alerts(con: duckdb.DuckDBPyConnection, cfg: Config, as_of: datetime) -> list:
    """``LAB_OVER_CAPACITY`` for every lab and city day whose tubes received up to ``as_of`` are
    more than the lab's daily capacity, subject ``<lab>:<day>``, raised when the first tube over
    capacity arrived. Reads the receipts only (cheap after every ingest)."""
    from reporting.alerts import LAB_OVER_CAPACITY, generic_alert

    define_daily_views(con, cfg)
    zone = ZoneInfo(cfg.city.timezone)
    rows = con.execute(
        """
        WITH over AS (
            SELECT r.lab_id, r.day, r.received, l.daily_capacity_tubes AS capacity
            FROM lab_received($as_of) r JOIN labs l USING (lab_id)
            WHERE l.daily_capacity_tubes > 0 AND r.received > l.daily_capacity_tubes
        )
        SELECT o.lab_id, o.day, o.received, o.capacity, t.received_at
        FROM over o JOIN tube_receipts t ON t.lab_id = o.lab_id AND city_day(t.received_at) = o.day
        WHERE t.received_at <= $as_of
        QUALIFY row_number() OVER (PARTITION BY o.lab_id, o.day ORDER BY t.received_at, t.tube_barcode) = o.capacity + 1
        ORDER BY o.lab_id, o.day
        """, {"as_of": as_of}).fetchall()
    return [generic_alert(
        LAB_OVER_CAPACITY, f"{lab}:{day.isoformat()}", passed,
        title=(f"Lab {lab} over its daily capacity on {day.isoformat()}: {received:,} tubes received by "
               f"{_local(as_of, zone)}, capacity {capacity:,}"),
        summary=(f"Lab {lab} received more tubes on {day.isoformat()} than it can test in a day "
                 f"({received:,} by {_local(as_of, zone)}, {100 * received / capacity:.0f} % of {capacity:,}; over "
                 f"capacity since {_local(passed, zone)}). Send boxes to another lab or add shifts; "
                 "see the report's lab load."),
        resource=lab, facts={"lab": lab, "day": day.isoformat(), "received": received, "daily_capacity": capacity,
                             "utilisation_pct": round(100 * received / capacity, 1),
                             "over_capacity_at": passed.astimezone(zone).isoformat(),
                             "judged_at": as_of.astimezone(zone).isoformat()})
        for lab, day, received, capacity, passed in rows]
