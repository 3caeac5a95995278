"""Reagents and consumables in hand (试剂耗材库存), in one place: the ``stock/`` feed's row rules,
what each holder has used since its last count, what it has in hand, and how many days of
whole-population testing that lasts (DESIGN §4 ``stock/``, §7 ``stock.parquet``, §8 the alert).

**The feed.** A row is one count: ``at`` (ISO time, city time when naive), ``holder`` (a lab id,
a district, or a depot named in ``[stock] depots``), ``item`` (:data:`ITEMS`), ``quantity`` (a
whole number, 0 or more) and ``tests_per_unit`` (a whole number above 0, default 1: the
reactions of one kit; a count in packs of 100 swabs says 100). What a count holds is
``quantity × tests_per_unit`` units (:data:`UNITS`: reactions for the kits). A holder that is no
lab, no district of the register or the sites and no configured depot is kept with a warning
(:data:`UNKNOWN_HOLDER`): a typo, or a lab whose ``labs/`` row has not arrived yet; it is
listed, but neither consumed nor counted in the city's total. A count sent again (same holder,
item and time) is taken once: the later file wins and a changed quantity is audited.

**Used since the count** (``stock_use(as_of)``), derived from the facts, never reported:

* a district's ``swab``: the adds not voided (add scans less void scans: a void cancels an add)
  at the district's sites; ``tube_pooled`` / ``tube_single``: tubes opened there (their first
  add; pooled when their capacity, printed or else the round's, is above 1); ``box``: boxes
  packed there (a box's first manifest row);
* a lab's ``reagent_kit`` and ``extraction_kit``: the wells its runs read, controls included,
  one reaction per distinct run, plate and well (a well re-reported by a later file is one);
* a depot's stock is not consumed by facts (deliveries out of it show as other holders' counts).

Consumption is counted on the facts since the counts, not on the round's derived views
(``tube_members``, ``tubes``), which aggregate every scan of the city: the rule is judged after
every ingest run (a city of 1 M residents, without a snapshot: 0.3 s on the facts, 2.6 s on the
views).

**In hand** = the last count at ``as_of`` − used since (never below 0).

**Need per round**: one whole-population round of the round's scope (``sampling.need``):
swabs = registered people; tubes = the tubes its zones' pool sizes fill, pooled and single;
reactions (both kits) = tubes + 2 controls per plate of ``[stock] wells_per_plate`` (96: 94
tubes, PC, NC); boxes = tubes ÷ ``[stock] tubes_per_box``. A district needs its own people's;
a lab its share of the city's in proportion to its daily capacity (no capacity: no share, no
days); a depot the city's. **Days in hand** = in hand ÷ need per round: the city tests its whole
population once a day, so a round's need is a day's; **under minimum** when fewer than
``[stock] min_days``. The city's total per item (holder ``city``) adds every known holder and
is judged against the city's need.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from kernel.config import Config, StockConfig
from kernel.rules import (
    LINE,
    Checked,
    Rule,
    StageWarning,
    blank,
    concat_quarantine,
    one_of,
    parsed_time,
    required,
    split_by_rules,
    stripped,
    text_rules,
    time_rule,
    with_columns_present,
    with_parsed_times,
)
from kernel.sql import sql_text_list

if TYPE_CHECKING:
    from reporting.alerts import OutboxAlert

ITEMS = ("reagent_kit", "extraction_kit", "swab", "tube_pooled", "tube_single", "box")
#: consumed by a lab's wells
LAB_ITEMS = ("reagent_kit", "extraction_kit")
#: consumed at a district's sites
DISTRICT_ITEMS = ("swab", "tube_pooled", "tube_single", "box")
#: what one unit in hand is (``quantity × tests_per_unit`` of them per count)
UNITS = {"reagent_kit": "reactions", "extraction_kit": "reactions", "swab": "swabs", "tube_pooled": "tubes",
         "tube_single": "tubes", "box": "boxes"}

STOCK_REQUIRED = ("at", "holder", "item", "quantity")
STOCK_OPTIONAL = ("tests_per_unit",)
STOCK_COLUMNS = ("at", "holder", "item", "quantity", "tests_per_unit")
#: a count is one holder's one item at one time: sent again, the later line (file) wins
STOCK_UNIQUE_KEY = ("holder", "item", "at")
#: the holder of the city's total rows
CITY = "city"

STOCK_FRAME_COLUMNS = ("holder", "holder_kind", "item", "unit", "counted_at", "last_count", "used_since", "in_hand",
                       "need_per_round", "days_in_hand", "under_minimum")

#: a holder the warehouse does not know: kept, counted in the ledger's warnings
UNKNOWN_HOLDER = StageWarning("holder is no lab, district or configured depot (kept)",
                              "holder NOT IN (SELECT holder FROM stock_holders)")


def whole_number_rule(column: str, *, minimum: int, optional: bool) -> Rule:
    """A whole number of at least ``minimum`` (``1,000`` and ``2.5`` are not)."""
    value = pl.col(column).str.strip_chars().cast(pl.Int64, strict=False)
    bad = value.is_null() | (value < minimum)
    if optional:
        bad = bad & ~blank(column)
    what = "0 or more" if minimum == 0 else f"{minimum} or more"
    return Rule(column, f"{column} not a whole number of {what}", bad)


def check_stock(raw: pl.DataFrame, *, timezone: str) -> Checked:
    """The row rules of a ``stock/`` file (all text, ``_line``): text rules, required columns,
    an ISO time (city time when naive), a known item, a whole quantity of 0 or more and a whole
    ``tests_per_unit`` above 0 (default 1). ``city`` is not a holder (it names the total)."""
    frame = with_parsed_times(with_columns_present(raw, STOCK_OPTIONAL), ["at"], timezone)
    rules = [
        *text_rules(STOCK_COLUMNS),
        *(required(c) for c in STOCK_REQUIRED),
        time_rule("at"),
        Rule("holder", f"holder '{CITY}' names the city's total, not a holder",
             pl.col("holder").str.strip_chars().str.to_lowercase() == CITY),
        one_of("item", ITEMS),
        whole_number_rule("quantity", minimum=0, optional=False),
        whole_number_rule("tests_per_unit", minimum=1, optional=True),
    ]
    good, bad = split_by_rules(frame, rules)
    good = good.with_columns(
        parsed_time("at"),
        stripped("holder"),
        pl.col("item").str.strip_chars().str.to_lowercase(),
        pl.col("quantity").str.strip_chars().cast(pl.Int64),
        pl.col("tests_per_unit").str.strip_chars().replace("", None).cast(pl.Int64, strict=False).fill_null(1),
    ).select(*STOCK_COLUMNS, LINE)
    return Checked(good, concat_quarantine(bad))


def define_stock_views(con: duckdb.DuckDBPyConnection, stock: StockConfig) -> None:
    """``stock_holders`` (every holder the warehouse knows, with its kind: lab, depot, district),
    ``stock_last(as_of)`` (the last count per holder and item, in units) and ``stock_use(as_of)``
    (that count and what was used since)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW stock_holders AS
        SELECT holder, arg_min(holder_kind, rank) AS holder_kind FROM (
            SELECT lab_id AS holder, 'lab' AS holder_kind, 1 AS rank FROM labs
            UNION ALL SELECT unnest({sql_text_list(stock.depots)}), 'depot', 2
            UNION ALL SELECT DISTINCT district, 'district', 3 FROM sites
            UNION ALL SELECT DISTINCT district, 'district', 3 FROM register
        ) GROUP BY holder
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO stock_last(as_of) AS TABLE
        SELECT holder, item, max(counted_at) AS counted_at,
               arg_max(quantity * tests_per_unit, counted_at)::BIGINT AS last_count
        FROM stock_counts WHERE counted_at <= as_of GROUP BY holder, item
        """
    )
    lab_items = sql_text_list(LAB_ITEMS)
    # Counted on the facts of the window since the counts (not on the round's derived views, which
    # aggregate every scan of the city: this rule is judged after every ingest run)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO stock_use(as_of) AS TABLE
        WITH last AS MATERIALIZED (
            SELECT l.*, h.holder_kind FROM stock_last(as_of) l LEFT JOIN stock_holders h USING (holder)
        ), since AS MATERIALIZED (
            SELECT min(counted_at) FILTER (WHERE holder_kind = 'district') AS district_since,
                   min(counted_at) FILTER (WHERE holder_kind = 'lab' AND list_contains({lab_items}, item)) AS lab_since
            FROM last
        ), site_count AS MATERIALIZED (
            -- per site: its district's counts (a few thousand rows), joined to every scan of the window
            SELECT s.site_id, l.holder, l.item, l.counted_at
            FROM sites s JOIN last l ON l.holder = s.district AND l.holder_kind = 'district'
        ), swabs AS (
            -- the adds not voided: add scans less void scans (a void cancels an add)
            SELECT c.holder, c.item, sum(CASE sc.event WHEN 'add' THEN 1 ELSE -1 END) AS n
            FROM scans sc JOIN site_count c ON c.site_id = sc.site_id AND c.item = 'swab' AND sc.scanned_at > c.counted_at
            WHERE sc.event IN ('add', 'void') AND sc.scanned_at > (SELECT district_since FROM since)
              AND sc.scanned_at <= as_of
            GROUP BY ALL
        ), opened AS (
            -- tubes by their first add in the window (one with an add before it was opened before)
            SELECT tube_barcode, min(round_id) AS round_id, min(site_id) AS site_id, min(scanned_at) AS opened_at,
                   max(capacity) AS printed
            FROM scans
            WHERE event = 'add' AND scanned_at > (SELECT district_since FROM since) AND scanned_at <= as_of
            GROUP BY tube_barcode
        ), opened_before AS (
            SELECT DISTINCT tube_barcode FROM scans
            WHERE event = 'add' AND scanned_at <= (SELECT district_since FROM since)
              AND tube_barcode IN (SELECT tube_barcode FROM opened)
        ), tubes_opened AS (
            -- pooled when the tube's capacity is above 1: printed on it, else the round's pool size
            -- (as ``tubes`` sizes them)
            SELECT c.holder, c.item, count(*) AS n
            FROM opened o JOIN rounds r USING (round_id) ANTI JOIN opened_before b USING (tube_barcode)
            JOIN site_count c ON c.site_id = o.site_id AND o.opened_at > c.counted_at
                 AND c.item = CASE WHEN coalesce(o.printed, r.pool_size) > 1 THEN 'tube_pooled' ELSE 'tube_single' END
            GROUP BY ALL
        ), boxes AS (
            -- boxes packed (a box's first manifest row)
            SELECT c.holder, c.item, count(*) AS n
            FROM (SELECT box_id, min(packed_at) AS packed_at, arg_min(site_id, packed_at) AS site_id FROM manifests
                  WHERE box_id IN (SELECT box_id FROM manifests WHERE packed_at > (SELECT district_since FROM since))
                  GROUP BY box_id) b
            JOIN site_count c ON c.site_id = b.site_id AND c.item = 'box' AND b.packed_at > c.counted_at
            WHERE b.packed_at <= as_of
            GROUP BY ALL
        ), wells AS (
            -- one reaction per well read: its first reading (a later file re-reporting it is the same well)
            SELECT lab_id AS holder, min(finished_at) AS used_at FROM results
            WHERE finished_at > (SELECT lab_since FROM since)
            GROUP BY lab_id, run_id, plate_id, well
        ), used AS (
            SELECT * FROM swabs UNION ALL SELECT * FROM tubes_opened UNION ALL SELECT * FROM boxes
            UNION ALL
            SELECT l.holder, l.item, count(*)
            FROM last l JOIN wells w ON w.holder = l.holder AND w.used_at > l.counted_at AND w.used_at <= as_of
            WHERE l.holder_kind = 'lab' AND list_contains({lab_items}, l.item) GROUP BY ALL
        )
        SELECT l.holder, l.holder_kind, l.item, l.counted_at, l.last_count, greatest(coalesce(u.n, 0), 0)::BIGINT AS used_since
        FROM last l LEFT JOIN used u USING (holder, item)
        """
    )


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> pl.DataFrame:
    frame = pl.from_arrow(con.sql(sql, params=params).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def stock_frame(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str | None, as_of: datetime, *,
                need: str | None = None) -> pl.DataFrame:
    """``stock.parquet`` (:data:`STOCK_FRAME_COLUMNS`): per holder and item, and per item for the
    city, the last count at ``as_of``, used since, in hand, one round's need (of ``round_id``'s
    scope; None: the whole register at the default pool size), days in hand and whether that is
    under ``[stock] min_days``. Quantities in units (:data:`UNITS`). ``need``: a table already
    holding ``scope_need(round_id, as_of)`` (the capacity plan computes it once). Needs the views
    of ``warehouse.views.define_views``."""
    s = cfg.stock
    items = sql_text_list(ITEMS)
    tubes = "(tubes_pooled + tubes_single)"
    reactions = f"({tubes} + 2 * ceil({tubes} / {s.wells_per_plate - 2}))"
    need_items = " UNION ALL ".join(
        f"SELECT scope, '{item}' AS item, ({expr})::DOUBLE AS need FROM scopes"
        for item, expr in (("swab", "registered"), ("tube_pooled", "tubes_pooled"), ("tube_single", "tubes_single"),
                           ("reagent_kit", reactions), ("extraction_kit", reactions),
                           ("box", f"ceil({tubes} / {s.tubes_per_box})")))
    frame = _frame(con,
        f"""
        WITH need_d AS (SELECT * FROM {need or "scope_need($rid, $as_of)"}),
        scopes AS (
            SELECT district AS scope, registered, tubes_pooled, tubes_single FROM need_d
            UNION ALL
            SELECT NULL, coalesce(sum(registered), 0), coalesce(sum(tubes_pooled), 0), coalesce(sum(tubes_single), 0)
            FROM need_d
        ), need AS ({need_items}),
        capacity AS (
            SELECT lab_id, daily_capacity_tubes AS cap, sum(daily_capacity_tubes) OVER () AS total FROM labs
        ), holders AS (
            SELECT u.holder, coalesce(u.holder_kind, 'unknown') AS holder_kind, u.item, u.counted_at, u.last_count,
                   u.used_since, greatest(u.last_count - u.used_since, 0)::BIGINT AS in_hand,
                   CASE u.holder_kind WHEN 'lab' THEN cn.need * c.cap / nullif(c.total, 0)
                                      WHEN 'district' THEN coalesce(dn.need, 0)
                                      WHEN 'depot' THEN cn.need END AS need_per_round
            FROM stock_use($as_of) u
            LEFT JOIN need cn ON cn.scope IS NULL AND cn.item = u.item
            LEFT JOIN need dn ON dn.scope = u.holder AND dn.item = u.item
            LEFT JOIN capacity c ON c.lab_id = u.holder
        ), city AS (
            SELECT '{CITY}' AS holder, '{CITY}' AS holder_kind, h.item, max(h.counted_at) AS counted_at,
                   sum(h.last_count)::BIGINT AS last_count, sum(h.used_since)::BIGINT AS used_since,
                   sum(h.in_hand)::BIGINT AS in_hand, any_value(cn.need) AS need_per_round
            FROM holders h LEFT JOIN need cn ON cn.scope IS NULL AND cn.item = h.item
            WHERE h.holder_kind <> 'unknown' GROUP BY h.item
        ), rows AS (SELECT * FROM city UNION ALL BY NAME SELECT * FROM holders)
        SELECT holder, holder_kind, item, counted_at, last_count, used_since, in_hand, need_per_round,
               in_hand / nullif(need_per_round, 0) AS days_in_hand,
               coalesce(in_hand / nullif(need_per_round, 0) < $min_days, FALSE) AS under_minimum
        FROM rows
        ORDER BY list_position(['{CITY}', 'lab', 'district', 'depot', 'unknown'], holder_kind), holder,
                 list_position({items}, item)
        """, {"as_of": as_of, "min_days": s.min_days, **({} if need else {"rid": round_id})})
    return frame.with_columns(
        pl.col("item").replace_strict(UNITS, return_dtype=pl.Utf8).alias("unit")).select(STOCK_FRAME_COLUMNS)


def stock_alerts(frame: pl.DataFrame, cfg: Config, round_id: str | None, as_of: datetime) -> list[OutboxAlert]:
    """A ``stock_low`` alert per row of :func:`stock_frame` under the minimum (a holder's item, or
    the city's total of it), raised at ``as_of``. Its subject names holder, item and the count's
    time: the same count under the minimum alerts once, a new count under it alerts again."""
    from reporting.alerts import STOCK_LOW, generic_alert

    zone = ZoneInfo(cfg.city.timezone)
    alerts = []
    for row in frame.filter(pl.col("under_minimum")).iter_rows(named=True):
        counted = row["counted_at"]
        where = "the city (every holder)" if row["holder_kind"] == CITY else f"{row['holder']} ({row['holder_kind']})"
        days = row["days_in_hand"]
        title = (f"Stock low: {row['item']} at {where}: {days:.1f} days of whole-population testing in hand "
                 f"(minimum {cfg.stock.min_days:g})")
        summary = (f"{where} holds {row['in_hand']:,} {row['unit']} of {row['item']} (counted "
                   f"{counted.astimezone(zone):%Y-%m-%d %H:%M}, {row['used_since']:,} used since); one whole-population "
                   f"round needs {row['need_per_round']:,.0f}: {days:.1f} days, under the minimum of "
                   f"{cfg.stock.min_days:g}. Deliver, or move stock from a depot.")
        subject = f"{row['holder']}:{row['item']}:{counted.astimezone(ZoneInfo('UTC')):%Y%m%dT%H%MZ}"
        facts = {"holder": row["holder"], "holder_kind": row["holder_kind"], "item": row["item"], "unit": row["unit"],
                 "counted_at": counted.isoformat(), "in_hand": row["in_hand"], "used_since": row["used_since"],
                 "need_per_round": round(row["need_per_round"], 1), "days_in_hand": round(days, 2),
                 "min_days": cfg.stock.min_days, "round_id": round_id}
        alerts.append(generic_alert(STOCK_LOW, subject, as_of, title=title, summary=summary,
                                    resource=f"{row['holder']}:{row['item']}", facts=facts, round_id=round_id))
    return alerts


def stock_low_alerts(con: duckdb.DuckDBPyConnection, cfg: Config, as_of: datetime) -> list[OutboxAlert]:
    """The timed rule (``reporting.timed_alerts.TIMED_ALERT_RULES``): reagents or consumables under the
    minimum days in hand at ``as_of``, judged for the round in view then
    (``sampling.rounds.round_in_view``). Nothing counted by ``as_of``: nothing to judge."""
    from sampling.rounds import round_in_view

    if not con.execute("SELECT count(*) FROM stock_counts WHERE counted_at <= ?", [as_of]).fetchall()[0][0]:
        return []
    chosen = round_in_view(con, as_of)
    round_id = chosen[0] if chosen else None
    return stock_alerts(stock_frame(con, cfg, round_id, as_of), cfg, round_id, as_of)


def stock_judged_at(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When stock taken without chain facts is judged: the latest fact of the chain
    (``reporting.summary.latest_fact_time``) or the latest count, whichever is later. Only the
    stock rule moves to it: a mistyped count in the future must not call every tube lost."""
    from reporting.summary import latest_fact_time

    (latest_count,) = con.execute("SELECT max(counted_at) FROM stock_counts").fetchone()
    times = [t for t in (latest_fact_time(con), latest_count) if t is not None]
    return max(times) if times else None


def stock_summary(frame: pl.DataFrame) -> list[dict]:
    """Per item (every item of :data:`ITEMS`): the city's total row (None: nobody counted it) and
    the worst holder (fewest days in hand, ties by name; None: no holder with a need)."""
    out = []
    for item in ITEMS:
        rows = frame.filter(pl.col("item") == item)
        city = rows.filter(pl.col("holder_kind") == CITY)
        worst = (rows.filter((pl.col("holder_kind") != CITY) & pl.col("days_in_hand").is_not_null())
                 .sort("days_in_hand", "holder").head(1))
        out.append({"item": item, "unit": UNITS[item], "city": city.row(0, named=True) if city.height else None,
                    "worst": worst.row(0, named=True) if worst.height else None})
    return out


def _days(row: dict | None) -> str:
    if row is None:
        return "no count"
    if row["days_in_hand"] is None:
        return "–"
    return ("⚠ " if row["under_minimum"] else "") + f"{row['days_in_hand']:.1f}"


def stock_dashboard_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str | None,
                          as_of: datetime) -> list[str]:
    """Markdown lines for the live round dashboard: per item, the city's days of
    whole-population testing in hand and the worst holder's, ⚠ under ``[stock] min_days``.
    Needs the views of ``warehouse.views.define_views``."""
    frame = stock_frame(con, cfg, round_id, as_of)
    lines = [f"## Stock: days of whole-population testing in hand (minimum {cfg.stock.min_days:g}; ⚠ under it)", ""]
    if frame.is_empty():
        return [*lines, "No stock counted yet (the `stock/` feed).", ""]
    lines += ["| item | city: days | city: in hand | worst holder | its days |", "|---|---:|---:|---|---:|"]
    for entry in stock_summary(frame):
        city, worst = entry["city"], entry["worst"]
        in_hand = f"{city['in_hand']:,} {entry['unit']}" if city else "–"
        lines.append(f"| {entry['item']} | {_days(city)} | {in_hand} | {worst['holder'] if worst else '–'} "
                     f"| {_days(worst) if worst else '–'} |")
    return [*lines, ""]
