"""Aggregate figures of the collect, deliver and test links for the coordinator's artifacts.

Counts only: no person, no ID, no phone ever leaves this module."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import duckdb


def latest_fact_time(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When the latest thing the warehouse knows of happened: the last scan, departure,
    receipt or run end. A summary after an ingest is judged there, not at the wall clock: in a
    replay (or a late inbox) the machine's clock would call every tube lost and every order
    overdue hours before they are."""
    (latest,) = con.execute(
        """SELECT greatest((SELECT max(scanned_at) FROM scans),
                           (SELECT max(coalesce(departed_at, packed_at)) FROM manifests),
                           (SELECT max(received_at) FROM receipts),
                           (SELECT max(finished_at) FROM results))"""
    ).fetchone()
    return latest


def chain_summary(con: duckdb.DuckDBPyConnection, as_of: datetime) -> dict:
    """Per round: tubes opened and sealed, people sampled (registered and outside the register),
    tubes received and refused; anomalies by kind (judged at ``as_of``)."""
    rounds = con.execute(
        """
        WITH t AS (
            SELECT round_id, count(*) AS tubes_opened, count(sealed_at) AS tubes_sealed,
                   count(received_at) AS tubes_received, count(*) FILTER (WHERE refused) AS tubes_refused
            FROM custody GROUP BY round_id
        ), p AS (
            SELECT tm.round_id,
                   count(DISTINCT tm.person_key) FILTER (WHERE reg.person_key IS NOT NULL) AS people_sampled,
                   count(DISTINCT tm.person_key) FILTER (WHERE reg.person_key IS NULL) AS outside_register
            FROM tube_members tm LEFT JOIN register reg USING (person_key) GROUP BY tm.round_id
        )
        SELECT r.round_id, coalesce(t.tubes_opened, 0), coalesce(t.tubes_sealed, 0),
               coalesce(t.tubes_received, 0), coalesce(t.tubes_refused, 0),
               coalesce(p.people_sampled, 0), coalesce(p.outside_register, 0)
        FROM rounds r LEFT JOIN t USING (round_id) LEFT JOIN p USING (round_id) ORDER BY r.starts_at
        """
    ).fetchall()
    anomalies = con.execute(
        """SELECT kind, count(*) FROM (
               SELECT kind FROM tube_anomalies UNION ALL SELECT kind FROM custody_anomalies(?)
               UNION ALL SELECT kind FROM lab_anomalies(?)
           ) GROUP BY kind ORDER BY kind""",
        [as_of, as_of],
    ).fetchall()
    names = ("round_id", "tubes_opened", "tubes_sealed", "tubes_received", "tubes_refused",
             "people_sampled", "outside_register")
    (waiting,) = con.execute("SELECT count(DISTINCT tube_barcode) FROM waiting_scans").fetchone()
    return {"rounds": [dict(zip(names, row)) for row in rounds], "anomalies": dict(anomalies),
            "tests": test_summary(con, as_of), "waiting_resample_tubes": waiting}


def test_summary(con: duckdb.DuckDBPyConnection, as_of: datetime) -> dict:
    """The test link in counts: plates valid and invalid, tubes by current call, positive pools,
    people flagged and their urgent orders still open."""
    plates = con.execute(
        "SELECT count(*) FILTER (WHERE valid), count(*) FILTER (WHERE NOT valid) FROM plate_qc WHERE finished_at <= ?",
        [as_of]).fetchall()[0]
    calls = dict(con.execute("SELECT call, count(*) FROM tube_calls(?) GROUP BY 1 ORDER BY 1", [as_of]).fetchall())
    orders = con.execute(
        """SELECT count(DISTINCT source_tube), count(DISTINCT person_key),
                  count(DISTINCT person_key) FILTER (WHERE NOT fulfilled),
                  count(*) FILTER (WHERE NOT fulfilled AND due_by < ?)
           FROM resample_orders(?) WHERE urgent_reason(reason)""",
        [as_of, as_of]).fetchall()[0]
    return {"plates_valid": plates[0], "plates_invalid": plates[1], "calls": calls, "positive_pools": orders[0],
            "people_flagged": orders[1], "urgent_open": orders[2], "urgent_overdue": orders[3]}


def chain_summary_markdown(summary: dict, as_of: datetime, timezone: str = "Asia/Shanghai") -> str:
    local = as_of.astimezone(ZoneInfo(timezone))
    offset = local.strftime("%z")
    lines = [f"# Collect and deliver, as of {local:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]} (the latest fact ingested)", "",
             "| round | tubes opened | sealed | received | refused | people sampled | outside register |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rounds"]:
        lines.append(f"| {r['round_id']} | {r['tubes_opened']:,} | {r['tubes_sealed']:,} | {r['tubes_received']:,} "
                     f"| {r['tubes_refused']:,} | {r['people_sampled']:,} | {r['outside_register']:,} |")
    t = summary.get("tests")
    if t and (t["plates_valid"] or t["plates_invalid"]):
        lines += ["", "## Test", "",
                  f"Plates: {t['plates_valid']:,} valid, {t['plates_invalid']:,} invalid (their tubes re-run). "
                  f"Positive pools: {t['positive_pools']:,}, people flagged: {t['people_flagged']:,}, "
                  f"urgent re-samples open: {t['urgent_open']:,} (overdue: {t['urgent_overdue']:,}).",
                  "", "| call | tubes |", "|---|---:|"]
        lines += [f"| {c} | {n:,} |" for c, n in t["calls"].items()]
    if summary.get("waiting_resample_tubes"):
        lines += ["", f"Re-sample tubes scanned before their order, waiting for it: {summary['waiting_resample_tubes']:,} "
                      "(they join the order's round when the receipt or results raising it arrive)."]
    lines += ["", "## Anomalies by kind", "", "| kind | count |", "|---|---:|"]
    lines += [f"| {k} | {n:,} |" for k, n in summary["anomalies"].items()] or ["| none | 0 |"]
    return "\n".join(lines)
