"""The generic results table of DESIGN §4: lab_id, run_id, plate_id, well, sample, target, ct,
finished_at (optional); any order, names case-insensitive, a UTF-8 BOM tolerated; CSV, or Parquet /
JSON Lines with the same columns.

Possibly millions of rows, so nothing here goes row by row in Python: the file is read in bulk with
every column as text (``kernel.tables.read_table``: a plain CSV by polars, any other file by DuckDB,
which also numbers the physical lines and keeps unreadable lines as rejects), then Ct, wells and
times are parsed with polars expressions.

``ct``: empty, ``Undetermined``, ``NaN``, ``No Ct`` (any case) mean not detected; any other text
that is not a positive number (``-1``, ``0``, ``31,5``, ``lots`` …) is a row-level reject, never a
silent "not detected".

A row with fewer fields than the header (JSON Lines: a line that is no whole object) is a
row-level reject inside the file; as the file's last row it means the file ends mid-table (a cut
copy or upload) and the whole file is refused, as an instrument export that ends mid-table is
(DESIGN §8)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from lab.instruments.common import (
    DEFAULT_TIMEZONE,
    GENERIC_NOT_DETECTED,
    Head,
    InstrumentFormat,
    ParsedExport,
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    WELL_PATTERN,
    UnrecognisedExport,
)

REQUIRED = ("lab_id", "run_id", "plate_id", "well", "sample", "target", "ct")
#: the table's columns (DESIGN §4)
COLUMNS = (*REQUIRED, "finished_at")
LINE = "_line"


# --- 1. reading: the file → one text frame (bulk, DuckDB) -----------------------------------------

def read(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every row as text with lower-case column names and ``_line``; and the unreadable lines."""
    from kernel.rules import LINE as STAGED_LINE
    from kernel.tables import RefusedFile, read_table

    assert STAGED_LINE == LINE
    try:
        raw = read_table(path, REQUIRED, label=path.name)
    except RefusedFile as exc:
        raise UnrecognisedExport(str(exc)) from exc
    frame = raw.frame
    last_good = frame[LINE].max() if frame.height else 0
    # CSV: a row short of the header's fields; JSON Lines: a line that is no whole JSON object
    cut = raw.rejects.filter((pl.col(LINE) > (last_good or 0))
                             & pl.col("reason").str.contains("missing columns|not a JSON object"))
    if cut.height:
        raise UnrecognisedExport(f"{path.name}: ends mid-table: the last row (line {cut[LINE][-1]}) is cut short "
                                 f"({cut['reason'][-1].removeprefix('unreadable row: ')}): a truncated file, refused whole")
    if "finished_at" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias("finished_at"))
    return frame, raw.rejects.rename({LINE: "line"}).cast(REJECT_SCHEMA)


# --- 2. typed records: vectorised Ct, well and time parsing; row-level rejects --------------------

def records(raw: pl.DataFrame, timezone: str = DEFAULT_TIMEZONE) -> tuple[pl.DataFrame, pl.DataFrame]:
    from kernel.rules import parse_time

    text = pl.col("ct").str.strip_chars()
    not_detected = text.is_null() | text.str.to_lowercase().is_in(list(GENERIC_NOT_DETECTED))
    number = text.cast(pl.Float64, strict=False)
    a_ct = number.is_finite() & (number > 0)
    well = pl.col("well").str.strip_chars().str.extract_groups("^" + WELL_PATTERN + "$")
    finished = pl.col("finished_at")
    frame = raw.with_columns(
        pl.when(not_detected).then(None).otherwise(number).alias("_ct"),
        (~not_detected & ~a_ct.fill_null(False)).alias("_bad_ct"),
        pl.format("{}{}", well.struct.field("1").str.to_uppercase(),
                  well.struct.field("2").cast(pl.Int32, strict=False).cast(pl.Utf8)).alias("_well"),
        parse_time("finished_at", timezone).alias("_finished"),
        (finished.is_not_null() & (finished.str.strip_chars() != "")).alias("_has_time"),
    )
    problem = (pl.when(pl.col("_bad_ct")).then(pl.lit("ct|Ct not a number"))
               .when(pl.col("_well").is_null()).then(pl.lit("well|not a well"))
               .when(pl.col("_has_time") & pl.col("_finished").is_null()).then(pl.lit("finished_at|finished_at not an ISO 8601 time"))
               .otherwise(None))
    frame = frame.with_columns(problem.alias("_problem"))
    columns = [c for c in raw.columns if c != LINE]
    bad = frame.filter(pl.col("_problem").is_not_null()).select(
        pl.col(LINE).alias("line"),
        pl.col("_problem").str.split_exact("|", 1).struct.field("field_0").alias("column"),
        pl.col("_problem").str.split_exact("|", 1).struct.field("field_1").alias("reason"),
        pl.struct(columns).struct.json_encode().alias("raw"))
    blank_to_null = lambda c: pl.col(c).str.strip_chars().replace("", None).alias(c)  # noqa: E731
    good = frame.filter(pl.col("_problem").is_null()).select(
        pl.col("_well").alias("well"),
        pl.col("sample").str.strip_chars().fill_null(""),
        pl.col("target").str.strip_chars().fill_null(""),
        pl.col("_ct").alias("ct"),
        pl.col(LINE).alias("line"),
        blank_to_null("run_id"), blank_to_null("plate_id"), blank_to_null("lab_id"),
        pl.col("_finished").alias("finished_at"))
    return good.cast(RECORD_SCHEMA), bad.cast(REJECT_SCHEMA)


# --- 3. mapping to the long table -------------------------------------------------------------------

def to_table(good: pl.DataFrame, bad: pl.DataFrame, unreadable: pl.DataFrame, file_format: str) -> ParsedExport:
    rejects = pl.concat([bad, unreadable]).sort("line")
    return ParsedExport("generic_csv", good, rejects, {"file_format": file_format})


def parse(path: Path, timezone: str = DEFAULT_TIMEZONE) -> ParsedExport:
    from kernel.tables import sniff_format

    raw, unreadable = read(path)
    good, bad = records(raw, timezone)
    return to_table(good, bad, unreadable, sniff_format(path))


# --- the format, for the registry (lab.instruments.REGISTRY) -----------------------------------

#: header cells that are an instrument's words, never the generic table's (CFX Maestro's Cq and dye)
INSTRUMENT_WORDS = ("cq", "fluor")


def sniff(head: Head) -> bool:
    """Parquet (``PAR1``), JSON Lines whose first object has ``well`` or ``ct``, or a CSV whose
    header has at least three of :data:`COLUMNS` (the parser names any required one missing)
    and none of :data:`INSTRUMENT_WORDS` (a CFX Maestro export has Well, Target and Sample too)."""
    if head.data[:4] == b"PAR1":
        return True
    if not head.lines:
        return False
    first = head.lines[0]
    if first.startswith("{"):
        try:
            keys = {str(k).strip().lower() for k in json.loads(first)}
        except (ValueError, TypeError):
            keys = set()
        if {"well", "ct"} & keys:
            return True
    cells = set(head.first_cells)
    return len(cells & set(COLUMNS)) >= 3 and not cells & set(INSTRUMENT_WORDS)


FORMAT = InstrumentFormat(
    name="generic_csv", sniff=sniff, parse=parse,  # possibly millions of rows: read in bulk from the file
    unlike="not the generic results CSV (no lab_id, run_id, plate_id, well, sample, target, ct columns)")
