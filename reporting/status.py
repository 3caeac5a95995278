"""Person status per round (个人状态): for every registered person in the round's scope, one of

* ``pool_positive``: in a positive (or persisting single-target) pooled tube, not yet resolved
  by a single re-sample with a final call;
* ``resample``: an open ordinary re-sampling order (refused, lost or twice-invalid tube);
* ``positive`` / ``negative``: the final call of the person's deciding tube (a single tube, or
  the re-sample that resolved a pool; a persisting single target on a single tube is positive);
* ``sampled``: in a good tube whose call is not final yet;
* ``untested``: no good tube in the round.

with the tube that counts (the order's source tube while flagged or ordered). Set-based over
the whole register; nothing per person in Python."""

from __future__ import annotations

import duckdb


def define_status_views(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO person_status(rid, as_of) AS TABLE
        WITH scope AS (
            SELECT reg.person_key, reg.id_type, reg.id_number, reg.district, reg.subdistrict,
                   reg.community, reg.grid
            FROM register reg JOIN rounds r ON r.round_id = rid
            WHERE r.districts IS NULL OR list_contains(r.districts, reg.district)
        ), calls AS MATERIALIZED (
            SELECT tube_barcode, call, final FROM tube_calls(as_of)
        ), orders AS MATERIALIZED (
            SELECT person_key,
                   arg_min(source_tube, (NOT urgent_reason(reason), raised_at, source_tube))
                       FILTER (WHERE NOT fulfilled) AS open_tube,
                   bool_or(NOT fulfilled AND urgent_reason(reason)) AS open_urgent,
                   bool_or(NOT fulfilled) AS open_any,
                   arg_min(source_tube, (raised_at, source_tube)) FILTER (WHERE urgent_reason(reason)) AS flag_tube,
                   min(raised_at) FILTER (WHERE urgent_reason(reason)) AS flagged_at
            FROM resample_orders(as_of) WHERE round_id = rid GROUP BY person_key
        ), ranked AS (
            -- a call that can decide a person (``individual_result``: final, not invalid, and not a
            -- positive pool: a pool decides nobody, its people are re-sampled one by one); ranked by that, then
            -- by time, then by a hash of the tube, in one integer: the per-person pick is a
            -- fixed-size max (it spills) joined back, cheap at 24 M people
            SELECT g.person_key, g.tube_barcode, g.added_at, k.call, d.decides,
                   (d.decides::HUGEINT << 100) + (epoch_us(g.added_at)::HUGEINT << 40)
                       + (hash(g.tube_barcode) % 1099511627776)::HUGEINT AS rank
            FROM good_tubes(as_of) g LEFT JOIN calls k USING (tube_barcode),
                 LATERAL (SELECT individual_result(k.call, k.final, g.capacity) IS NOT NULL AS decides) d
            WHERE g.round_id = rid
        ), top AS (
            -- fixed-size aggregate states only (they spill); the tube is joined back after
            SELECT person_key, max(rank) AS rank FROM ranked GROUP BY person_key
        ), best AS (
            SELECT r.person_key, r.tube_barcode, CASE WHEN r.decides THEN r.call END AS call,
                   CASE WHEN r.decides THEN r.added_at END AS decided_added_at
            FROM ranked r SEMI JOIN top t ON t.person_key = r.person_key AND t.rank = r.rank
        )
        SELECT rid AS round_id, s.person_key, s.id_type, s.id_number, s.district, s.subdistrict,
               s.community, s.grid,
               CASE WHEN o.open_urgent THEN 'pool_positive'
                    WHEN o.open_any THEN 'resample'
                    WHEN o.flag_tube IS NOT NULL AND (b.call IS NULL OR b.decided_added_at < o.flagged_at) THEN 'pool_positive'
                    WHEN viral_call(b.call) THEN 'positive'
                    WHEN b.call = 'negative' THEN 'negative'
                    WHEN b.person_key IS NOT NULL THEN 'sampled'
                    ELSE 'untested' END AS status,
               CASE WHEN o.open_any THEN o.open_tube
                    WHEN o.flag_tube IS NOT NULL AND (b.call IS NULL OR b.decided_added_at < o.flagged_at) THEN o.flag_tube
                    WHEN b.call IN ('positive', 'single_target', 'negative') THEN b.tube_barcode
                    ELSE coalesce(o.flag_tube, b.tube_barcode) END AS tube_barcode
        FROM scope s LEFT JOIN best b USING (person_key) LEFT JOIN orders o USING (person_key)
        """
    )
