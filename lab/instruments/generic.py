"""The generic results CSV of DESIGN §4: lab_id, run_id, plate_id, well, sample, target, ct,
finished_at (optional); any order, names case-insensitive. Read in bulk (DuckDB through the
inbox stager), Ct parsed vectorised: possibly millions of rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lab.instruments import ParsedExport
from lab.instruments.common import NOT_DETECTED, RECORD_SCHEMA, REJECT_SCHEMA, WELL_PATTERN, UnrecognisedExport
from tubetrail.rules import parse_time

REQUIRED = ("lab_id", "run_id", "plate_id", "well", "sample", "target")


def records(raw: pl.DataFrame, timezone: str = "Asia/Shanghai") -> tuple[pl.DataFrame, pl.DataFrame]:
    text = pl.col("ct").str.strip_chars()
    missing = text.is_null() | text.str.to_lowercase().is_in(list(NOT_DETECTED))
    number = text.str.replace_all(",", "").cast(pl.Float64, strict=False)
    well = pl.col("well").str.strip_chars().str.extract_groups("^" + WELL_PATTERN + "$")
    frame = raw.with_columns(
        pl.when(missing).then(None).when(number > 0).then(number).otherwise(None).alias("ct_value"),
        (~missing & number.is_null()).alias("bad_ct"),
        pl.format("{}{}", well.struct.field("1").str.to_uppercase(), well.struct.field("2").cast(pl.Int32, strict=False).cast(pl.Utf8)).alias("well_value"),
    )
    bad = frame.filter(pl.col("bad_ct") | pl.col("well_value").is_null()).select(
        pl.col("_line").alias("line"),
        pl.when(pl.col("bad_ct")).then(pl.lit("ct")).otherwise(pl.lit("well")).alias("column"),
        pl.when(pl.col("bad_ct")).then(pl.lit("Ct not a number")).otherwise(pl.lit("not a well")).alias("reason"),
        pl.struct([c for c in raw.columns if c != "_line"]).struct.json_encode().alias("raw"))
    good = frame.filter(~pl.col("bad_ct") & pl.col("well_value").is_not_null()).select(
        pl.col("well_value").alias("well"), pl.col("sample").str.strip_chars(), pl.col("target").str.strip_chars(),
        pl.col("ct_value").alias("ct"), pl.col("_line").alias("line"), pl.col("run_id").str.strip_chars(),
        pl.col("plate_id").str.strip_chars(), pl.col("lab_id").str.strip_chars(),
        parse_time("finished_at", timezone).alias("finished_at"))
    return good.cast(RECORD_SCHEMA), bad.cast(REJECT_SCHEMA)


def parse(path: Path) -> ParsedExport:
    from warehouse.inbox import RefusedFile, read_table

    try:
        raw = read_table(path, (*REQUIRED, "ct"), label=path.name)
    except RefusedFile as exc:
        raise UnrecognisedExport(str(exc)) from exc
    frame = raw.frame if "finished_at" in raw.frame.columns else raw.frame.with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("finished_at"))
    good, bad = records(frame)
    rejects = pl.concat([bad, raw.rejects.rename({"_line": "line"}).cast(REJECT_SCHEMA)])
    return ParsedExport("generic_csv", good, rejects, {})
