"""Where a registered person is to be sampled (采样去向), judged at ``as_of`` (DESIGN §8):

* a resident of a sealed zone (封控) is never sent to a site: door to door (上门采样) by their
  grid's team, reason ``sealed_zone``;
* so is a person with limited mobility (``mobility_limited``);
* a resident of a controlled zone (管控) may only go to a site inside their own community; where
  the community has no fixed or mobile site, door to door (``controlled_no_site_in_community``);
* everyone else goes to a site of their community, else subdistrict, else district.

``sampling_route(as_of)``: per registered person, the zone of their grid in force at ``as_of``
(the latest ``since`` not after it), ``door_to_door_reason`` (null: goes to a site) and
``site_scope`` (``community`` or ``district``: how far a site may be). The reminders and the
grid workers' door-to-door worklists both read it, so an SMS never sends someone the worklist
holds, and the other way round.
"""

from __future__ import annotations

import duckdb


def define_route_views(con: duckdb.DuckDBPyConnection) -> None:
    # the zone in force per grid at ``as_of``: the latest ``since`` not after it (no time: always)
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO grid_zone(as_of) AS TABLE
        SELECT grid, arg_max(zone, coalesce(since, TIMESTAMPTZ '-infinity')) AS zone
        FROM zones WHERE coalesce(since, TIMESTAMPTZ '-infinity') <= as_of
        GROUP BY grid
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO sampling_route(as_of) AS TABLE
        WITH zone_now AS (
            SELECT grid, zone FROM grid_zone(as_of)
        ), community_sites AS (
            SELECT DISTINCT district, community FROM sites WHERE kind <> 'home'
        )
        SELECT reg.person_key, reg.grid, zn.zone, reg.mobility_limited,
               CASE WHEN zn.zone = 'sealed' THEN 'sealed_zone'
                    WHEN reg.mobility_limited THEN 'mobility_limited'
                    WHEN zn.zone = 'controlled' AND cs.community IS NULL THEN 'controlled_no_site_in_community'
               END AS door_to_door_reason,
               CASE WHEN zn.zone = 'controlled' THEN 'community' ELSE 'district' END AS site_scope
        FROM register reg
        LEFT JOIN zone_now zn USING (grid)
        LEFT JOIN community_sites cs ON cs.district = reg.district AND cs.community = reg.community
        """
    )
