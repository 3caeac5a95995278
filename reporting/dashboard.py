"""The live round dashboard (实时看板): one markdown per round that a coordinator keeps open in the
Prefect UI, rebuilt at the end of every ingest run (as of the latest fact) and of every report
run, published under one fixed key per round (``round-dashboard-<round>``, ``flows.dashboard``)
so the Artifacts page shows one entry, the latest, above the per-alert cards.

``round_dashboard(con, cfg, round_id, as_of)`` joins the sections of :data:`DASHBOARD_SECTIONS`
in order; each section is a function ``(con, cfg, round_id, as_of) -> list[str]`` (markdown
lines; an empty list leaves the section out). What it shows is what a coordinator chases, not
thousands of lines: counts, and per kind the top :data:`TOP_N` groups with the rest counted:

* the headline: tubes sealed, received, called; people sampled, coverage; positive pools, people
  to re-sample (urgent open, overdue) and ordinary orders open;
* per lab: tubes received, called, backlog (received, not refused, no final call), refused,
  plates valid and invalid;
* per lab today (``reporting.daily``): tubes received against the daily capacity (over capacity
  said in words), backlog, tested, TAT breaches; the districts and labs silent (漏报);
* invalid plates to chase: plate, lab, run, when, which control failed, tubes sent to re-run and
  how many still wait;
* anomalies to chase: lost boxes; late and lost tubes by box, site and collector; tubes over
  capacity or zone policy and sealed-zone residents sampled at a site, by site and collector;
  refused tubes by lab, box and condition; every other anomaly counted by kind;
* stock: per item the city's days of whole-population testing in hand and the worst holder's,
  under ``[stock] min_days`` marked (``reporting.stock``);
* alerts pending, or raised in the last :data:`RECENT_ALERT_HOURS` hours before ``as_of``;
* where to look next: the artifact keys of the pools table, the summaries and the report.

Aggregate and masked only (DESIGN §7): a collector id is masked like any id (``mask_id``), no
name, ID or phone is ever read. Every time is city time with its offset. Everything is judged
at ``as_of`` (the facts' time, never the clock), so the same warehouse gives the same page.
Needs the views of :func:`warehouse.views.define_views` (a whole city: ``snapshot=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import duckdb

from reporting.alerts import (
    FILE_REFUSED,
    GENERIC_KINDS,
    POOL_POSITIVE,
    POSITIVE_SINGLE,
    URGENT_OVERDUE,
    artifact_slug,
    city_time_text,
)
from lab.calling import pin_tube_calls, unpin_tube_calls
from reporting.coverage import define_coverage_views
from reporting.daily import daily_dashboard_lines
from reporting.masking import define_masking_macros
from reporting.stock import stock_dashboard_lines
from kernel.config import Config
from kernel.sql import sql_in_list, sql_text_list

#: how many groups each list to chase shows (the rest are counted)
TOP_N = 10
#: alerts raised this many hours before ``as_of`` are shown (pending ones always)
RECENT_ALERT_HOURS = 6

DashboardSection = Callable[[duckdb.DuckDBPyConnection, Config, str, datetime], list[str]]


def dashboard_key(round_id: str) -> str:
    """The dashboard's artifact key: one per round, fixed (Prefect keeps its versions)."""
    return "round-dashboard-" + artifact_slug(round_id)


