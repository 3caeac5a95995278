"""``report.xlsx``: the report's aggregate tables as an Excel workbook for the screening command
(指挥部), written with xlsxwriter. :func:`write_workbook` is the one writer; the report
(``reporting.report.workbook_sheets``) decides which sheets it holds.

How a sheet is written:

* one sheet per frame, in the order given; the header row bold, frozen and with an autofilter;
  column widths from the header and the widest value (a CJK character counts two);
* numbers are numbers (``#,##0`` for integers, ``#,##0.00`` for decimals); a ratio column named
  in ``percent`` (default :data:`PERCENT_COLUMNS`: ``coverage``, ``utilisation``) is shown as a
  percentage (``0.9712`` → ``97.12%``); booleans are Excel booleans; a null or NaN is an empty cell;
* **times** are real Excel date-times in **city time**, each cell with its UTC offset in its
  number format (``yyyy-mm-dd hh:mm"+08:00"`` shows ``2022-04-04 20:00+08:00``): sortable and
  filterable as times, and every time people read carries its offset (DESIGN §7). A city that
  changes its offset (summer time) gets one format per offset, so each cell shows its own.
  A time without a zone is refused: the warehouse keeps instants, never wall times. Dates are
  ``yyyy-mm-dd``; durations are hours (the header says ``(h)``);
* **no cell is ever a formula**: strings are written as strings (``strings_to_formulas``,
  ``strings_to_numbers`` and ``strings_to_urls`` off), and a text a spreadsheet would run as a
  formula (``reporting.people_csv.formula_like``: ``=``, ``+``, ``-``, ``@``, tab, CR, LF and
  the full-width ``＝＋－＠``) carries Excel's quote prefix: Excel shows it as it is and keeps
  it text when someone edits the cell;
* **aggregates only**: a frame with a personal column (:data:`PERSONAL_COLUMNS`) is refused;
* **deterministic**: the document's creation time is ``as_of`` (xlsxwriter would stamp the
  wall clock) and its zip members carry xlsxwriter's fixed 1980 date, so one report as of one
  time is the same bytes every run;
* written in xlsxwriter's ``constant_memory`` mode (row by row, inline strings): a sheet of
  every grid of a 25-million city (tens of thousands of rows) never sits in memory as cells.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from datetime import timezone as dt_timezone
from pathlib import Path

import polars as pl
import xlsxwriter

from reporting.people_csv import formula_like

#: the workbook's file name, beside report.html (which links it; the report server serves it)
WORKBOOK = "report.xlsx"
#: ratio columns shown as percentages (``coverage`` = sampled ÷ registered; ``utilisation`` =
#: received ÷ daily capacity, a ratio: 1.67 shows 167.00%)
PERCENT_COLUMNS = ("coverage", "utilisation")
#: columns that would put a person in the workbook: refused whatever the sheet
PERSONAL_COLUMNS = frozenset({"id_type", "id_number", "name", "phone", "address", "person_key", "household_id",
                              "collector_id"})
#: Excel's limits: sheet names, rows per sheet
SHEET_NAME_MAX = 31
SHEET_NAME_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
MAX_ROWS = 1_048_576
MAX_WIDTH = 60
#: a character drawn two columns wide (CJK, full-width forms)
WIDE = r"[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]"
DATE_FORMAT = "yyyy-mm-dd"
TIME_FORMAT = 'yyyy-mm-dd hh:mm"{offset}"'


def write_workbook(path: Path, sheets: Mapping[str, pl.DataFrame], *, as_of: datetime, timezone: str,
                   percent: Iterable[str] = PERCENT_COLUMNS, title: str = "") -> dict[str, int]:
    """Write ``sheets`` (name → frame, in order) to the workbook ``path``; returns the data rows
    per sheet. ``as_of`` (aware) is the document's creation time; aware time columns are
    shown in ``timezone`` with their offset."""
    if as_of.tzinfo is None:
        raise ValueError("as_of needs a time zone")
    _check_sheets(sheets)
    percent = set(percent)
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_formulas": False,
                                           "strings_to_numbers": False, "strings_to_urls": False})
    try:
        book.set_properties({
            "title": title, "created": as_of.astimezone(dt_timezone.utc).replace(tzinfo=None),
            "comments": f"as of {as_of.astimezone(_zone(timezone)).isoformat(timespec='minutes')}; times in "
                        f"{timezone} city time with their offset; aggregate figures only",
        })
        styles = _Styles(book)
        rows = {}
        for name, frame in sheets.items():
            rows[name] = _write_sheet(book.add_worksheet(name), frame, name, styles, timezone, percent)
    finally:
        book.close()
    return rows


def _zone(name: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _check_sheets(sheets: Mapping[str, pl.DataFrame]) -> None:
    seen = set()
    for name, frame in sheets.items():
        if not name or len(name) > SHEET_NAME_MAX or SHEET_NAME_FORBIDDEN.search(name) or name.startswith("'"):
            raise ValueError(f"sheet name {name!r}: 1 to {SHEET_NAME_MAX} characters, none of []:*?/\\")
        if name.lower() in seen:
            raise ValueError(f"sheet name {name!r} twice")
        seen.add(name.lower())
        personal = sorted(PERSONAL_COLUMNS & set(frame.columns))
        if personal:
            raise ValueError(f"sheet {name!r}: personal column(s) {', '.join(personal)}: the workbook is aggregate only")
        if frame.height >= MAX_ROWS:
            raise ValueError(f"sheet {name!r}: {frame.height:,} rows, more than a sheet holds")


class _Styles:
    """The workbook's formats, made once (a time format per UTC offset, on demand)."""

    def __init__(self, book: xlsxwriter.Workbook) -> None:
        self.book = book
        self.header = book.add_format({"bold": True, "bg_color": "#EDF2F7", "bottom": 1})
        self.text = None
        self.quoted = book.add_format({"quote_prefix": True})
        self.integer = book.add_format({"num_format": "#,##0"})
        self.decimal = book.add_format({"num_format": "#,##0.00"})
        self.percent = book.add_format({"num_format": "0.00%"})
        self.date = book.add_format({"num_format": DATE_FORMAT})
        self._times: dict[str, object] = {}

    def time(self, offset: str):
        if offset not in self._times:
            self._times[offset] = self.book.add_format({"num_format": TIME_FORMAT.format(offset=offset)})
        return self._times[offset]


