"""SQL text built from configuration and small lists: the one place values are quoted into
SQL (for constant filters DuckDB can push through views, where bound parameters cannot go)."""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

#: Up to this many keys are looked up in a table with a unique index on them as an IN list of
#: literals (:func:`sql_key_lookup`), which DuckDB answers by ART look-ups (its own rule:
#: ``index_scan_max_count`` 2048); more are joined (a join, or ``IN (SELECT …)``, scans the
#: whole table: at 25.7 M people the register, ≈ 1 s a look-up). The register upsert also
#: allows a share of the table (``warehouse.writer``); the pool alerts keep to this count.
INDEX_LOOKUP_MAX_KEYS = 2048


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
    scan the table); ``FALSE`` when there are none. Meant for few keys
    (:data:`INDEX_LOOKUP_MAX_KEYS`)."""
    data_type = con.sql(f"SELECT {key} FROM {table} LIMIT 0").types[0]  # bound, not run
    values = [v for (v,) in con.execute(f"SELECT DISTINCT CAST({key} AS VARCHAR) FROM {relation}"
                                         f" WHERE {key} IS NOT NULL ORDER BY 1").fetchall()]
    if not values:
        return "FALSE"
    literals = ", ".join(sql_text(v) + f"::{data_type}" for v in values)
    return f"{alias}.{key} IN ({literals})"

