"""Rounds (轮次): one screening campaign with a time window, a scope and a default pool size.

A scan belongs to the round whose window holds it; windows never overlap, so that is at most
one round. A re-sample (a single tube of a person with an open re-sampling order) belongs to
that order's round whatever its time: re-samples often happen after the window has closed. Its
scan may reach the inbox before the results that order it: a single-tube scan in no round then
waits (``waiting_scans``) and joins the order's round in the transaction of the receipt or
results file that raises the order; it is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from kernel.rules import StageRule
from kernel.scope import scoped_to_tubes


class RoundRefused(ValueError):
    """A round cannot be opened; the message says why."""


@dataclass(frozen=True)
class Round:
    round_id: str
    starts_at: datetime
    ends_at: datetime
    districts: tuple[str, ...] | None
    pool_size: int


def check_round(rnd: Round, allowed_sizes: tuple[int, ...], con: duckdb.DuckDBPyConnection) -> None:
    """Refuse a round whose window is empty, whose pool size is not allowed, whose id exists,
    or whose window overlaps an open round."""
    if not rnd.round_id.strip():
        raise RoundRefused("round id must not be empty")
    if rnd.starts_at.tzinfo is None or rnd.ends_at.tzinfo is None:
        raise RoundRefused("round start and end need a time zone")
    if rnd.ends_at <= rnd.starts_at:
        raise RoundRefused(f"round {rnd.round_id}: end {rnd.ends_at.isoformat()} is not after start")
    if rnd.pool_size not in allowed_sizes:
        raise RoundRefused(f"round {rnd.round_id}: pool size {rnd.pool_size} not one of {list(allowed_sizes)}")
    existing = con.execute("SELECT 1 FROM rounds WHERE round_id = ?", [rnd.round_id]).fetchall()
    if existing:
        raise RoundRefused(f"round {rnd.round_id} is already open")
    overlap = con.execute(
        "SELECT round_id FROM rounds WHERE starts_at < ? AND ? < ends_at ORDER BY starts_at",
        [rnd.ends_at, rnd.starts_at],
    ).fetchall()
    if overlap:
        raise RoundRefused(
            f"round {rnd.round_id}: window overlaps round(s) {', '.join(r[0] for r in overlap)}"
        )


def round_open_at(con: duckdb.DuckDBPyConnection, when: datetime) -> str | None:
    """The round whose window holds ``when`` (windows never overlap), or None: a reminder sweep
    acts on that round only, never on a round that is over (a replayed one, yesterday's)."""
    rows = con.execute("SELECT round_id FROM rounds WHERE starts_at <= ? AND ? < ends_at", [when, when]).fetchall()
    return rows[0][0] if rows else None


def round_in_view(con: duckdb.DuckDBPyConnection, when: datetime) -> tuple[str, str] | None:
    """The round a capacity plan or a stock judgement at ``when`` is about, and why: the round
    open at ``when``; else the latest that had started by then; else the latest of all (a plan
    made before any round started). None: no round at all."""
    rows = con.execute(
        """SELECT round_id, CASE WHEN starts_at <= $w AND $w < ends_at THEN 'open at as_of'
                                 WHEN starts_at <= $w THEN 'the latest round (none open at as_of)'
                                 ELSE 'the latest round (none started by as_of)' END
           FROM rounds
           ORDER BY (starts_at <= $w AND $w < ends_at) DESC, (starts_at <= $w) DESC, starts_at DESC, round_id
           LIMIT 1""", {"w": when}).fetchall()
    return (rows[0][0], rows[0][1]) if rows else None


#: The rule "which round does a scan belong to", as SQL over ``incoming`` (the file's checked
#: scans with ``person_key``, which the rule's output keeps: the key is computed once a row);
#: the round whose window holds the scan; else, for a single tube
#: (capacity 1) of a person with a re-sampling order, that order's (latest) round; else a seal
#: follows its tube's round (from this file or from stored scans).
_ASSIGN_TEMPLATE = """
WITH windowed AS (
    SELECT i.*, w.round_id AS window_round
    FROM incoming i LEFT JOIN rounds w ON i.scanned_at >= w.starts_at AND i.scanned_at < w.ends_at
), candidates AS (
    SELECT DISTINCT person_key FROM windowed
    WHERE window_round IS NULL AND event IN ('add', 'void') AND capacity = 1
), ordered AS ({ordered}
), by_row AS (
    SELECT wd.* EXCLUDE (window_round), coalesce(wd.window_round, o.round_id) AS row_round,
           CASE WHEN coalesce(wd.window_round, o.round_id) IS NOT NULL
                THEN (wd.window_round IS NULL AND o.round_id IS NOT NULL) END AS row_resample
    FROM windowed wd
    LEFT JOIN ordered o ON wd.window_round IS NULL AND wd.event IN ('add', 'void') AND wd.capacity = 1
                       AND o.person_key = wd.person_key
), tube_round AS (
    SELECT tube_barcode, arg_max(round_id, resample) AS round_id, bool_or(resample) AS resample FROM (
        SELECT tube_barcode, row_round AS round_id, row_resample AS resample FROM by_row WHERE row_round IS NOT NULL
        UNION ALL
        SELECT DISTINCT tube_barcode, round_id, resample FROM scans
        WHERE tube_barcode IN (SELECT tube_barcode FROM by_row WHERE row_round IS NULL)
    ) GROUP BY tube_barcode
)
SELECT b.* EXCLUDE (row_round, row_resample),
       coalesce(b.row_round, t.round_id) AS round_id,
       coalesce(b.row_resample, t.resample, FALSE) AS resample,
       -- in no round yet, but maybe a re-sample whose order is not raised yet: a single-tube
       -- person scan, or a seal or void of a tube whose person scan waits: it waits too
       coalesce(b.row_round, t.round_id) IS NULL AND (
           (b.event IN ('add', 'void') AND b.capacity = 1)
           OR b.tube_barcode IN (SELECT tube_barcode FROM by_row
                                 WHERE row_round IS NULL AND event IN ('add', 'void') AND capacity = 1)
           OR b.tube_barcode IN (SELECT tube_barcode FROM waiting_scans)) AS waiting
FROM by_row b LEFT JOIN tube_round t ON b.row_round IS NULL AND t.tube_barcode = b.tube_barcode
"""

_NO_ORDERS = """
    SELECT NULL::UHUGEINT AS person_key, NULL::VARCHAR AS round_id WHERE false"""

#: a single-tube person scan of ``incoming i`` outside every round's window (a re-sample candidate)
_OUTSIDE_WINDOWS = """i.event IN ('add', 'void') AND i.capacity = 1
  AND NOT EXISTS (SELECT 1 FROM rounds w WHERE i.scanned_at >= w.starts_at AND i.scanned_at < w.ends_at)"""
#: the people the rule may look up: of the single-tube person scans outside every window
CANDIDATE_PEOPLE_SQL = f"""
SELECT DISTINCT i.person_key FROM incoming i WHERE i.person_key IS NOT NULL AND {_OUTSIDE_WINDOWS}
"""
#: every stored tube of those people (``round_rule_people``): the facts their orders derive from
CANDIDATE_TUBES_SQL = """
SELECT DISTINCT tube_barcode FROM scans WHERE person_key IN (SELECT person_key FROM round_rule_people)
"""
#: the round of each candidate's latest order (by round start), judged at infinity: an order
#: raised at any time, fulfilled or not, takes its person's re-sample
_ORDERED = """
    SELECT ro.person_key, arg_max(ro.round_id, rd.starts_at) AS round_id
    FROM resample_orders(TIMESTAMPTZ 'infinity') ro JOIN rounds rd USING (round_id)
    WHERE ro.person_key IN (SELECT person_key FROM round_rule_people)
    GROUP BY ro.person_key"""


def look_up_orders(con: duckdb.DuckDBPyConnection) -> int:
    """The round rule's order look-up for the candidates of ``incoming`` into the temporary
    table ``round_rule_orders`` (``person_key``, ``round_id``); returns its rows. The orders are
    derived by ``resample_orders`` itself, over the facts of the candidates' own stored tubes
    (``kernel.scope.scoped_to_tubes``): an order of a person is raised by one of their tubes
    and judged on their tubes, so those facts give the same orders as the whole city's, and a
    next-morning file costs its people's tubes, not the city's (at 25.7 M residents the
    whole-city rule took minutes a file)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE round_rule_people AS {CANDIDATE_PEOPLE_SQL}")
    try:
        if not con.execute("SELECT count(*) FROM round_rule_people").fetchall()[0][0]:
            con.execute(f"CREATE OR REPLACE TEMP TABLE round_rule_orders AS {_NO_ORDERS}")
        else:
            with scoped_to_tubes(con, CANDIDATE_TUBES_SQL):
                con.execute(f"CREATE OR REPLACE TEMP TABLE round_rule_orders AS {_ORDERED}")
    finally:
        con.execute("DROP TABLE IF EXISTS round_rule_people")
    return con.execute("SELECT count(*) FROM round_rule_orders").fetchall()[0][0]


def assign_round_sql(con: duckdb.DuckDBPyConnection) -> str:
    """The round rule over ``incoming``, its orders looked up first (:func:`look_up_orders`)."""
    look_up_orders(con)
    return _ASSIGN_TEMPLATE.format(ordered="SELECT person_key, round_id FROM round_rule_orders")


#: the same rule when no scan lies outside every window (no order needs looking up)
ASSIGN_BY_WINDOW_SQL = _ASSIGN_TEMPLATE.format(ordered=_NO_ORDERS)
#: true when every single-tube person scan lies in some round's window
ALL_IN_WINDOWS_SQL = f"SELECT count(*) = 0 FROM incoming i WHERE {_OUTSIDE_WINDOWS}"

OUTSIDE_ROUNDS = "scanned outside every open round"

#: Every scan gets its round; a single-tube scan in none waits for its order (``waiting_scans``,
#: placed by ``warehouse.writer.assign_waiting_scans`` when the order appears); any other scan
#: that belongs to no round is quarantined.
ROUND_RULE = StageRule(sql=assign_round_sql, required_column="round_id", column="scanned_at", reason=OUTSIDE_ROUNDS,
                       quick_sql=ASSIGN_BY_WINDOW_SQL, quick_when_sql=ALL_IN_WINDOWS_SQL, hold_column="waiting")
