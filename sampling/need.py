"""What one whole-population round of a scope needs (全员核酸一轮的需求), set-based over the register
and the zones: the tubes its people fill at their zones' pool sizes (DESIGN §8, the same policy
``tube_policy`` judges tubes by: ``zone_pool_size``), split into pooled and single tubes.

``scope_need(rid, as_of)``: per district of the round's scope (all districts when the round has
none; no round: the whole register at ``[pool_policy] default_size``) ``registered`` people and
``tubes_pooled`` / ``tubes_single``, with the zone of each grid in force at ``as_of``
(``grid_zone``):

* key groups: tubes of ``key_group_size`` (single by default);
* sealed zones: one tube per household (a household of one, or people without a household, a
  single tube each: ``sealed = "single"`` makes them all single);
* controlled zones: tubes of ``controlled_size`` (5), filled per grid;
* precaution and unzoned grids: tubes of the round's pool size (10), filled per grid.

A group of people who share a pool size in one grid fills ``ceil(people / size)`` tubes: the
last one is a pooled tube too, closed early. A tube of size 1 is a single tube.
"""

from __future__ import annotations

import duckdb

from kernel.config import PoolPolicyConfig


def define_need_views(con: duckdb.DuckDBPyConnection, policy: PoolPolicyConfig) -> None:
    """Needs ``zone_pool_size`` (``sampling.tubes``) and ``grid_zone`` (``sampling.routes``)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO scope_need(rid, as_of) AS TABLE
        WITH r AS (
            SELECT coalesce(max(pool_size), {int(policy.default_size)}) AS pool_size,
                   max(districts) AS districts
            FROM rounds WHERE round_id = rid
        ), sized AS (
            SELECT reg.district, reg.grid,
                   zone_pool_size(reg.key_group, z.zone, reg.household_id, (SELECT pool_size FROM r)) AS size,
                   reg.household_id
            FROM register reg LEFT JOIN grid_zone(as_of) z USING (grid)
            WHERE (SELECT districts FROM r) IS NULL OR list_contains((SELECT districts FROM r), reg.district)
        ), groups AS (
            -- the people who fill tubes together: one grid and pool size, or one sealed household
            SELECT district, grid, size, CASE WHEN size IS NULL THEN household_id END AS household,
                   count(*) AS people
            FROM sized GROUP BY ALL
        ), tubes AS (
            SELECT district, people, coalesce(size, people) AS size,
                   CASE WHEN size IS NULL THEN 1 ELSE CAST(ceil(people / size) AS BIGINT) END AS tubes
            FROM groups
        )
        SELECT district, sum(people)::BIGINT AS registered,
               coalesce(sum(tubes) FILTER (WHERE size > 1), 0)::BIGINT AS tubes_pooled,
               coalesce(sum(tubes) FILTER (WHERE size <= 1), 0)::BIGINT AS tubes_single
        FROM tubes GROUP BY district
        """
    )
