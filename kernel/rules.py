"""Row rules shared by every feed: vectorised checks that split a frame into good rows and
quarantined rows, each quarantined row with the column and the reason of the first rule it broke.

A raw inbox frame has every column as text plus ``_line`` (the row's line in its file).
"""

from __future__ import annotations

import functools

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    import duckdb

LINE = "_line"

QUARANTINE_SCHEMA = {LINE: pl.Int64, "column": pl.Utf8, "reason": pl.Utf8}


@dataclass(frozen=True)
class Rule:
    """A named row rule: ``broken`` is true on the rows that break it."""

    column: str
    reason: str
    broken: pl.Expr


#: An accepted row may carry boolean columns named ``warning: <text>``: a warning never stops
#: a row; the ledger counts the rows that carry it.
WARNING_PREFIX = "warning: "


@dataclass(frozen=True)
class Checked:
    """Outcome of a feed's rules on a batch of rows: the good rows (typed, with ``_line`` and
    any warning flags) and the quarantined ones (``_line``, ``column``, ``reason``)."""

    accepted: pl.DataFrame
    quarantined: pl.DataFrame


@dataclass(frozen=True)
class StageRule:
    """A rule that needs the warehouse, as SQL over ``incoming`` (the file's accepted rows with
    ``person_key``): it returns the rows with extra columns; a row whose ``required_column`` is
    null is quarantined with ``column`` and ``reason``, unless its ``hold_column`` is true."""

    #: the SQL, or a function building it from ``incoming`` (for constant lists the views can push down)
    sql: str | Callable[[duckdb.DuckDBPyConnection], str]
    required_column: str
    column: str
    reason: str
    #: an equivalent, cheaper SQL, used when ``quick_when_sql`` (over ``incoming``) is true
    quick_sql: str | None = None
    quick_when_sql: str | None = None
    #: a boolean column: a row without ``required_column`` where it is true is kept (taken, to be
    #: settled later by the feed's writer) instead of quarantined
    hold_column: str | None = None


@dataclass(frozen=True)
class StageWarning:
    """A warning that needs the warehouse: ``condition`` is SQL over a staged row's columns (the
    derived views defined), true on the rows that get the warning ``name``. The rows are kept;
    the ledger counts them among the file's warnings (the stock feed's unknown holder)."""

    name: str
    condition: str


def blank(column: str) -> pl.Expr:
    """True where the text column is null or only white space."""
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def required(column: str) -> Rule:
    return Rule(column, f"missing {column}", blank(column))


def one_of(column: str, allowed: Iterable[str], *, optional: bool = False) -> Rule:
    allowed = sorted(set(allowed))
    value = pl.col(column).str.strip_chars().str.to_lowercase()
    bad = ~value.is_in([a.lower() for a in allowed])
    if optional:
        bad = bad & ~blank(column)
    else:
        bad = bad | blank(column)
    return Rule(column, f"{column} not one of {', '.join(allowed)}", bad.fill_null(True))


#: what no field may hold: control characters (C0 such as NUL and escape, DEL, C1) and the
#: invisible format characters that make two texts look alike (zero-width space, left-to-right
#: and right-to-left marks and overrides, word joiner, BOM). One NUL inside a passport number
#: would make a new person.
CONTROL_CHARACTERS = r"[\p{Cc}\x{200B}\x{200E}\x{200F}\x{202A}-\x{202E}\x{2060}\x{2066}-\x{2069}\x{FEFF}]"
#: free text (addresses) may hold tabs and line breaks, nothing else of the above
FREE_TEXT_CONTROL_CHARACTERS = CONTROL_CHARACTERS.replace(r"[\p{Cc}", r"[[\p{Cc}--[\t\n\r]]", 1)
#: the longest field, in characters, after surrounding white space is stripped: IDs, names,
#: codes, barcodes and times (a sane bound far above any real value) …
MAX_FIELD_CHARS = 200
#: … and free text (addresses)
MAX_FREE_TEXT_CHARS = 1_000
FREE_TEXT_COLUMNS = ("address",)


def text_rules(columns: Iterable[str]) -> list[Rule]:
    """The rules every text field of every feed keeps, checked first: no longer than
    ``MAX_FIELD_CHARS`` (``MAX_FREE_TEXT_CHARS`` for free text) and no control or invisible
    character (free text may hold tabs and line breaks). Judged on the value without its
    surrounding white space; a null keeps them. Reasons name the column and the limit, never
    the value."""
    rules = []
    for column in columns:
        free = column in FREE_TEXT_COLUMNS
        limit = MAX_FREE_TEXT_CHARS if free else MAX_FIELD_CHARS
        value = pl.col(column).str.strip_chars()
        rules += [
            Rule(column, f"{column} longer than {limit:,} characters", (value.str.len_chars() > limit).fill_null(False)),
            Rule(column, f"{column} holds a control or invisible character",
                 value.str.contains(FREE_TEXT_CONTROL_CHARACTERS if free else CONTROL_CHARACTERS).fill_null(False)),
        ]
    return rules


