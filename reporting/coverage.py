"""Coverage (覆盖率) per round: sampled people ÷ registered people in scope, per grid and rolled
up per community, subdistrict, district and city (DESIGN §8).

* A registered person is *sampled* when they are a member (not voided) of a tube of the round
  that was not refused (as of ``as_of``): a scan in the round's window, or a single re-sample
  that belongs to the round through its order.
* *Resulted* when that tube, or their single re-sample, has a final call.
* *Outside register*: people sampled who are not registered, counted where they were sampled
  (the site's district, subdistrict and community); they have no grid.

``coverage(rid, as_of)`` gives one row per grid and one per rollup: a rollup row has the levels
below it NULL and ``level`` naming it (``grid``, ``community``, ``subdistrict``, ``district``,
``city``).
"""

from __future__ import annotations

import duckdb
import polars as pl


def define_coverage_views(con: duckdb.DuckDBPyConnection) -> None:
    """Needs :func:`warehouse.views.define_views`."""
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO coverage(rid, as_of) AS TABLE
        WITH scope AS (
            SELECT reg.person_key, reg.district, reg.subdistrict, reg.community, reg.grid
            FROM register reg JOIN rounds r ON r.round_id = rid
            WHERE r.districts IS NULL OR list_contains(r.districts, reg.district)
        ), member AS (
            SELECT tm.person_key, tm.tube_barcode
            FROM tube_members tm JOIN custody c USING (round_id, tube_barcode)
            WHERE tm.round_id = rid AND tm.added_at <= as_of AND NOT (c.refused AND c.received_at <= as_of)
        ), called AS (
            SELECT tube_barcode FROM tube_calls(as_of) WHERE final
        ), per_person AS (
            SELECT m.person_key, bool_or(k.tube_barcode IS NOT NULL) AS resulted
            FROM member m LEFT JOIN called k USING (tube_barcode) GROUP BY m.person_key
        ), people AS (
            SELECT s.*, p.person_key IS NOT NULL AS sampled, coalesce(p.resulted, FALSE) AS resulted
            FROM scope s LEFT JOIN per_person p USING (person_key)
        ), outside AS (
            SELECT st.district, st.subdistrict, st.community, m.person_key
            FROM member m ANTI JOIN register reg USING (person_key)
            JOIN tubes t ON t.round_id = rid AND t.tube_barcode = m.tube_barcode
            LEFT JOIN sites st ON st.site_id = t.site_id
        ), counted AS (
            SELECT district, subdistrict, community, grid,
                   CASE WHEN grouping(grid) = 0 THEN 'grid' WHEN grouping(community) = 0 THEN 'community'
                        WHEN grouping(subdistrict) = 0 THEN 'subdistrict' WHEN grouping(district) = 0 THEN 'district'
                        ELSE 'city' END AS level,
                   count(*) AS registered, count(*) FILTER (WHERE sampled) AS sampled,
                   count(*) FILTER (WHERE resulted) AS resulted
            FROM people
            GROUP BY GROUPING SETS ((district, subdistrict, community, grid), (district, subdistrict, community),
                                    (district, subdistrict), (district), ())
        ), outside_rolled AS (
            SELECT district, subdistrict, community,
                   CASE WHEN grouping(community) = 0 THEN 'community' WHEN grouping(subdistrict) = 0 THEN 'subdistrict'
                        WHEN grouping(district) = 0 THEN 'district' ELSE 'city' END AS level,
                   count(DISTINCT person_key) AS people
            FROM outside
            GROUP BY GROUPING SETS ((district, subdistrict, community), (district, subdistrict), (district), ())
        )
        SELECT rid AS round_id, c.level, c.district, c.subdistrict, c.community, c.grid, c.registered, c.sampled,
               c.resulted, c.registered - c.sampled AS untested,
               round(c.sampled / nullif(c.registered, 0), 4) AS coverage,
               CASE WHEN c.level = 'grid' THEN NULL ELSE coalesce(o.people, 0) END::BIGINT AS outside_register
        FROM counted c LEFT JOIN outside_rolled o
          ON o.level = c.level AND o.district IS NOT DISTINCT FROM c.district
         AND o.subdistrict IS NOT DISTINCT FROM c.subdistrict AND o.community IS NOT DISTINCT FROM c.community
        """
    )


def worst_grids(coverage: pl.DataFrame, n: int) -> pl.DataFrame:
    """The ``n`` grids with the lowest coverage among those with registered people (a grid
    with nobody registered has no coverage to chase), the most registered first on a tie:
    the grids a command sends its workers to. ``coverage``: the grid rows (or every row of
    ``coverage(rid, as_of)``: only ``level = 'grid'`` is kept)."""
    grids = coverage.filter(pl.col("level") == "grid") if "level" in coverage.columns else coverage
    return (grids.filter(pl.col("registered") > 0)
            .sort(["coverage", "registered", "district", "subdistrict", "community", "grid"],
                  descending=[False, True, False, False, False, False], nulls_last=True)
            .head(n))
