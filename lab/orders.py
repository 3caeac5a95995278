"""Re-sampling orders (复采): who must be sampled again, why, how urgently, where.

``resample_orders(as_of)`` is a table macro deriving every order from the stored facts, so an
order appears in the same transaction as the fact that raises it and is never lost or doubled:

* ``tube_refused``: the lab refused the tube (leaked, unlabelled, insufficient);
* ``tube_lost``: the tube was not received by round end + the lost threshold.

A member of a refused or lost tube who has another good tube in the round needs no order. An
order is *fulfilled* once the person has a re-sample tube collected after it was raised that
was not refused. ``home_visit`` is true for people with limited mobility (上门采样).
"""

from __future__ import annotations

import duckdb

from tubetrail.config import ResampleConfig


def define_order_views(con: duckdb.DuckDBPyConnection, resample: ResampleConfig) -> None:
    due = f"INTERVAL '{resample.ordinary_due_hours * 3600:.0f} seconds'"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO good_tubes(as_of) AS TABLE
        SELECT tm.round_id, tm.person_key, tm.tube_barcode, tm.added_at, tm.resample
        FROM tube_members tm JOIN custody c USING (round_id, tube_barcode)
        WHERE tm.added_at <= as_of
          AND NOT (c.refused AND c.received_at <= as_of)
          AND c.tube_barcode NOT IN (
              SELECT tube_barcode FROM custody_anomalies(as_of) WHERE kind = 'tube_lost')
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO resample_orders(as_of) AS TABLE
        WITH raised AS (
            SELECT c.round_id, tm.person_key, tm.id_type, tm.id_number, 'tube_refused' AS reason,
                   c.tube_barcode AS source_tube, c.received_at AS raised_at
            FROM custody c JOIN tube_members tm USING (round_id, tube_barcode)
            WHERE c.refused AND c.received_at <= as_of
            UNION ALL
            SELECT a.round_id, tm.person_key, tm.id_type, tm.id_number, 'tube_lost', a.tube_barcode, a.detected_at
            FROM custody_anomalies(as_of) a JOIN tube_members tm USING (round_id, tube_barcode)
            WHERE a.kind = 'tube_lost'
        ), good AS (SELECT * FROM good_tubes(as_of))
        SELECT o.round_id, o.person_key, o.id_type, o.id_number, o.reason, o.source_tube,
               'normal' AS priority, o.raised_at, o.raised_at + {due} AS due_by,
               coalesce(reg.mobility_limited, FALSE) AS home_visit,
               EXISTS (SELECT 1 FROM good g WHERE g.round_id = o.round_id AND g.person_key = o.person_key
                       AND g.resample AND g.added_at >= o.raised_at) AS fulfilled
        FROM raised o LEFT JOIN register reg USING (person_key)
        WHERE NOT EXISTS (SELECT 1 FROM good g WHERE g.round_id = o.round_id AND g.person_key = o.person_key
                          AND NOT g.resample AND g.tube_barcode <> o.source_tube)
        """
    )
