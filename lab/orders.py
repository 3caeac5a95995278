"""Re-sampling orders (复采): who must be sampled again, why, how urgently, where.

``resample_orders(as_of)`` is a table macro deriving every order from the stored facts, so an
order appears in the same transaction as the fact that raises it (a receipt, a results file)
and is never lost or doubled:

* ``pool_positive`` (混阳): a pooled tube (capacity > 1) called ``positive``: every member,
  ``urgent``, at home, due ``pool_positive_due_hours`` after the call;
* ``single_target``: a pooled tube whose single target persisted on the re-run: treated as
  positive, so the same urgent home order, with the reason that tells the lab why;
* ``invalid``: a tube invalid twice (internal control failed on the re-run too);
* ``tube_refused``: the lab refused the tube (leaked, unlabelled, insufficient);
* ``tube_lost``: the tube was not received by round end + the lost threshold.

Ordinary orders (the last three) are ``normal``, due ``ordinary_due_hours`` after they are
raised, at home for people with limited mobility (上门采样); a member who has another good
tube in the round needs none. An order is *fulfilled* once the person has a re-sample tube that
was not refused, collected after the call for an urgent order, and for an ordinary one after
the person's sample in the failed tube (a lost tube's people are often re-sampled before round
end + the lost threshold declares it lost); ``fulfilled_at`` is when that re-sample was taken
(the first such).

At city scale the few source tubes are found first and only their members and those members'
good tubes are looked at (materialised once), so the macro stays within memory for 24 M people.

``resample_orders(as_of, tubes := [...])`` (a constant list) derives only the orders raised by
those tubes and judges them on those tubes alone: pass *every* tube of the people concerned
(the dashboard and the overdue alerts pass the tubes of the people they look up). The round
rule of the scans feed instead derives the orders of its people in a scope holding only their
tubes' facts (``kernel.scope.scoped_to_tubes``): there no view aggregates the city's scans.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from kernel.config import ResampleConfig


def urgent_due_by(called_at: datetime, resample: ResampleConfig) -> datetime:
    """When an urgent (pool positive, single target) re-sample is due: the rule of
    ``resample_orders`` for one call, for alerts that must not wait for the whole city."""
    return called_at + timedelta(hours=resample.pool_positive_due_hours)


def define_order_views(con: duckdb.DuckDBPyConnection, resample: ResampleConfig) -> None:
    """Needs the custody views and :func:`lab.calling.define_calling_views`."""
    due = f"INTERVAL '{resample.ordinary_due_hours * 3600:.0f} seconds'"
    urgent_due = f"INTERVAL '{resample.pool_positive_due_hours * 3600:.0f} seconds'"
    # the orders raised by a viral call (urgent, at home): the rule every report and alert reads
    con.execute("CREATE OR REPLACE TEMP MACRO urgent_reason(reason) AS reason IN ('pool_positive', 'single_target')")
    urgent = "urgent_reason(o.reason)"
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO good_tubes(as_of, tubes := NULL::VARCHAR[]) AS TABLE
        SELECT tm.round_id, tm.person_key, tm.tube_barcode, tm.added_at, tm.resample, c.capacity
        FROM tube_members tm JOIN custody c USING (round_id, tube_barcode)
        WHERE tm.added_at <= as_of
          AND (tubes IS NULL OR tm.tube_barcode IN (SELECT unnest(tubes)))
          AND NOT (c.refused AND c.received_at <= as_of)
          AND c.tube_barcode NOT IN (SELECT tube_barcode FROM tube_lost(as_of)
                                     WHERE tubes IS NULL OR tube_barcode IN (SELECT unnest(tubes)))
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO resample_orders(as_of, tubes := NULL::VARCHAR[]) AS TABLE
        WITH sources AS MATERIALIZED (
            SELECT round_id, tube_barcode, 'tube_refused' AS reason, received_at AS raised_at
            FROM custody WHERE refused AND received_at <= as_of
              AND (tubes IS NULL OR tube_barcode IN (SELECT unnest(tubes)))
            UNION ALL
            SELECT round_id, tube_barcode, 'tube_lost', detected_at FROM tube_lost(as_of)
            WHERE tubes IS NULL OR tube_barcode IN (SELECT unnest(tubes))
            UNION ALL
            SELECT c.round_id, c.tube_barcode,
                   CASE WHEN k.call = 'invalid' THEN 'invalid'
                        WHEN k.call = 'positive' THEN 'pool_positive'
                        ELSE 'single_target' END,
                   k.called_at
            FROM tube_calls(as_of, tubes := tubes) k JOIN custody c USING (tube_barcode)
            WHERE k.call = 'invalid' OR (c.capacity > 1 AND viral_call(k.call))
        ), raised AS MATERIALIZED (
            SELECT s.round_id, tm.person_key, s.reason, s.tube_barcode AS source_tube, s.raised_at,
                   -- what answers the order: for an urgent one a re-sample after the call; for an
                   -- ordinary one any re-sample after the person's sample in the failed tube (a
                   -- grid re-samples a late tube's people before the rule declares it lost)
                   CASE WHEN urgent_reason(s.reason) THEN s.raised_at
                        ELSE coalesce(least(tm.added_at, s.raised_at), s.raised_at) END AS answered_after
            FROM sources s JOIN tube_members tm USING (round_id, tube_barcode)
            WHERE tubes IS NULL OR tm.tube_barcode IN (SELECT unnest(tubes))
        ), ids AS MATERIALIZED (
            -- identities of the few people with an order, from their scans (not carried through
            -- the membership of every tube of the city)
            SELECT person_key, any_value(id_type) AS id_type, any_value(id_number) AS id_number
            FROM scans WHERE person_key IN (SELECT person_key FROM raised)
            GROUP BY person_key
        ), theirs AS MATERIALIZED (
            -- the good tubes of the people with an order, and nobody else's
            SELECT g.round_id, g.person_key, g.tube_barcode, g.added_at, g.resample
            FROM good_tubes(as_of, tubes := tubes) g SEMI JOIN raised r USING (round_id, person_key)
        ), per_order AS (
            SELECT o.round_id, o.person_key, o.source_tube, o.reason,
                   -- the failed tube never answers its own order (a re-sample invalid twice)
                   coalesce(bool_or(t.resample AND t.tube_barcode <> o.source_tube
                                    AND t.added_at >= o.answered_after), FALSE) AS fulfilled,
                   min(t.added_at) FILTER (WHERE t.resample AND t.tube_barcode <> o.source_tube
                                           AND t.added_at >= o.answered_after) AS fulfilled_at,
                   coalesce(bool_or(NOT t.resample AND t.tube_barcode <> o.source_tube), FALSE) AS other_good_tube
            FROM raised o LEFT JOIN theirs t USING (round_id, person_key)
            GROUP BY o.round_id, o.person_key, o.source_tube, o.reason
        )
        SELECT o.round_id, o.person_key, o.id_type, o.id_number, o.reason, o.source_tube,
               CASE WHEN {urgent} THEN 'urgent' ELSE 'normal' END AS priority,
               o.raised_at,
               o.raised_at + CASE WHEN {urgent} THEN {urgent_due} ELSE {due} END AS due_by,
               {urgent} OR coalesce(reg.mobility_limited, FALSE) AS home_visit,
               p.fulfilled, p.fulfilled_at
        FROM (SELECT * FROM raised JOIN ids USING (person_key)) o
        JOIN per_order p USING (round_id, person_key, source_tube, reason)
        LEFT JOIN register reg USING (person_key)
        WHERE {urgent} OR NOT p.other_good_tube
        """
    )
