"""What every instrument parser shares: the long-table schema, wells, Ct text."""

from __future__ import annotations

import re

import polars as pl

RECORD_SCHEMA = {
    "well": pl.Utf8, "sample": pl.Utf8, "target": pl.Utf8, "ct": pl.Float64, "line": pl.Int64,
    "run_id": pl.Utf8, "plate_id": pl.Utf8, "lab_id": pl.Utf8, "finished_at": pl.Datetime("us", "UTC"),
}
REJECT_SCHEMA = {"line": pl.Int64, "column": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8}
#: spellings of "no Ct" (not detected) in the exports, lower-case
NOT_DETECTED = ("", "undetermined", "nan", "no ct", "n/a", "-")


class UnrecognisedExport(ValueError):
    """A file that is none of the known exports, or a damaged one; the message names the file."""


#: a well of a 96-, 384- or 1536-well plate: rows A–P or AA–AF, columns 1–48
WELL_PATTERN = r"([A-Pa-p]|[Aa][A-Fa-f])0*([1-9]|[1-3]\d|4[0-8])"


def canonical_well(text: str) -> str:
    """``A01`` / ``a1`` / ``A1`` → ``A1``."""
    match = re.fullmatch(r"\s*" + WELL_PATTERN + r"\s*", text or "")
    if not match:
        raise ValueError(f"not a well: {text!r}")
    return f"{match.group(1).upper()}{int(match.group(2))}"


def ct_value(text: str | None) -> float | None:
    """Ct text to a number; None when not detected. Raises ValueError on other text."""
    value = (text or "").strip()
    if value.lower() in NOT_DETECTED:
        return None
    number = float(value.replace(",", ""))
    if number != number or number <= 0:  # NaN, or the -1 some instruments write for "none"
        return None
    return number


def records_frame(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={k: v for k, v in RECORD_SCHEMA.items() if k != "finished_at"} | {
        "finished_at": pl.Datetime("us", "UTC")}, orient="row") if rows else pl.DataFrame(schema=RECORD_SCHEMA)
    return frame.select(list(RECORD_SCHEMA))
