"""CSV files that people open in a spreadsheet (DESIGN §7): the untested lists, re-sampling
orders, key-group lists and door-to-door worklists. :func:`write_people_csv` is the one writer
of them all; Parquet files (for machines) are written as they are.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (CSV
injection: ``=HYPERLINK(…)``, ``+cmd|' /C calc'!A0``), and a register or a scan can carry any
text in a name or an address. :func:`neutralise_cells` therefore prefixes ``'`` to every text
cell, in every column, that starts with one of those characters, with a tab, a carriage return
or a line break (OWASP's rule), or with their full-width forms ``＝＋－＠`` (Chinese input
methods type them; a Chinese-locale spreadsheet may read them as the ASCII ones). The
apostrophe shows in the cell: the value is visibly text, never run.

One exception, on purpose: a cell that is exactly an E.164 phone number (``+`` then 7 to 15
digits, e.g. ``+8613800001111``, the register's normalised phones) is left as it is. A
spreadsheet reads it as a plain number, which calls nothing; prefixing it would spoil every
phone of the list for the programs that read these files. Any other ``+`` cell
(``+86 138…``, ``+1+cmd|…``) is prefixed. Number, boolean and time columns cannot hold a
formula (times are written as ISO text, which starts with a digit).

Files carry a UTF-8 BOM, so Excel on Chinese Windows reads them as UTF-8.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Iterable
from typing import IO

import polars as pl

#: a cell starting with one of these is prefixed with ``'``
FORMULA_START = r"^[=+\-@\t\r\n＝＋－＠]"
#: an E.164 phone number: a number to a spreadsheet, not a formula; kept as it is
E164 = r"^\+[0-9]{7,15}$"


def formula_like(text: pl.Expr) -> pl.Expr:
    """True for a text a spreadsheet would run as a formula (it starts with ``FORMULA_START``):
    the one rule, for CSV cells (:func:`neutralise_cells`) and workbook cells
    (``reporting.workbook``, which writes them with Excel's quote prefix)."""
    return text.str.contains(FORMULA_START)


def neutralise_cells(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text cell that a spreadsheet would run as a formula, prefixed with ``'``
    (set-based, every text column); other cells unchanged."""
    text = [c for c, t in frame.schema.items() if t in (pl.Utf8, pl.Categorical, pl.Enum)]
    return frame.with_columns(
        pl.when(formula_like(pl.col(c).cast(pl.Utf8)) & ~pl.col(c).cast(pl.Utf8).str.contains(E164))
        .then(pl.lit("'") + pl.col(c).cast(pl.Utf8))
        .otherwise(pl.col(c).cast(pl.Utf8))
        .alias(c)
        for c in text
    )


def iso_times(frame: pl.DataFrame) -> pl.DataFrame:
    """Times as ISO text with their offset, for a spreadsheet."""
    return frame.with_columns(pl.col(c).dt.to_string("%Y-%m-%dT%H:%M:%S%:z")
                              for c, t in frame.schema.items() if isinstance(t, pl.Datetime))


def write_people_csv(frame: pl.DataFrame, path: Path | IO[bytes]) -> None:
    """The one writer of CSV files for people: times as ISO text, formula cells neutralised,
    a UTF-8 BOM. ``path`` may be a binary buffer (the results export hashes its bytes first)."""
    neutralise_cells(iso_times(frame)).write_csv(path, include_bom=True)


# --- issue 15: a list too long to hold at once --------------------------------------------------

def write_people_csv_batches(frames: Iterable[pl.DataFrame], path: Path, empty: pl.DataFrame | None = None) -> int:
    """:func:`write_people_csv` for a list read chunk by chunk (e.g. a DuckDB result's record
    batches): the same rules and the same bytes as the whole frame at once (BOM and header
    before the first chunk only; every cell's rule is the cell's own). ``empty``: the columns,
    for a header when there is no chunk at all. Returns the rows written."""
    rows = 0
    with open(path, "wb") as out:
        for frame in frames:
            neutralise_cells(iso_times(frame)).write_csv(out, include_bom=out.tell() == 0,
                                                         include_header=out.tell() == 0)
            rows += frame.height
        if out.tell() == 0 and empty is not None:
            neutralise_cells(iso_times(empty)).write_csv(out, include_bom=True)
    return rows


def write_people_csv_parts(frame: pl.DataFrame, by: str, path_of: Callable[[object], Path]) -> int:
    """:func:`write_people_csv` for one file per value of ``by`` (e.g. a worklist per grid, at
    ``path_of(value)``), in the frame's order: the rules applied to the whole frame once (a
    cell's rule is the cell's own), then each part written, each with its BOM and header.
    Issue 15: a city's 13,000 worklists cost 13,000 rule passes before. Returns the files written."""
    # parted by the value as it was (a file's name never sees the neutralising apostrophe)
    ready = neutralise_cells(iso_times(frame)).with_columns(frame.get_column(by).alias(PART_KEY))
    parts = ready.partition_by(PART_KEY, as_dict=True, maintain_order=True, include_key=False)
    for (value,), part in parts.items():
        part.write_csv(path_of(value), include_bom=True)
    return len(parts)


#: the column :func:`write_people_csv_parts` parts by (never written)
PART_KEY = "__part"


def city_times(frame: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """Every time column in the city's time zone: the same instants, read as city time with its
    offset in the CSVs people open (``2022-04-04T20:00:00+08:00``, not ``…12:00:00+00:00``)."""
    return frame.with_columns(pl.col(c).dt.convert_time_zone(timezone)
                              for c, t in frame.schema.items() if isinstance(t, pl.Datetime) and t.time_zone)
