"""From scan events to tubes (采样管) and their members, set-based in DuckDB.

The rules, each a view named after it:

* ``tube_members``: a person is in a tube when their last ``add``/``void`` event for that tube
  is an ``add`` (a void removes them). Repeated identical scans count once.
* ``tubes``: one row per tube and round: site, capacity (printed on the tube, else the round's
  pool size), when collected (first add) and sealed (first seal), member count.
* ``tube_policy``: the pool size the zone policy allows (DESIGN §8, national guide 2nd ed.):
  key groups single tubes; sealed grids one household per tube (single where the household is
  unknown); controlled grids 5; precaution and unzoned the round's default.
* ``tube_anomalies``: ``over_capacity``, ``above_zone_policy``, ``sealed_at_site`` (a sealed-zone
  resident sampled at a fixed or mobile site, not door to door), ``add_after_seal``,
  ``tube_two_sites``, ``unknown_site``. An anomaly never drops a scan.
* ``outside_register``: people sampled who are not on the register (visitors, floating
  population), kept and counted per round, site and community.

Everything is derived from the stored events, so many small scan files give the same tubes as
one big file. The views read warehouse tables and write nothing.
"""

from __future__ import annotations

import duckdb

from kernel.config import PoolPolicyConfig


def define_tube_views(con: duckdb.DuckDBPyConnection, policy: PoolPolicyConfig) -> None:
    sealed_single = "TRUE" if policy.sealed == "single" else "FALSE"
    # the pool-size policy by zone itself, for one person: the tube size the policy allows them
    # (NULL: one tube for their household, a sealed zone's rule); ``tube_policy`` judges tubes
    # with it, ``scope_need`` (sampling/need.py) counts the tubes a whole round needs with it
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO zone_pool_size(key_group, zone, household_id, round_size) AS
        CASE WHEN key_group IS NOT NULL THEN {policy.key_group_size}
             WHEN zone = 'sealed' AND (household_id IS NULL OR {sealed_single}) THEN 1
             WHEN zone = 'controlled' THEN {policy.controlled_size}
             WHEN zone = 'sealed' THEN NULL
             ELSE round_size END
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW tube_members AS
        SELECT round_id, tube_barcode, person_key, id_type, id_number,
               min(scanned_at) FILTER (WHERE event = 'add') AS added_at,
               max(scanned_at) FILTER (WHERE event = 'add') AS last_added_at,
               bool_or(resample) AS resample
        FROM scans
        WHERE event IN ('add', 'void')
        -- the identity is fixed by the person key (its HMAC): grouping by it costs nothing, and
        -- only fixed-size aggregate states remain, which DuckDB can spill at 24 M people
        GROUP BY round_id, tube_barcode, person_key, id_type, id_number
        -- the last event wins; at the same instant a void beats an add
        HAVING arg_max(event = 'add', epoch_us(scanned_at) * 2 + (event = 'void')::BIGINT)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW tubes AS
        WITH ev AS (
            SELECT round_id, tube_barcode,
                   min(site_id) AS site_id,
                   count(DISTINCT site_id) AS site_count,
                   arg_min(capacity, scanned_at) FILTER (WHERE capacity IS NOT NULL) AS printed_capacity,
                   min(scanned_at) FILTER (WHERE event = 'add') AS collected_at,
                   min(scanned_at) FILTER (WHERE event = 'seal') AS sealed_at,
                   bool_or(resample) AS resample
            FROM scans GROUP BY round_id, tube_barcode
        ), m AS (
            SELECT round_id, tube_barcode, count(*) AS members FROM tube_members GROUP BY ALL
        ), per_tube AS (
            -- one grouping over both (not a join), so a filter on a tube reaches both sides
            SELECT round_id, tube_barcode, max(site_id) AS site_id, max(site_count) AS site_count,
                   max(printed_capacity) AS printed_capacity, max(collected_at) AS collected_at,
                   max(sealed_at) AS sealed_at, bool_or(resample) AS resample, max(members) AS members
            FROM (SELECT *, NULL::BIGINT AS members FROM ev
                  UNION ALL BY NAME SELECT round_id, tube_barcode, members FROM m)
            GROUP BY round_id, tube_barcode
        )
        SELECT t.round_id, t.tube_barcode, t.site_id, t.site_count,
               coalesce(t.printed_capacity, r.pool_size) AS capacity,
               t.collected_at, t.sealed_at, coalesce(t.members, 0) AS members, t.resample
        FROM per_tube t JOIN rounds r USING (round_id)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW tube_policy AS
        -- issue 15: only the members whose own policy can differ from the round's pool size (a key
        -- group, or a grid ever sealed or controlled) are joined to the register and their zones;
        -- every other member allows the round's size (``zone_pool_size``), so a tube's policy is
        -- the round's size, narrowed by those few (a whole-city join of members, register and
        -- zones before: 26 s of the report at 25.7 M)
        WITH z AS (
            -- each zone of a grid from its start to the next one's (the zone a member was added
            -- under, by an equality join on the grid: an ASOF join sorted every member, 3 s at 25.7 M)
            SELECT grid, zone, since, lead(since) OVER (PARTITION BY grid ORDER BY since) AS until
            FROM (SELECT grid, zone, coalesce(since, TIMESTAMPTZ '-infinity') AS since FROM zones)
        ), special AS (
            SELECT person_key, grid, key_group, household_id FROM register
            WHERE key_group IS NOT NULL OR grid IN (SELECT grid FROM zones WHERE zone IN ('sealed', 'controlled'))
        ), mem AS (
            SELECT tm.round_id, tm.tube_barcode, coalesce(tm.added_at, TIMESTAMPTZ 'infinity') AS added_at,
                   sp.grid, sp.key_group, sp.household_id
            FROM tube_members tm JOIN special sp USING (person_key)
        ), member_zone AS (
            SELECT mem.*, z.zone FROM mem LEFT JOIN z
              ON mem.grid = z.grid AND mem.added_at >= z.since AND (z.until IS NULL OR mem.added_at < z.until)
        ), per_tube AS (
            SELECT mz.round_id, mz.tube_barcode, count(*) AS special_members,
                   min(zone_pool_size(mz.key_group, mz.zone, mz.household_id, r.pool_size)) AS allowed_size,
                   bool_or(mz.zone = 'sealed') AS sealed_zone,
                   count(*) FILTER (WHERE mz.zone = 'sealed') AS sealed_members,
                   count(DISTINCT mz.household_id) FILTER (WHERE mz.zone = 'sealed') AS sealed_households
            FROM member_zone mz JOIN rounds r USING (round_id)
            GROUP BY mz.round_id, mz.tube_barcode
        )
        -- a member of no key group in a grid never sealed or controlled allows the round's size
        SELECT t.round_id, t.tube_barcode,
               CASE WHEN t.members > coalesce(p.special_members, 0) THEN least(r.pool_size, p.allowed_size)
                    ELSE p.allowed_size END AS allowed_size,
               coalesce(p.sealed_zone, FALSE) AS sealed_zone,
               coalesce(p.sealed_members, 0) AS sealed_members,
               coalesce(p.sealed_households, 0) AS sealed_households
        FROM tubes t JOIN rounds r USING (round_id) LEFT JOIN per_tube p USING (round_id, tube_barcode)
        WHERE t.members > 0
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW tube_anomalies AS
        -- issue 15: the zone policy of every tube once (two rules below read it; a whole-city
        -- join of members, register and zones, derived twice before)
        WITH tube_policy AS MATERIALIZED (SELECT * FROM tube_policy)
        SELECT 'over_capacity' AS kind, t.round_id, t.tube_barcode, NULL::VARCHAR AS box_id,
               format('{} people in a tube for {}', t.members, t.capacity) AS detail,
               t.sealed_at AS detected_at
        FROM tubes t WHERE t.members > t.capacity
        UNION ALL
        SELECT 'above_zone_policy', t.round_id, t.tube_barcode, NULL,
               CASE WHEN p.sealed_households > 1
                    THEN format('{} households in one tube in a sealed zone', p.sealed_households)
                    ELSE format('{} people where zone policy allows {}', t.members, p.allowed_size) END,
               t.sealed_at
        FROM tubes t JOIN tube_policy p USING (round_id, tube_barcode)
        WHERE t.members > p.allowed_size OR p.sealed_households > 1
        UNION ALL
        -- a sealed zone (封控) is sampled at home, door to door: never at a fixed or mobile site
        SELECT 'sealed_at_site', t.round_id, t.tube_barcode, NULL,
               format('{} sealed-zone resident(s) sampled at {} site {}', p.sealed_members, st.kind, t.site_id),
               t.collected_at
        FROM tubes t JOIN tube_policy p USING (round_id, tube_barcode) JOIN sites st USING (site_id)
        WHERE p.sealed_members > 0 AND st.kind <> 'home'
        UNION ALL
        SELECT 'add_after_seal', t.round_id, t.tube_barcode, NULL,
               format('{} add scan(s) after the seal', count(*)), min(s.scanned_at)
        FROM tubes t JOIN scans s USING (round_id, tube_barcode)
        WHERE s.event = 'add' AND s.scanned_at > t.sealed_at
        GROUP BY t.round_id, t.tube_barcode
        UNION ALL
        SELECT 'tube_two_sites', t.round_id, t.tube_barcode, NULL,
               format('tube scanned at {} sites', t.site_count), t.collected_at
        FROM tubes t WHERE t.site_count > 1
        UNION ALL
        SELECT 'unknown_site', s.round_id, s.tube_barcode, NULL,
               format('site {} is not in the sites feed', s.site_id), min(s.scanned_at)
        FROM scans s ANTI JOIN sites USING (site_id)
        GROUP BY s.round_id, s.tube_barcode, s.site_id
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW outside_register AS
        SELECT tm.round_id, t.site_id, s.district, s.community, count(DISTINCT tm.person_key) AS people
        FROM tube_members tm
        ANTI JOIN register reg USING (person_key)
        JOIN tubes t USING (round_id, tube_barcode)
        LEFT JOIN sites s USING (site_id)
        GROUP BY ALL
        """
    )
