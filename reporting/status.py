"""Person status per round (个人状态): for every registered person in the round's scope, one of

* ``pool_positive``: in a positive (or persisting single-target) pooled tube, not yet resolved
  by a single re-sample with a final call;
* ``resample``: an open ordinary re-sampling order (refused, lost or twice-invalid tube);
* ``positive`` / ``negative``: the final call of the person's deciding tube (a single tube, or
  the re-sample that resolved a pool; a persisting single target on a single tube is positive);
* ``sampled``: in a good tube whose call is not final yet;
* ``untested``: no good tube in the round.

with the tube that counts (the order's source tube while flagged or ordered). Set-based over
the whole register; nothing per person in Python.

``person_status(rid, as_of)`` derives the round's re-sampling orders itself;
``person_status_given(rid, as_of, orders)`` is the same rule over a table already holding
``resample_orders(as_of)`` (the nightly report's ``report_orders``): the report derives the
orders once, not twice (issue 15: at 25.7 M people the orders are a whole-city derivation)."""

from __future__ import annotations

import duckdb


def define_status_views(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_PERSON_STATUS.format(macro="person_status(rid, as_of)", orders="resample_orders(as_of)"))
    con.execute(_PERSON_STATUS.format(macro="person_status_given(rid, as_of, orders)", orders="query_table(orders)"))


#: the rule of both macros; ``{orders}``: where the round's re-sampling orders are read from
_PERSON_STATUS = """
        CREATE OR REPLACE TEMP MACRO {macro} AS TABLE
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
            FROM {orders} WHERE round_id = rid GROUP BY person_key
        ), numbered AS MATERIALIZED (
            -- the round's tubes with their calls, numbered in the order of a hash of the barcode
            -- (then the barcode): a tube's number fits in the per-person rank below, so the pick
            -- is one fixed-size max per person, read back without joining any member again
            SELECT c.tube_barcode, k.call, k.final,
                   row_number() OVER (ORDER BY hash(c.tube_barcode) % 1099511627776, c.tube_barcode) AS tube_no
            FROM custody c LEFT JOIN calls k USING (tube_barcode) WHERE c.round_id = rid
        ), ranked AS (
            -- a call that can decide a person (``individual_result``: final, not invalid, and not a
            -- positive pool: a pool decides nobody, its people are re-sampled one by one); ranked by that, then
            -- by time, then by the tube's number, in one integer: the per-person pick is a
            -- fixed-size max (it spills). Issue 15: at 25.7 M people the status took 30 s (36 s
            -- under a 2.5 GB limit) against 33 s (45 s) when the max was joined back to every member
            SELECT g.person_key,
                   (d.decides::HUGEINT << 100) + (epoch_us(g.added_at)::HUGEINT << 40) + n.tube_no::HUGEINT AS rank
            FROM good_tubes(as_of) g JOIN numbered n USING (tube_barcode),
                 LATERAL (SELECT individual_result(n.call, n.final, g.capacity) IS NOT NULL AS decides) d
            WHERE g.round_id = rid
        ), top AS (
            SELECT person_key, max(rank) AS rank FROM ranked GROUP BY person_key
        ), best AS (
            -- the pick read back from its rank: its tube (and call), and, when it decides, when
            SELECT t.person_key, n.tube_barcode, CASE WHEN t.rank >> 100 = 1 THEN n.call END AS call,
                   CASE WHEN t.rank >> 100 = 1 THEN ((t.rank >> 40) & ((1::HUGEINT << 60) - 1))::BIGINT END
                       AS decided_added_us
            FROM top t JOIN numbered n ON n.tube_no = (t.rank & ((1::HUGEINT << 40) - 1))::BIGINT
        )
        SELECT rid AS round_id, s.person_key, s.id_type, s.id_number, s.district, s.subdistrict,
               s.community, s.grid,
               CASE WHEN o.open_urgent THEN 'pool_positive'
                    WHEN o.open_any THEN 'resample'
                    WHEN o.flag_tube IS NOT NULL AND (b.call IS NULL OR b.decided_added_us < epoch_us(o.flagged_at)) THEN 'pool_positive'
                    WHEN viral_call(b.call) THEN 'positive'
                    WHEN b.call = 'negative' THEN 'negative'
                    WHEN b.person_key IS NOT NULL THEN 'sampled'
                    ELSE 'untested' END AS status,
               CASE WHEN o.open_any THEN o.open_tube
                    WHEN o.flag_tube IS NOT NULL AND (b.call IS NULL OR b.decided_added_us < epoch_us(o.flagged_at)) THEN o.flag_tube
                    WHEN b.call IN ('positive', 'single_target', 'negative') THEN b.tube_barcode
                    ELSE coalesce(o.flag_tube, b.tube_barcode) END AS tube_barcode
        FROM scope s LEFT JOIN best b USING (person_key) LEFT JOIN orders o USING (person_key)
        """
