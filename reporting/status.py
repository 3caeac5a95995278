"""Person status per round (个人状态): for every registered person in the round's scope,
``untested``, ``sampled`` or ``resample`` (an open re-sampling order), with the tube that
counts. Set-based over the whole register; nothing per person in Python."""

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
        ), best AS (
            SELECT person_key, arg_max(tube_barcode, added_at) AS tube_barcode
            FROM good_tubes(as_of) WHERE round_id = rid GROUP BY person_key
        ), open AS (
            SELECT person_key, arg_min(source_tube, raised_at) AS source_tube
            FROM resample_orders(as_of) WHERE round_id = rid AND NOT fulfilled GROUP BY person_key
        )
        SELECT rid AS round_id, s.person_key, s.id_type, s.id_number, s.district, s.subdistrict,
               s.community, s.grid,
               CASE WHEN o.person_key IS NOT NULL THEN 'resample'
                    WHEN b.person_key IS NOT NULL THEN 'sampled'
                    ELSE 'untested' END AS status,
               coalesce(o.source_tube, b.tube_barcode) AS tube_barcode
        FROM scope s LEFT JOIN best b USING (person_key) LEFT JOIN open o USING (person_key)
        """
    )
