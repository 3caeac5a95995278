"""SQL text built from configuration and small lists: the one place values are quoted into
SQL (for constant filters DuckDB can push through views, where bound parameters cannot go)."""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

#: Up to this many keys — or up to ``INDEX_LOOKUP_SHARE`` of the table's rows, when that is
#: more (:func:`served_by_index`, the register upsert's rule) — are looked up in a table with a
#: unique index on them as an IN list of literals (:func:`sql_key_lookup`), which DuckDB answers
#: by ART look-ups (its own rule: ``index_scan_max_count`` 2048, ``index_scan_percentage``
#: 0.001); more are joined (a join, or ``IN (SELECT …)``, scans the whole table: at 25.7 M
#: people the register, ≈ 1 s a look-up). The pool alerts keep to the count alone
#: (``reporting.alerts``: thousands of literals cost more than the join there).
INDEX_LOOKUP_MAX_KEYS = 2048
INDEX_LOOKUP_SHARE = 0.001


def sql_text(value: str) -> str:
    """A string literal: ``O'Brien`` → ``'O''Brien'``."""
    return "'" + value.replace("'", "''") + "'"


def sql_in_list(values: Iterable[str]) -> str:
    """``('a', 'b')`` for ``x IN ...``; ``(NULL)`` (matches nothing) when empty."""
    quoted = ", ".join(sql_text(v) for v in values)
    return f"({quoted})" if quoted else "(NULL)"


def sql_text_list(values: Iterable[str]) -> str:
    """A ``VARCHAR[]`` literal."""
    return "[" + ", ".join(sql_text(v) for v in values) + "]::VARCHAR[]"


def sql_key_lookup(con: duckdb.DuckDBPyConnection, table: str, key: str, relation: str, alias: str = "t") -> str:
    """``<alias>.<key> IN (…)``: the distinct keys of ``relation`` as literals of the column's
    type, so that DuckDB looks them up through ``table``'s unique index on ``key`` (a join would
    scan the table); ``FALSE`` when there are none. Meant for the few keys
    :func:`served_by_index` allows."""
    data_type = con.sql(f"SELECT {key} FROM {table} LIMIT 0").types[0]  # bound, not run
    values = [v for (v,) in con.execute(f"SELECT DISTINCT CAST({key} AS VARCHAR) FROM {relation}"
                                         f" WHERE {key} IS NOT NULL ORDER BY 1").fetchall()]
    if not values:
        return "FALSE"
    literals = ", ".join(sql_text(v) + f"::{data_type}" for v in values)
    return f"{alias}.{key} IN ({literals})"


def estimated_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """A table of the warehouse (``main`` of the current database): its row count as the
    catalogue keeps it (no scan)."""
    rows = con.execute("SELECT estimated_size FROM duckdb_tables() WHERE database_name = current_database()"
                       " AND schema_name = 'main' AND table_name = ?", [table]).fetchall()
    return int(rows[0][0] or 0) if rows else 0


def served_by_index(con: duckdb.DuckDBPyConnection, table: str, keys: int) -> bool:
    """Are ``keys`` keys looked up in ``table`` (of the warehouse, with a unique index on the
    key) through the index, :func:`sql_key_lookup`, rather than by a join over the table?"""
    return keys <= INDEX_LOOKUP_MAX_KEYS or keys <= INDEX_LOOKUP_SHARE * estimated_rows(con, table)
