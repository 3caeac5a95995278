"""SQL text built from configuration and small lists: the one place values are quoted into
SQL (for constant filters DuckDB can push through views, where bound parameters cannot go)."""

from __future__ import annotations

from collections.abc import Iterable


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
