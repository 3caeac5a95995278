"""A scope (范围): the derived views over the facts of a few tubes, for a rule judged on them.

The views of :mod:`warehouse.views` read the warehouse's fact tables by name. A rule that is
judged on a few tubes (the round rule's order look-up for the people of one scan file) would
still aggregate the whole city's scans, receipts and results under them, and filter after. In
a scope, the facts of those tubes are copied once into temporary tables named like the fact
tables, which DuckDB resolves before the warehouse's: the very same views and macros (one rule,
one place) then derive the tubes' state from their own facts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


#: the fact tables a tube's derived state is read from, each as the row ids of its share of one
#: scope (the scope copies those rows whole: the filter reads only the columns it names, and the
#: copy fetches the other columns of those rows alone; selecting ``*`` under a semi join read
#: every column of the 26.8 M scans at 25.7 M people, ≈ 1.4 s a results batch, against ≈ 0.5 s,
#: docs/benchmarks.md, 2026-12-02 evening; a batch's own uncommitted rows have row ids too): the
#: scans, manifests and receipts of the scope's tubes; of every plate they ran on, the wells of
#: its controls (they decide whether the plate is valid: ``control_sample``) and of the tubes,
#: every reading of them (a well re-reported by a later file, even with another sample, stays
#: whole, so the newest reading wins as in the city). A results row is a tube's when its trimmed
#: sample is the tube: the exact match, or a sample longer than the scope's shortest barcode that
#: trims to one (so the untrimmed few are found without trimming every sample of the city: DuckDB
#: skips the row groups whose samples are all short enough).
_SCOPED_FACTS = {
    "scans": "SELECT rowid FROM {wh}.scans WHERE tube_barcode IN (SELECT tube_barcode FROM scope_tubes)",
    "manifests": "SELECT rowid FROM {wh}.manifests WHERE tube_barcode IN (SELECT tube_barcode FROM scope_tubes)",
    "receipts": "SELECT rowid FROM {wh}.receipts WHERE tube_barcode IN (SELECT tube_barcode FROM scope_tubes)",
    "results": """WITH plates AS MATERIALIZED (
                      SELECT r.rowid, r.lab_id, r.run_id, r.plate_id, r.well, r.sample FROM {wh}.results r SEMI JOIN (
                          SELECT DISTINCT lab_id, run_id, plate_id FROM {wh}.results
                          WHERE sample IN (SELECT tube_barcode FROM scope_tubes)
                             OR (strlen(sample) > {shortest} AND trim(sample) IN (SELECT tube_barcode FROM scope_tubes))
                      ) p USING (lab_id, run_id, plate_id)
                  ), wells AS (
                      SELECT DISTINCT lab_id, run_id, plate_id, well FROM plates
                      WHERE control_sample(sample) OR trim(sample) IN (SELECT tube_barcode FROM scope_tubes)
                  )
                  SELECT rowid FROM plates SEMI JOIN wells USING (lab_id, run_id, plate_id, well)""",
    # the register is reference data of people, not a fact of a tube: in scope nobody is
    # registered (a rule on tubes and their orders needs no grid nor home visit)
    "register": "SELECT rowid FROM {wh}.register WHERE false",
}


def warehouse_tables(con: duckdb.DuckDBPyConnection) -> str:
    """The qualified name of the warehouse's own tables (``"<db>".main``): in a scope, the
    unscoped table, e.g. the register, which a scope leaves empty."""
    return '"{}".main'.format(con.execute("SELECT current_database()").fetchall()[0][0].replace('"', '""'))


@contextmanager
def scoped_to_tubes(con: duckdb.DuckDBPyConnection, tubes_sql: str) -> Iterator[int]:
    """Within the block the derived views see the facts of a few tubes only: ``tubes_sql`` (a
    query over the warehouse with a column ``tube_barcode``) names them. Each fact table a tube's
    state is derived from (``_SCOPED_FACTS``) is copied for them, once, into a temporary table of
    the same name, which the views read in place of the warehouse's; on exit the copies are
    dropped and the views read the warehouse again. Yields the number of tubes.

    A rule judged on a tube (its custody, call, members, lost or refused, the orders it raises)
    then costs that tube's facts, not the city's: each warehouse table is read once, filtered
    before any aggregation. Correct for a tube in scope and for a person all of whose tubes are
    in scope (their orders, other good tubes); other rows the views return are partial. In scope
    the register is empty; the small reference tables (rounds, sites, labs, zones, the ledger) are
    read as they are. Only reads within the block: a write would go to the copies. Never in a
    ``snapshot`` session (its views read the snapshot, not the facts). Needs the derived views
    (:func:`warehouse.views.define_views`)."""
    if con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary"
                   " AND (table_name = ANY($t) OR table_name LIKE '%\\_snapshot' ESCAPE '\\')",
                   {"t": list(_SCOPED_FACTS)}).fetchall()[0][0]:
        raise RuntimeError("scoped_to_tubes: already scoped, or a snapshot session")
    wh = warehouse_tables(con)
    made: list[str] = []
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE scope_tubes AS SELECT DISTINCT tube_barcode FROM ({tubes_sql})"
                    " WHERE tube_barcode IS NOT NULL")
        made.append("scope_tubes")
        tubes, shortest = con.execute("SELECT count(*), coalesce(min(strlen(tube_barcode)), 0) FROM scope_tubes").fetchall()[0]
        for name, sql in _SCOPED_FACTS.items():
            rows = sql.format(wh=wh, shortest=int(shortest)) if tubes else f"SELECT rowid FROM {wh}.{name} WHERE false"
            con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {wh}.{name} WHERE rowid IN (SELECT rowid FROM ({rows}))")
            made.append(name)
        yield tubes
    finally:
        for name in reversed(made):
            con.execute(f"DROP TABLE IF EXISTS temp.main.{name}")