def positive_pools_key(round_id: str) -> str:
    """The key of the table of every positive pool of a round (updated with the dashboard)."""
    return "positive-pools-" + artifact_slug(round_id)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list, right: int = 0) -> list[str]:
    """A markdown table; the last ``right`` columns are numbers (right-aligned)."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    return ([f"| {' | '.join(header)} |", f"|{'|'.join(align)}|"]
            + [f"| {' | '.join(_cell(v) for v in row)} |" for row in rows])


def _top(title: str, header: list[str], rows: list, *, groups: int, items: int, unit: str, right: int,
         empty: str | None = None) -> list[str]:
    """One list to chase: a heading with the totals, the first rows, the rest counted."""
    if not rows:
        return [f"### {title}: none", ""] if empty is None else [f"### {title}: none", "", empty, ""]
    lines = [f"### {title}: {items:,} {unit} in {groups:,} group(s)", "", *_table(header, rows, right), ""]
    if groups > len(rows):
        lines += [f"… and {groups - len(rows):,} more group(s).", ""]
    return lines


# --- sections ------------------------------------------------------------------------------------

def headline_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[str]:
    zone = cfg.city.timezone
    starts, ends = con.execute("SELECT starts_at, ends_at FROM rounds WHERE round_id = ?", [round_id]).fetchone()
    state = "open" if starts <= as_of < ends else ("closed" if as_of >= ends else "not started")
    opened, sealed, received, refused, called = con.execute(
        """SELECT count(*) FILTER (WHERE c.collected_at <= $as_of), count(*) FILTER (WHERE c.sealed_at <= $as_of),
                  count(*) FILTER (WHERE c.received_at <= $as_of),
                  count(*) FILTER (WHERE c.refused AND c.received_at <= $as_of),
                  count(k.tube_barcode)
           FROM custody c LEFT JOIN (SELECT tube_barcode FROM tube_calls($as_of) WHERE final) k USING (tube_barcode)
           WHERE c.round_id = $rid""", {"rid": round_id, "as_of": as_of}).fetchone()
    city = con.execute("SELECT registered, sampled, resulted, coverage FROM coverage($rid, $as_of) WHERE level = 'city'",
                       {"rid": round_id, "as_of": as_of}).fetchone() or (0, 0, 0, None)
    pools, flagged, urgent_open, overdue, ordinary_open = con.execute(
        """SELECT count(DISTINCT source_tube) FILTER (WHERE urgent_reason(reason)),
                  count(DISTINCT person_key) FILTER (WHERE urgent_reason(reason)),
                  count(DISTINCT person_key) FILTER (WHERE urgent_reason(reason) AND NOT fulfilled),
                  count(DISTINCT person_key) FILTER (WHERE urgent_reason(reason) AND NOT fulfilled AND due_by < $as_of),
                  count(DISTINCT person_key) FILTER (WHERE NOT urgent_reason(reason) AND NOT fulfilled)
           FROM resample_orders($as_of) WHERE round_id = $rid""", {"rid": round_id, "as_of": as_of}).fetchone()
    (singles,) = con.execute(
        """SELECT count(*) FROM tube_calls($as_of) k JOIN custody c USING (tube_barcode)
           WHERE c.round_id = $rid AND c.capacity = 1 AND viral_call(k.call) AND k.final""",
        {"rid": round_id, "as_of": as_of}).fetchone()
    registered, sampled, resulted, coverage = city
    return [
        f"# Live dashboard: round {round_id}",
        "",
        f"As of **{city_time_text(as_of, zone)}** (the latest fact ingested, or the report's time). "
        f"Round window {city_time_text(starts, zone)} – {city_time_text(ends, zone)}: **{state}**.",
        "",
        *_table(["tubes opened", "sealed", "received", "refused", "called (final)", "awaiting a call"],
                [(opened, sealed, received, refused, called, max(received - refused - called, 0))], right=6),
        "",
        *_table(["registered in scope", "people sampled", "resulted", "coverage"],
                [(registered, sampled, resulted, f"{100 * (coverage or 0):.2f} %")], right=4),
        "",
        *_table(["positive pools", "people flagged", "urgent re-samples open", "of them overdue",
                 "single tubes positive", "ordinary re-samples open"],
                [(pools, flagged, urgent_open, overdue, singles, ordinary_open)], right=6),
        "",
    ]


def lab_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[str]:
    """Per lab, from the custody and calling rules (the per-day load is ``daily_dashboard_lines``)."""
    rows = con.execute(
        """
        WITH tubes_of AS (
            SELECT c.lab_id, c.tube_barcode, c.refused, k.tube_barcode IS NOT NULL AS called
            FROM custody c LEFT JOIN (SELECT tube_barcode FROM tube_calls($as_of) WHERE final) k USING (tube_barcode)
            WHERE c.round_id = $rid AND c.received_at <= $as_of
        ), t AS (
            SELECT lab_id, count(*) AS received, count(*) FILTER (WHERE called) AS called,
                   count(*) FILTER (WHERE NOT refused AND NOT called) AS backlog, count(*) FILTER (WHERE refused) AS refused
            FROM tubes_of GROUP BY lab_id
        ), plates AS (
            SELECT q.lab_id, count(*) FILTER (WHERE q.valid) AS valid, count(*) FILTER (WHERE NOT q.valid) AS invalid
            FROM plate_qc q SEMI JOIN (
                SELECT DISTINCT tr.lab_id, tr.run_id, tr.plate_id FROM tube_runs tr
                JOIN tubes tb ON tb.tube_barcode = tr.tube_barcode AND tb.round_id = $rid
            ) p USING (lab_id, run_id, plate_id)
            WHERE q.finished_at <= $as_of GROUP BY q.lab_id
        )
        SELECT coalesce(t.lab_id, p.lab_id) AS lab_id, l.name, l.daily_capacity_tubes,
               coalesce(t.received, 0), coalesce(t.called, 0), coalesce(t.backlog, 0), coalesce(t.refused, 0),
               coalesce(p.valid, 0), coalesce(p.invalid, 0)
        FROM t FULL JOIN plates p USING (lab_id) LEFT JOIN labs l ON l.lab_id = coalesce(t.lab_id, p.lab_id)
        ORDER BY 1
        """, {"rid": round_id, "as_of": as_of}).fetchall()
    if not rows:
        return ["## Labs: no tube of the round received yet", ""]
    return ["## Labs", "",
            *_table(["lab", "name", "daily capacity", "received", "called", "backlog (received, not called)",
                     "refused", "plates valid", "plates invalid"], rows, right=7),
            ""]


def invalid_plate_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[str]:
    """Plates whose controls failed (``plate_qc``): which, why, how many tubes went to re-run and
    how many of them still wait for a valid run."""
    rows = con.execute(
        """
        WITH plates AS (
            SELECT DISTINCT tr.lab_id, tr.run_id, tr.plate_id FROM tube_runs tr
            JOIN tubes tb ON tb.tube_barcode = tr.tube_barcode AND tb.round_id = $rid
        ), bad AS (
            SELECT q.* FROM plate_qc q SEMI JOIN plates USING (lab_id, run_id, plate_id)
            WHERE NOT q.valid AND q.finished_at <= $as_of
        ), waiting AS (
            SELECT tr.lab_id, tr.run_id, tr.plate_id, count(*) AS waiting
            FROM tube_runs tr SEMI JOIN bad USING (lab_id, run_id, plate_id)
            JOIN tube_calls($as_of) k USING (tube_barcode)
            WHERE k.call = 'rerun' GROUP BY ALL
        )
        SELECT b.plate_id, b.lab_id, b.run_id, b.finished_at, b.qc_reason, b.tube_wells, coalesce(w.waiting, 0),
               count(*) OVER () AS plates, sum(b.tube_wells) OVER () AS tubes
        FROM bad b LEFT JOIN waiting w USING (lab_id, run_id, plate_id)
        ORDER BY b.finished_at DESC, b.lab_id, b.run_id, b.plate_id
        LIMIT $n
        """, {"rid": round_id, "as_of": as_of, "n": TOP_N}).fetchall()
    if not rows:
        return ["## Invalid plates: none", ""]
    plates, tubes = rows[0][7], int(rows[0][8] or 0)
    zone = cfg.city.timezone
    lines = [f"## Invalid plates to chase: {plates:,} plate(s), {tubes:,} tube(s) sent to re-run", "",
             *_table(["plate", "lab", "run", "finished", "why (controls)", "tubes to re-run", "still waiting"],
                     [(p, lab, run, city_time_text(at, zone), why, n, waiting)
                      for p, lab, run, at, why, n, waiting, _, _ in rows], right=2), ""]
    if plates > len(rows):
        lines += [f"… and {plates - len(rows):,} more plate(s) (the report's anomalies.parquet lists each).", ""]
    return lines


def anomaly_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[str]:
    """The anomalies as lists to chase, grouped where the coordinator acts (a box, a site, a
    collector, a lab), top :data:`TOP_N` per list; every other kind counted."""
    define_masking_macros(con)
    zone = cfg.city.timezone
    p = {"rid": round_id, "as_of": as_of, "n": TOP_N}
    lines = ["## Anomalies to chase", ""]

    boxes = con.execute(
        """SELECT b.box_id, b.site_id, s.district, b.planned_lab_id, b.tubes, b.people, b.departed_at,
                  count(*) OVER (), sum(b.tubes) OVER ()
           FROM box_lost($as_of) b LEFT JOIN sites s USING (site_id) WHERE b.round_id = $rid
           ORDER BY b.people DESC, b.box_id LIMIT $n""", p).fetchall()
    lines += _top("Boxes lost", ["box", "site", "district", "planned lab", "departed", "tubes", "people"],
                  [(b, s, d, lab, city_time_text(dep, zone), t, n) for b, s, d, lab, t, n, dep, _, _ in boxes],
                  groups=boxes[0][7] if boxes else 0, items=int(boxes[0][8]) if boxes else 0, unit="tube(s)", right=2)

    # late (sealed, still not received at as_of) and lost tubes outside a lost box, where they wait
    chase = con.execute(
        """
        WITH flagged AS (
            SELECT a.tube_barcode, bool_or(a.kind = 'tube_lost') AS lost
            FROM custody_anomalies($as_of) a JOIN custody c USING (round_id, tube_barcode)
            WHERE a.round_id = $rid AND (a.kind = 'tube_lost'
                  OR (a.kind = 'tube_late' AND (c.received_at IS NULL OR c.received_at > $as_of)))
            GROUP BY a.tube_barcode
        ), outside_lost_box AS (
            SELECT f.*, c.box_id, c.site_id, c.sealed_at FROM flagged f JOIN custody c USING (tube_barcode)
            WHERE c.round_id = $rid AND NOT EXISTS (
                SELECT 1 FROM box_lost($as_of) b WHERE b.round_id = $rid AND b.box_id = c.box_id)
        ), who AS (
            -- the collector who sealed the tube (else who opened it)
            SELECT tube_barcode, arg_min(collector_id, (event <> 'seal', scanned_at)) AS collector_id
            FROM scans WHERE round_id = $rid AND tube_barcode IN (SELECT tube_barcode FROM outside_lost_box)
            GROUP BY tube_barcode
        )
        SELECT coalesce(o.box_id, 'not boxed'), o.site_id, mask_id(w.collector_id),
               count(*) FILTER (WHERE NOT o.lost), count(*) FILTER (WHERE o.lost), min(o.sealed_at),
               count(*) OVER (), sum(count(*)) OVER ()
        FROM outside_lost_box o LEFT JOIN who w USING (tube_barcode)
        GROUP BY ALL ORDER BY count(*) FILTER (WHERE o.lost) DESC, count(*) DESC, min(o.sealed_at), 1, 2, 3
        LIMIT $n
        """, p).fetchall()
    lines += _top("Tubes late or lost (outside lost boxes), by box, site and collector",
                  ["box", "site", "collector (masked)", "oldest sealed", "late, not received", "lost"],
                  [(b, s, c, city_time_text(at, zone), late, lost) for b, s, c, late, lost, at, _, _ in chase],
                  groups=chase[0][6] if chase else 0, items=int(chase[0][7]) if chase else 0, unit="tube(s)", right=2)

    policy = con.execute(
        """
        WITH a AS (
            SELECT kind, tube_barcode FROM tube_anomalies
            WHERE round_id = $rid AND kind IN ('over_capacity', 'above_zone_policy', 'sealed_at_site')
              AND (detected_at IS NULL OR detected_at <= $as_of)  -- a tube not sealed yet: found at its scans
        ), who AS (
            SELECT tube_barcode, arg_min(collector_id, (event <> 'seal', scanned_at)) AS collector_id
            FROM scans WHERE round_id = $rid AND tube_barcode IN (SELECT tube_barcode FROM a) GROUP BY tube_barcode
        )
        SELECT a.kind, t.site_id, s.district, mask_id(w.collector_id), count(*), sum(t.members),
               count(*) OVER (), sum(count(*)) OVER ()
        FROM a JOIN tubes t ON t.round_id = $rid AND t.tube_barcode = a.tube_barcode
        LEFT JOIN sites s ON s.site_id = t.site_id LEFT JOIN who w ON w.tube_barcode = a.tube_barcode
        GROUP BY ALL ORDER BY count(*) DESC, 1, 2, 4 LIMIT $n
        """, p).fetchall()
    lines += _top("Tubes over capacity or zone policy, sealed-zone residents sampled at a site",
                  ["kind", "site", "district", "collector (masked)", "tubes", "people in them"],
                  [r[:6] for r in policy], groups=policy[0][6] if policy else 0,
                  items=int(policy[0][7]) if policy else 0, unit="tube(s)", right=2)

    refused = con.execute(
        """SELECT lab_id, coalesce(received_box_id, box_id), site_id, condition, count(*), sum(members),
                  count(*) OVER (), sum(count(*)) OVER ()
           FROM custody WHERE round_id = $rid AND refused AND received_at <= $as_of
           GROUP BY ALL ORDER BY count(*) DESC, 1, 2, 4 LIMIT $n""", p).fetchall()
    lines += _top("Tubes refused at the lab (their people are re-sampled)",
                  ["lab", "box", "site", "condition", "tubes", "people"], [r[:6] for r in refused],
                  groups=refused[0][6] if refused else 0, items=int(refused[0][7]) if refused else 0,
                  unit="tube(s)", right=2)

    # listed above (tube_late is listed only while the tube waits: counted here with those received late)
    shown = ("box_lost", "tube_lost", "over_capacity", "above_zone_policy", "sealed_at_site")
    others = con.execute(
        f"""SELECT kind, count(*) FROM (
                SELECT kind, round_id, detected_at FROM tube_anomalies
                UNION ALL SELECT kind, round_id, detected_at FROM custody_anomalies($as_of)
                UNION ALL SELECT kind, round_id, detected_at FROM lab_anomalies($as_of))
            WHERE (round_id = $rid OR round_id IS NULL) AND (detected_at IS NULL OR detected_at <= $as_of)
              AND kind NOT IN {sql_in_list(list(shown))} AND kind <> 'plate_invalid'
            GROUP BY kind ORDER BY kind""", {"rid": round_id, "as_of": as_of}).fetchall()
    lines += ["### Other anomalies by kind (the report's anomalies.parquet lists each)", ""]
    lines += [*_table(["kind", "count"], others, right=1), ""] if others else ["none", ""]
    return lines


def _alert_text(kind: str, subject: str, payload: dict) -> str:
    if kind in GENERIC_KINDS:
        return payload.get("title", subject)
    if kind == POOL_POSITIVE:
        return f"Positive pool {subject}: {payload.get('people', 0)} people to re-sample (lab {payload.get('lab_id')})"
    if kind == POSITIVE_SINGLE:
        return f"Positive single tube {subject}: a person positive (lab {payload.get('lab_id')})"
    if kind == URGENT_OVERDUE:
        return f"Urgent re-samples overdue: pool {subject}, {payload.get('people_overdue', 0)} people"
    if kind == FILE_REFUSED:
        return f"File refused: {payload.get('file_name', subject[:16])}"
    return subject


def alert_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[str]:
    """The outbox's alerts of the round (and refused files): every pending one, and those raised
    in the last :data:`RECENT_ALERT_HOURS` hours before ``as_of``; all of the round counted by kind."""
    import json

    since = as_of - timedelta(hours=RECENT_ALERT_HOURS)
    rows = con.execute(
        """SELECT kind, subject, payload, raised_at, state, count(*) OVER ()
           FROM alert_outbox
           WHERE (round_id = $rid OR round_id IS NULL) AND raised_at <= $as_of
             AND (state = 'pending' OR raised_at > $since)
           ORDER BY raised_at DESC, alert_id LIMIT $n""",
        {"rid": round_id, "as_of": as_of, "since": since, "n": 2 * TOP_N}).fetchall()
    counts = con.execute(
        """SELECT kind, count(*), count(*) FILTER (WHERE state = 'pending') FROM alert_outbox
           WHERE round_id = $rid AND raised_at <= $as_of GROUP BY kind ORDER BY kind""",
        {"rid": round_id, "as_of": as_of}).fetchall()
    zone = cfg.city.timezone
    lines = [f"## Alerts pending, or raised since {city_time_text(since, zone)}", ""]
    if rows:
        lines += _table(["raised", "kind", "what", "state"],
                        [(city_time_text(at, zone), kind, _alert_text(kind, subject, json.loads(payload)), state)
                         for kind, subject, payload, at, state, _ in rows])
        if rows[0][5] > len(rows):
            lines += ["", f"… and {rows[0][5] - len(rows):,} more."]
    else:
        lines.append("none")
    if counts:
        lines += ["", "Every alert of the round so far, by kind: "
                  + ", ".join(f"{kind} {n:,}" + (f" ({pending:,} pending)" if pending else "")
                              for kind, n, pending in counts) + "."]
    return lines + [""]


def link_lines(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[str]:
    """Where to look next: artifact keys (the UI's Artifacts page, or ``/artifacts/key/<key>``)."""
    report = f" (pages on {cfg.report.link_base})" if cfg.report.link_base else ""
    return [
        "## Where to look next",
        "",
        f"- `{positive_pools_key(round_id)}`: every positive pool of the round in one table, updated with this dashboard",
        "- `chain-summary`, `ingest-summary`, `ingest-files`: the latest ingest run (files, rows, quarantine)",
        f"- `round-report`, `report-link`{report}, `coverage-by-district`: the nightly report (report.html, "
        "coverage per district and grid, the district packs' counts)",
        "- one card per alert: `positive-pool-<tube>`, `positive-single-<tube>`, `overdue-<tube>`, "
        "`file-refused-<hash>`, " + ", ".join(f"`{k.artifact_prefix}…`" for k in GENERIC_KINDS.values()),
        "- the people behind these counts are in the report's worklists (re-sampling orders, untested, "
        "door-to-door lists), for authorised staff only",
        "",
    ]


#: the dashboard's sections, in order. Each ``(con, cfg, round_id, as_of) -> list[str]``.
DASHBOARD_SECTIONS: list[DashboardSection] = [
    headline_lines,
    lab_lines,
    # issue 14: per lab today's load, backlog, utilisation, TAT breaches; silent districts and labs
    daily_dashboard_lines,
    # issue 14: reagents and consumables, days of whole-population testing in hand (reporting.stock)
    stock_dashboard_lines,
    invalid_plate_lines,
    anomaly_lines,
    alert_lines,
    link_lines,
]


def round_dashboard(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> str:
    """The dashboard of one round as of ``as_of``: every section of :data:`DASHBOARD_SECTIONS`.
    Every section judges at ``as_of``, so ``tube_calls(as_of)`` is derived once for them all
    (``lab.calling.pin_tube_calls``, as the report does: derived inside coverage at 25.7 M
    residents it ran out of the default 3.5 GB memory limit) and put back afterwards. Needs the
    snapshot's views."""
    if not con.execute("SELECT 1 FROM rounds WHERE round_id = ?", [round_id]).fetchall():
        raise ValueError(f"round {round_id} is not open in this warehouse")
    define_coverage_views(con)
    define_masking_macros(con)
    lines: list[str] = []
    pin_tube_calls(con, as_of)
    try:
        for section in DASHBOARD_SECTIONS:
            lines += section(con, cfg, round_id, as_of)
    finally:
        unpin_tube_calls(con)
    return "\n".join(lines).rstrip() + "\n"


#: a round is live on the dashboards from its start until this long after its window
DASHBOARD_AFTER_ROUND = timedelta(days=2)


def dashboard_rounds(con: duckdb.DuckDBPyConnection, as_of: datetime) -> list[str]:
    """The rounds a dashboard is rebuilt for at ``as_of``: started, not over for more than
    :data:`DASHBOARD_AFTER_ROUND` (its re-samples), and with at least one scan."""
    return [r[0] for r in con.execute(
        """SELECT r.round_id FROM rounds r
           WHERE r.starts_at <= $as_of AND r.ends_at + to_microseconds($after) > $as_of
             AND EXISTS (SELECT 1 FROM scans s WHERE s.round_id = r.round_id)
           ORDER BY r.starts_at, r.round_id""",
        {"as_of": as_of, "after": int(DASHBOARD_AFTER_ROUND.total_seconds() * 1_000_000)}).fetchall()]


def positive_pool_rows(con: duckdb.DuckDBPyConnection, cfg: Config, round_id: str, as_of: datetime) -> list[dict]:
    """Every positive pool of the round the outbox announced by ``as_of``, one row each (counts,
    places, city times; never a person): the table that stands for the per-pool cards. People
    still to re-sample and overdue come from ``resample_orders`` on those pools' people only."""
    pools = con.execute(
        """SELECT subject, payload FROM alert_outbox WHERE kind = $kind AND round_id = $rid AND raised_at <= $as_of
           ORDER BY raised_at, subject""", {"kind": POOL_POSITIVE, "rid": round_id, "as_of": as_of}).fetchall()
    if not pools:
        return []
    import json

    tubes = [t for t, _ in pools]
    theirs = [r[0] for r in con.execute(
        f"""SELECT DISTINCT tube_barcode FROM scans WHERE person_key IN
                (SELECT person_key FROM tube_members WHERE tube_barcode IN {sql_in_list(tubes)})
            UNION SELECT unnest({sql_text_list(tubes)}) ORDER BY 1""").fetchall()]
    open_by_pool = {tube: (open_, overdue) for tube, open_, overdue in con.execute(
        f"""SELECT source_tube, count(DISTINCT person_key) FILTER (WHERE NOT fulfilled),
                   count(DISTINCT person_key) FILTER (WHERE NOT fulfilled AND due_by < $as_of)
            FROM resample_orders($as_of, tubes := {sql_text_list(theirs)})
            WHERE urgent_reason(reason) AND source_tube IN {sql_in_list(tubes)} GROUP BY source_tube""",
        {"as_of": as_of}).fetchall()}
    zone = cfg.city.timezone
    rows = []
    for tube, payload in pools:
        p = json.loads(payload)
        open_, overdue = open_by_pool.get(tube, (0, 0))
        rows.append({
            "tube": tube, "call": p["call"], "lab": p["lab_id"], "run": p["run_id"], "plate": p["plate_id"],
            "called at": city_time_text(datetime.fromisoformat(p["called_at"]), zone),
            "due by": city_time_text(datetime.fromisoformat(p["due_by"]), zone) if p.get("due_by") else "–",
            "people": p["people"], "grids": p["grids"], "still to re-sample": open_, "overdue": overdue,
        })
    return rows
