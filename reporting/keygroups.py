"""Key-group cycle compliance (重点人群): people tested on a fixed cycle (config
``[key_groups]``: group → days). A registered member of a key group is *overdue* when their
last sample in any round (a good tube: not refused, not lost) is older than their cycle at
``as_of``, or when they have none. Groups on the register that the config does not name are
counted as ``unknown cycle``, never silently dropped."""

from __future__ import annotations

import duckdb

from kernel.sql import sql_text


def define_key_group_views(con: duckdb.DuckDBPyConnection, cycles: dict[str, float]) -> None:
    """Needs :func:`warehouse.views.define_views`."""
    values = ", ".join(f"({sql_text(g)}, {float(days)})" for g, days in cycles.items()) or "(NULL, NULL)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO key_group_compliance(as_of) AS TABLE
        WITH cycle(key_group, days) AS (VALUES {values}), last AS (
            -- issue 15: the key groups' members' tubes only (not every person of the city grouped)
            SELECT person_key, max(added_at) AS last_sampled_at FROM good_tubes(as_of)
            WHERE person_key IN (SELECT person_key FROM register WHERE key_group IS NOT NULL) GROUP BY person_key
        )
        SELECT reg.person_key, reg.id_type, reg.id_number, reg.name, reg.phone, reg.district, reg.subdistrict,
               reg.community, reg.grid, reg.key_group, c.days AS cycle_days, l.last_sampled_at,
               CASE WHEN c.days IS NULL THEN 'unknown cycle'
                    WHEN l.last_sampled_at IS NULL OR l.last_sampled_at < as_of - to_seconds(c.days * 86400)
                    THEN 'overdue' ELSE 'in cycle' END AS compliance,
               l.last_sampled_at + to_seconds(c.days * 86400) AS due_by
        FROM register reg LEFT JOIN cycle c USING (key_group) LEFT JOIN last l USING (person_key)
        WHERE reg.key_group IS NOT NULL
        """
    )