def split_by_rules(frame: pl.DataFrame, rules: Sequence[Rule]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` into rows that keep every rule and rows that broke one (the first wins)."""
    if not rules:
        return frame, pl.DataFrame(schema=QUARANTINE_SCHEMA)
    # Each rule's mask is computed once; the first broken rule names the reason.
    masks = frame.select(
        rule.broken.fill_null(True).alias(f"__rule{i}") for i, rule in enumerate(rules)
    )
    first = pl.coalesce(
        pl.when(pl.col(f"__rule{i}")).then(pl.lit(i, dtype=pl.Int32)) for i in range(len(rules))
    )
    index = masks.select(first.alias("__rule")).to_series()
    good = frame.filter(index.is_null())
    broken = frame.select(LINE).with_columns(index).filter(pl.col("__rule").is_not_null())
    bad = broken.select(
        pl.col(LINE),
        pl.col("__rule").replace_strict(list(range(len(rules))), [r.column for r in rules],
                                        return_dtype=pl.Utf8).alias("column"),
        pl.col("__rule").replace_strict(list(range(len(rules))), [r.reason for r in rules],
                                        return_dtype=pl.Utf8).alias("reason"),
    )
    return good, bad


def concat_quarantine(*parts: pl.DataFrame) -> pl.DataFrame:
    frames = [p.select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA) for p in parts if p.height]
    if not frames:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    return pl.concat(frames).sort(LINE)


def stripped(column: str) -> pl.Expr:
    """The column's text without surrounding white space, empty text as null."""
    value = pl.col(column).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value).alias(column)


_TRUE = ["true", "t", "yes", "y", "1", "是"]
_FALSE = ["false", "f", "no", "n", "0", "否", ""]


def boolean_rule(column: str) -> Rule:
    value = pl.col(column).str.strip_chars().str.to_lowercase()
    return Rule(column, f"{column} not a yes/no value", ~value.is_in(_TRUE + _FALSE) & value.is_not_null())


def as_boolean(column: str) -> pl.Expr:
    value = pl.col(column).str.strip_chars().str.to_lowercase()
    return value.is_in(_TRUE).fill_null(False).alias(column)


_WITH_OFFSET = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M:%S%.fZ")
_LOCAL = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_time(column: str, timezone: str) -> pl.Expr:
    """ISO 8601 text to a UTC instant; a time without offset is local time of ``timezone``.

    Unparseable text becomes null (callers pair it with :func:`time_rule`). The formats are
    tried in their order and the first that parses a value wins; the first (with an offset,
    what the feeds send) reads every row, the others only the rows it leaves (issue 15: nine
    parses of every row were a third of checking a scans file).
    """
    value = pl.col(column).str.strip_chars().str.replace(r"Z$", "+00:00")
    return value.map_batches(functools.partial(_parse_times, timezone=timezone), return_dtype=_UTC_TIME,
                             is_elementwise=True).alias(column)


_UTC_TIME = pl.Datetime("us", "UTC")


def _time_formats(value: pl.Expr, timezone: str) -> list[pl.Expr]:
    """Each format's parse of ``value`` as a UTC instant, in the order they are tried."""
    return [
        *(value.str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC")
          for fmt in _WITH_OFFSET),
        *(value.str.to_datetime(fmt, strict=False, time_unit="us")
          .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
          .dt.convert_time_zone("UTC") for fmt in _LOCAL),
    ]


def _parse_times(texts: pl.Series, *, timezone: str) -> pl.Series:
    """:func:`parse_time` over one batch of (stripped) texts."""
    first, *others = _time_formats(pl.col("t"), timezone)
    parsed = texts.to_frame("t").select(first).to_series()
    missed = parsed.is_null() & texts.is_not_null()
    if not missed.any():
        return parsed
    at = missed.arg_true()
    rest = texts.gather(at).to_frame("t").select(pl.coalesce(others)).to_series()
    return parsed.scatter(at, rest)


def with_parsed_times(frame: pl.DataFrame, columns: Iterable[str], timezone: str) -> pl.DataFrame:
    """``frame`` with each time column also parsed (:func:`parse_time`) into its
    :func:`parsed_column`, once: its :func:`time_rule` reads it and the rows kept take it
    (:func:`parsed_time`), where parsing it for both was a fifth of checking a scans file
    (issue 15)."""
    return frame.with_columns(parse_time(c, timezone).alias(parsed_column(c)) for c in columns)


def parsed_column(column: str) -> str:
    """The name of ``column``'s parsed time in a frame of :func:`with_parsed_times`."""
    return f"__parsed {column}"


def parsed_time(column: str) -> pl.Expr:
    """``column``'s parsed time (:func:`with_parsed_times`), in the column's place."""
    return pl.col(parsed_column(column)).alias(column)


def time_rule(column: str, *, optional: bool = False) -> Rule:
    """The time is unreadable: its parse in a frame of :func:`with_parsed_times` is null;
    ``optional``: a blank is no time, not a broken one."""
    bad = pl.col(parsed_column(column)).is_null().alias(column)
    if optional:
        bad = bad & ~blank(column)
    return Rule(column, f"{column} not an ISO 8601 time", bad)


def clock_rule(column: str) -> Rule:
    """HH:MM (optional column)."""
    value = pl.col(column).str.strip_chars()
    ok = value.str.contains(r"^([01]?\d|2[0-3]):[0-5]\d$")
    return Rule(column, f"{column} not HH:MM", ~ok.fill_null(False) & ~blank(column))


def as_clock(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().str.to_time("%H:%M", strict=False).alias(column)


def positive_int_rule(column: str, *, optional: bool = True) -> Rule:
    value = pl.col(column).str.strip_chars().cast(pl.Int64, strict=False)
    bad = value.is_null() | (value < 0)
    if optional:
        bad = bad & ~blank(column)
    return Rule(column, f"{column} not a whole number", bad)


def with_columns_present(frame: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
    """Add absent optional columns as null text so rules can refer to them."""
    missing = [c for c in columns if c not in frame.columns]
    if not missing:
        return frame
    return frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c) for c in missing)
