"""Boxes (转运箱) and receipts (接收): the chain of custody of a tube from site to lab.

A tube's custody: collected, sealed (from scans), packed and departed (box manifest), received
(lab receipt). A receipt whose condition is not ``ok`` refuses the tube. Anomalies, each a kind:
``received_not_collected``, ``not_on_manifest``, ``wrong_lab`` (manifest names a lab, another
received the box), and, judged at an as-of time, ``tube_late`` (sealed, not received within the
late threshold), ``tube_lost`` (not received by round end + the lost threshold),
``box_lost`` and ``unsealed_at_round_end``.

A lost box (``box_lost(as_of)``, 转运箱丢失): a box on a manifest whose tubes of the round (re-samples
aside, as for ``tube_lost``) none reached a lab by the round's end + the lost threshold, and that
no receipt names by then: the box itself went missing between site and lab, so it is chased as
one (the courier, the planned lab), its tubes counted inside it. Its tubes are ``tube_lost`` too
(each one's people are re-sampled); a tube lost from a box that did arrive, or never packed, is
chased on its own (``reporting.alerts.lost_custody_alerts``). Box ids are reused from round to
round (a transport box is a physical container): a lost box is named by round and box.
"""

from __future__ import annotations

import duckdb
import polars as pl

from kernel.config import TatConfig
from kernel.rules import (
    LINE,
    Checked,
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

CONDITIONS = ("ok", "leaked", "unlabelled", "insufficient")
MANIFEST_REQUIRED = ("box_id", "tube_barcode", "site_id", "packed_at")
MANIFEST_OPTIONAL = ("courier_id", "departed_at", "lab_id")
MANIFEST_COLUMNS = ("box_id", "tube_barcode", "site_id", "packed_at", "courier_id", "departed_at", "lab_id")
RECEIPT_REQUIRED = ("lab_id", "box_id", "tube_barcode", "received_at")
RECEIPT_OPTIONAL = ("condition",)
RECEIPT_COLUMNS = ("lab_id", "box_id", "tube_barcode", "received_at", "condition")


def check_manifests(raw: pl.DataFrame, *, timezone: str) -> Checked:
    frame = with_parsed_times(with_columns_present(raw, MANIFEST_OPTIONAL), ["packed_at", "departed_at"], timezone)
    rules = [
        *text_rules(MANIFEST_COLUMNS),
        *(required(c) for c in ("box_id", "tube_barcode", "site_id")),
        time_rule("packed_at"),
        time_rule("departed_at", optional=True),
    ]
    good, bad = split_by_rules(frame, rules)
    good = good.with_columns(
        *(stripped(c) for c in ("box_id", "tube_barcode", "site_id", "courier_id", "lab_id")),
        parsed_time("packed_at"),
        parsed_time("departed_at"),
    ).select(*MANIFEST_COLUMNS, LINE)
    return Checked(good, concat_quarantine(bad))


def check_receipts(raw: pl.DataFrame, *, timezone: str) -> Checked:
    frame = with_parsed_times(with_columns_present(raw, RECEIPT_OPTIONAL), ["received_at"], timezone)
    rules = [
        *text_rules(RECEIPT_COLUMNS),
        *(required(c) for c in ("lab_id", "box_id", "tube_barcode")),
        time_rule("received_at"),
        one_of("condition", CONDITIONS, optional=True),
    ]
    good, bad = split_by_rules(frame, rules)
    good = good.with_columns(
        *(stripped(c) for c in ("lab_id", "box_id", "tube_barcode")),
        parsed_time("received_at"),
        pl.col("condition").str.strip_chars().str.to_lowercase().replace("", None).fill_null("ok"),
    ).select(*RECEIPT_COLUMNS, LINE)
    return Checked(good, concat_quarantine(bad))


def define_custody_views(con: duckdb.DuckDBPyConnection, tat: TatConfig) -> None:
    """``tube_receipts`` (one row per tube a lab received: the first receipt, whether the tube
    was scanned or not), ``custody`` (one row per tube of a round), the table macros
    ``tube_lost(as_of)``, ``box_lost(as_of)`` and ``custody_anomalies(as_of)``.
    Needs the views of :func:`sampling.tubes.define_tube_views`."""
    # a tube is received at its first receipt, by that receipt's lab; it is refused when no
    # receipt found it ``ok`` (a lab's load counts every tube it received, scanned or not)
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW tube_receipts AS
        SELECT tube_barcode, arg_min(lab_id, received_at) AS lab_id, arg_min(box_id, received_at) AS received_box_id,
               min(received_at) AS received_at,
               arg_min(condition, (condition = 'ok', received_at)) AS condition
        FROM receipts GROUP BY tube_barcode
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW custody AS
        WITH packed AS (
            SELECT tube_barcode, arg_min(box_id, packed_at) AS box_id, min(packed_at) AS packed_at,
                   min(departed_at) AS departed_at, arg_min(lab_id, packed_at) AS planned_lab_id
            FROM manifests GROUP BY tube_barcode
        ), received AS (
            SELECT * FROM tube_receipts
        )
        SELECT t.round_id, t.tube_barcode, t.site_id, t.capacity, t.members, t.resample,
               t.collected_at, t.sealed_at, p.box_id, p.packed_at, p.departed_at, p.planned_lab_id,
               r.lab_id, r.received_box_id, r.received_at, r.condition,
               coalesce(r.condition <> 'ok', FALSE) AS refused
        FROM tubes t LEFT JOIN packed p USING (tube_barcode) LEFT JOIN received r USING (tube_barcode)
        """
    )
    late = f"INTERVAL '{tat.late_after_sealed_hours * 3600:.0f} seconds'"
    lost = f"INTERVAL '{tat.lost_after_round_end_hours * 3600:.0f} seconds'"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO tube_lost(as_of) AS TABLE
        SELECT c.round_id, c.tube_barcode, c.box_id, rd.ends_at + {lost} AS detected_at
        FROM custody c JOIN rounds rd USING (round_id)
        WHERE NOT c.resample AND rd.ends_at + {lost} <= as_of
          AND (c.received_at IS NULL OR c.received_at > rd.ends_at + {lost})
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO box_lost(as_of) AS TABLE
        WITH boxed AS (
            -- one row per box and tube of the round (a manifest may list a tube twice)
            SELECT c.round_id, m.box_id, c.tube_barcode, any_value(c.members) AS members,
                   any_value(c.sealed_at) AS sealed_at, any_value(c.received_at) AS received_at,
                   arg_min(m.site_id, m.packed_at) AS site_id, min(m.packed_at) AS packed_at,
                   min(m.departed_at) AS departed_at, arg_min(m.lab_id, m.packed_at) AS planned_lab_id,
                   any_value(rd.starts_at) AS starts_at, any_value(rd.ends_at) + {lost} AS lost_at
            FROM manifests m JOIN custody c USING (tube_barcode) JOIN rounds rd USING (round_id)
            WHERE NOT c.resample AND rd.ends_at + {lost} <= as_of
            GROUP BY c.round_id, m.box_id, c.tube_barcode
        ), boxes AS (
            SELECT round_id, box_id, any_value(starts_at) AS starts_at, any_value(lost_at) AS lost_at,
                   arg_min(site_id, packed_at) AS site_id, count(*) AS tubes, sum(members) AS people,
                   min(sealed_at) AS first_sealed_at, max(sealed_at) AS last_sealed_at,
                   min(packed_at) AS packed_at, min(departed_at) AS departed_at,
                   arg_min(planned_lab_id, packed_at) AS planned_lab_id,
                   count(*) FILTER (WHERE received_at <= lost_at) AS tubes_received
            FROM boxed GROUP BY round_id, box_id
        )
        -- no tube of it reached a lab, and no lab scanned the box itself, by round end + threshold
        SELECT b.round_id, b.box_id, b.site_id, b.tubes, b.people, b.first_sealed_at, b.last_sealed_at,
               b.packed_at, b.departed_at, b.planned_lab_id, b.lost_at AS detected_at
        FROM boxes b
        WHERE b.tubes_received = 0
          AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.box_id = b.box_id
                          AND r.received_at >= b.starts_at AND r.received_at <= b.lost_at)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO custody_anomalies(as_of) AS TABLE
        SELECT 'received_not_collected' AS kind, NULL::VARCHAR AS round_id, r.tube_barcode, r.box_id,
               format('received at {{}} but never scanned at a site', r.lab_id) AS detail,
               r.received_at AS detected_at
        FROM receipts r ANTI JOIN scans s USING (tube_barcode)
        WHERE r.received_at <= as_of
        UNION ALL
        SELECT 'not_on_manifest', c.round_id, r.tube_barcode, r.box_id,
               format('tube found in box {{}}, not on its manifest', r.box_id), r.received_at
        FROM receipts r JOIN custody c USING (tube_barcode)
        WHERE r.received_at <= as_of
          AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.box_id = r.box_id AND m.tube_barcode = r.tube_barcode)
        UNION ALL
        SELECT DISTINCT 'wrong_lab', NULL, NULL, r.box_id,
               format('box planned for {{}} received at {{}}', m.lab_id, r.lab_id), r.received_at
        FROM receipts r JOIN manifests m ON m.box_id = r.box_id AND m.tube_barcode = r.tube_barcode
        WHERE m.lab_id IS NOT NULL AND m.lab_id <> r.lab_id AND r.received_at <= as_of
        UNION ALL
        SELECT 'tube_late', c.round_id, c.tube_barcode, c.box_id,
               CASE WHEN c.received_at IS NULL OR c.received_at > as_of
                    THEN format('sealed {{}} h ago, not received', (epoch(as_of - c.sealed_at) / 3600)::DECIMAL(8, 1))
                    ELSE format('received {{}} h after sealing', (epoch(c.received_at - c.sealed_at) / 3600)::DECIMAL(8, 1)) END,
               c.sealed_at + {late}
        FROM custody c
        WHERE c.sealed_at + {late} <= as_of
          AND (c.received_at IS NULL OR c.received_at > c.sealed_at + {late})
        UNION ALL
        SELECT 'tube_lost', round_id, tube_barcode, box_id,
               'not received by round end + ' || '{tat.lost_after_round_end_hours:g} h', detected_at
        FROM tube_lost(as_of)
        UNION ALL
        SELECT 'box_lost', round_id, NULL, box_id,
               format('{{}} tube(s), {{}} people: no tube of the box reached a lab by round end + {tat.lost_after_round_end_hours:g} h',
                      tubes, people), detected_at
        FROM box_lost(as_of)
        UNION ALL
        SELECT 'unsealed_at_round_end', c.round_id, c.tube_barcode, c.box_id,
               format('{{}} people in a tube never sealed', c.members), rd.ends_at
        FROM custody c JOIN rounds rd USING (round_id)
        WHERE NOT c.resample AND rd.ends_at <= as_of AND (c.sealed_at IS NULL OR c.sealed_at > rd.ends_at)
        """
    )
