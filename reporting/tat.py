"""Turnaround time (TAT) per tube and link: collected → sealed → departed → received → called →
published, in hours, and breaches of the targets: collected → called
within ``collected_to_called_hours`` (``key_group_collected_to_called_hours`` for a tube with a
key-group member). The instruments' exports carry the run's end, not its start: the link
``received → called`` holds the run.

Every time is the event's, never the wall clock, so two clean ingests of one inbox give the
same TAT, in a replay too: a call is *published* when the results file holding it was complete,
the last run end (``finished_at``) the file reports. (When a file was uploaded is not an event
of the city: ``ingest_ledger.ingested_at`` is the machine's clock and would make a replayed
round read 40,000 h.)"""

from __future__ import annotations

import duckdb

from kernel.config import TatConfig

LINKS = ("collected_to_sealed", "sealed_to_departed", "departed_to_received", "received_to_called",
         "called_to_published")


def define_tat_views(con: duckdb.DuckDBPyConnection, tat: TatConfig) -> None:
    """``key_group_tubes`` (the tubes holding a key-group member), ``tat_target_hours(key_group)``
    and ``tat_breach(collected_at, called_at, key_group)`` (the TAT target, collected → called,
    and whether a tube missed it), and ``tube_tat(rid, as_of)``.
    Needs :func:`warehouse.views.define_views`."""
    hours = lambda a, b: f"round(epoch({b} - {a}) / 3600, 2)"  # noqa: E731
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW key_group_tubes AS
        SELECT DISTINCT tm.round_id, tm.tube_barcode FROM tube_members tm JOIN register reg USING (person_key)
        WHERE reg.key_group IS NOT NULL
        """
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP MACRO tat_target_hours(key_group) AS
            CASE WHEN key_group THEN {tat.key_group_collected_to_called_hours} ELSE {tat.collected_to_called_hours} END"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP MACRO tat_breach(collected_at, called_at, key_group) AS
           called_at - collected_at > to_seconds(tat_target_hours(key_group) * 3600)"""
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO tube_tat(rid, as_of) AS TABLE
        WITH key_tubes AS (
            SELECT tube_barcode FROM key_group_tubes WHERE round_id = rid
        ), k AS (
            SELECT k.tube_barcode, k.called_at, greatest(k.called_at, f.complete_at) AS published_at
            FROM tube_calls(as_of) k
            LEFT JOIN (SELECT source_hash, max(finished_at) AS complete_at FROM results GROUP BY source_hash) f
                   ON f.source_hash = k.called_by_file
            WHERE k.final
        )
        SELECT c.round_id, c.tube_barcode, c.lab_id, c.collected_at, c.sealed_at, coalesce(c.departed_at, c.packed_at) AS departed_at,
               c.received_at, k.called_at, k.published_at,
               {hours('c.collected_at', 'c.sealed_at')} AS collected_to_sealed,
               {hours('c.sealed_at', 'coalesce(c.departed_at, c.packed_at)')} AS sealed_to_departed,
               {hours('coalesce(c.departed_at, c.packed_at)', 'c.received_at')} AS departed_to_received,
               {hours('c.received_at', 'k.called_at')} AS received_to_called,
               {hours('k.called_at', 'k.published_at')} AS called_to_published,
               {hours('c.collected_at', 'k.called_at')} AS total_hours,
               kt.tube_barcode IS NOT NULL AS key_group,
               tat_target_hours(kt.tube_barcode IS NOT NULL) AS target_hours,
               tat_breach(c.collected_at, coalesce(k.called_at, as_of), kt.tube_barcode IS NOT NULL) AS breach
        FROM custody c LEFT JOIN k USING (tube_barcode) LEFT JOIN key_tubes kt USING (tube_barcode)
        WHERE c.round_id = rid AND c.collected_at <= as_of
        """
    )