def _display_width(text: pl.Expr) -> pl.Expr:
    return text.str.len_chars() + text.str.count_matches(WIDE)


def _kind(name: str, dtype: pl.DataType, percent: set[str]) -> str:
    if dtype in (pl.Utf8, pl.Categorical, pl.Enum, pl.Null):
        return "text"
    if dtype == pl.Boolean:
        return "bool"
    if isinstance(dtype, pl.Datetime):
        return "time"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Duration):
        return "hours"
    if dtype.is_integer():
        return "int"
    if dtype.is_float() or isinstance(dtype, pl.Decimal):
        return "percent" if name in percent else "float"
    raise TypeError(f"column {name!r}: {dtype} cannot be a workbook cell")


def _write_sheet(sheet, frame: pl.DataFrame, sheet_name: str, styles: _Styles, timezone: str, percent: set[str]) -> int:
    kinds = {c: _kind(c, t, percent) for c, t in frame.schema.items()}
    headers, values, aux = [], [], []
    for c, kind in kinds.items():
        col = pl.col(c)
        headers.append(f"{c} (h)" if kind == "hours" else c)
        if kind == "text":
            text = col.cast(pl.Utf8)
            values.append(text.alias(f"v{len(values)}"))
            aux.append(formula_like(text).fill_null(False).alias(f"a{len(aux)}"))
        elif kind == "time":
            if frame.schema[c].time_zone is None:
                raise ValueError(f"sheet {sheet_name!r}, column {c!r}: a time without a zone (the warehouse keeps "
                                 "instants: convert with reporting.people_csv.city_times)")
            local = col.dt.convert_time_zone(timezone)
            values.append(local.dt.replace_time_zone(None).alias(f"v{len(values)}"))
            aux.append(local.dt.strftime("%:z").alias(f"a{len(aux)}"))
        elif kind == "hours":
            values.append((col.dt.total_milliseconds() / 3_600_000).alias(f"v{len(values)}"))
            aux.append(pl.lit(None).alias(f"a{len(aux)}"))
        elif kind in ("float", "percent"):
            number = col.cast(pl.Float64)
            values.append(pl.when(number.is_finite()).then(number).alias(f"v{len(values)}"))
            aux.append(pl.lit(None).alias(f"a{len(aux)}"))
        else:
            values.append(col.alias(f"v{len(values)}"))
            aux.append(pl.lit(None).alias(f"a{len(aux)}"))
    prepared = frame.select(*values, *aux) if kinds else pl.DataFrame()
    n = len(kinds)
    widths = _widths(prepared, headers, list(kinds.values()))
    for j, width in enumerate(widths):
        sheet.set_column(j, j, width)
    for j, header in enumerate(headers):
        sheet.write_string(0, j, header, styles.header)
    sheet.freeze_panes(1, 0)
    if n:
        sheet.autofilter(0, 0, frame.height, n - 1)
    writers = [_writer(sheet, kind, styles) for kind in kinds.values()]
    for r, row in enumerate(prepared.iter_rows(), start=1):
        for j in range(n):
            value = row[j]
            if value is not None:
                writers[j](r, j, value, row[n + j])
    return frame.height


def _writer(sheet, kind: str, styles: _Styles):
    if kind == "text":
        return lambda r, j, v, quote: sheet.write_string(r, j, v, styles.quoted if quote else styles.text)
    if kind == "time":
        return lambda r, j, v, offset: sheet.write_datetime(r, j, v, styles.time(offset))
    if kind == "date":
        return lambda r, j, v, _: sheet.write_datetime(r, j, datetime(v.year, v.month, v.day), styles.date)
    if kind == "bool":
        return lambda r, j, v, _: sheet.write_boolean(r, j, v)
    fmt = {"int": styles.integer, "float": styles.decimal, "hours": styles.decimal, "percent": styles.percent}[kind]
    return lambda r, j, v, _: sheet.write_number(r, j, v, fmt)


def _widths(prepared: pl.DataFrame, headers: list[str], kinds: list[str]) -> list[float]:
    """A width per column: the header (and its filter button) or the widest value, capped."""
    widths = []
    for j, (header, kind) in enumerate(zip(headers, kinds)):
        content = 0
        if prepared.height:
            v = prepared.get_column(f"v{j}")
            if kind == "text":
                content = prepared.select(_display_width(pl.col(f"v{j}")).max()).item() or 0
            elif kind in ("int", "float", "hours"):
                biggest = v.abs().max() if v.null_count() < v.len() else 0
                content = len(f"{biggest:,.2f}" if kind != "int" else f"{biggest:,}") + 1
            elif kind == "percent":
                content = 8
            elif kind == "time":
                content = 22
            elif kind == "date":
                content = 10
            else:
                content = 5
        header_width = len(header) + len(re.findall(WIDE, header)) + 3  # and the filter button
        widths.append(min(max(header_width, content + 1), MAX_WIDTH))
    return widths
