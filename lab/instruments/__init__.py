"""Instrument exports (检测仪器导出文件) to one long table ``well, sample, target, ct``.

Formats are detected by content, never by file name: the QuantStudio / 7500 text export
(``[Results]`` section), Bio-Rad CFX Maestro "Quantification Cq Results" CSV, RDML 1.0–1.3
(zipped or plain XML) and the generic results table of DESIGN §4 (CSV; Parquet and JSON Lines
with the same columns are accepted too, DESIGN §4). Parsing is instrument-level: sample names
and targets are kept as the instrument wrote them; mapping targets to assay roles is the calling
rules' business. ``ct`` null means not detected.

Every format module has the same three steps: ``read`` (bytes → raw rows), ``records`` (raw
rows → typed records and row-level rejects) and ``to_table`` (records → the long table).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import ParseError

import polars as pl

from lab.instruments.common import (
    DEFAULT_TIMEZONE,
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    UnrecognisedExport,
    text_lines,
)

__all__ = ["FORMATS", "ParsedExport", "UnrecognisedExport", "detect_format", "parse_export", "write_long_table"]

FORMATS = ("quantstudio", "cfx_maestro", "rdml", "generic_csv")
#: the generic table's columns (DESIGN §4)
GENERIC_COLUMNS = ("lab_id", "run_id", "plate_id", "well", "sample", "target", "ct", "finished_at")
#: how much of a file detection looks at
HEAD_BYTES = 1 << 16
#: how a zip's first entry may begin: a local file header, an empty archive's end record, or the
#: split / spanned archive marker some Bio-Rad software writes before the first entry
ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08", b"PK00")


@dataclass(frozen=True)
class ParsedExport:
    """One export as read: ``records`` has the columns of ``RECORD_SCHEMA`` (well, sample,
    target, ct, line, run_id, plate_id, lab_id, finished_at); ``rejects`` (line, column, reason,
    raw) holds the rows that could not be read, without stopping the good ones; ``meta`` the
    header facts without personal data (instrument, serial, experiment, run end …)."""

    format: str
    records: pl.DataFrame
    rejects: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REJECT_SCHEMA))
    meta: dict[str, str] = field(default_factory=dict)


def is_zip(data: bytes) -> bool:
    """A zip is known by its central directory at the end (what ``zipfile`` reads), not by its
    first bytes: a split-archive marker or other bytes may come before the first entry."""
    return zipfile.is_zipfile(io.BytesIO(data))


def detect_format(data: bytes, name: str = "", *, zipped: bool | None = None) -> str:
    """Which export ``data`` (the whole file or its first 64 KiB) is, from its content only:
    ``quantstudio``, ``cfx_maestro``, ``rdml`` or ``generic_csv``. ``zipped``: whether the whole
    file is a zip (``zipfile.is_zipfile`` on the file), when ``data`` is only its head. Raises
    :class:`UnrecognisedExport` naming ``name`` and why."""
    label = name or "file"
    if not data.strip():
        raise UnrecognisedExport(f"{label}: empty file")
    if (is_zip(data) if zipped is None else zipped) or data[:4] in ZIP_STARTS:
        return "rdml"  # RDML is a zip; rdml.read refuses a zip without RDML XML, or a damaged one
    if data[:4] == b"PAR1":
        return "generic_csv"  # the generic table as Parquet
    # lenient: the head may end inside a character; GB18030 text keeps its ASCII header readable
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
    head = data[:HEAD_BYTES].decode("utf-16" if utf16 else "utf-8", errors="replace").lstrip("\ufeff")
    if "\x00" in head:
        raise UnrecognisedExport(f"{label}: binary content, not a zip and not a text export")
    if head.lstrip().startswith("<"):
        if "<rdml" in head[:4096] or ":rdml" in head[:4096]:
            return "rdml"
        raise UnrecognisedExport(f"{label}: XML but not RDML (no <rdml> root element)")
    lines = [line.strip() for line in text_lines(head) if line.strip()]
    first = lines[0]
    if (first.startswith("* ") and " = " in first) or any(
            line in ("[Results]", "[Sample Setup]", "[Amplification Data]") for line in lines):
        return "quantstudio"
    if first.startswith("{"):
        try:
            keys = {str(k).strip().lower() for k in json.loads(first)}
        except (ValueError, TypeError):
            keys = set()
        if {"well", "ct"} & keys:
            return "generic_csv"  # the generic table as JSON Lines
    cells = [cell.strip().strip('"').lower() for cell in first.split(",")]
    if "well" in cells and ("fluor" in cells or ("cq" in cells and "target" in cells)):
        return "cfx_maestro"
    if len(set(cells) & set(GENERIC_COLUMNS)) >= 3:
        return "generic_csv"  # the parser names any required column that is missing
    raise UnrecognisedExport(
        f"{label}: not a QuantStudio export (no '* Key = Value' header, no [Results] section), "
        "not a CFX Maestro Cq results CSV (no Well, Fluor, Cq columns), not a zip and not RDML XML, "
        "not the generic results CSV (no lab_id, run_id, plate_id, well, sample, target, ct columns)")


def parse_export(path: str | Path, timezone: str = DEFAULT_TIMEZONE) -> ParsedExport:
    """Read one export, whatever its name. ``timezone``: where a run time without zone or
    offset was written (DESIGN §4: the city's). Raises :class:`UnrecognisedExport` for a file
    that is no export or is damaged beyond its rows; row-level problems go to ``rejects``."""
    from lab.instruments import cfx, generic, quantstudio, rdml

    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    kind = detect_format(head, path.name, zipped=zipfile.is_zipfile(path))
    try:
        if kind == "generic_csv":  # possibly millions of rows: read in bulk from the file
            return generic.parse(path, timezone)
        data = path.read_bytes()
        if kind == "quantstudio":
            return quantstudio.parse(data, path.name, timezone)
        if kind == "cfx_maestro":
            return cfx.parse(data, path.name)
        return rdml.parse(data, path.name, timezone)
    except UnrecognisedExport as exc:
        if path.name in str(exc):
            raise
        raise UnrecognisedExport(f"{path.name}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UnrecognisedExport(f"{path.name}: a {kind} export that is not UTF-8, UTF-16 or GB18030 text") from exc
    except (zipfile.BadZipFile, ParseError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise UnrecognisedExport(f"{path.name}: a damaged {kind} export ({type(exc).__name__}: {exc})") from exc


def write_long_table(parsed: ParsedExport, out: str | Path) -> None:
    """The long table as Parquet, with exactly the columns well, sample, target, ct."""
    parsed.records.select(pl.col(c).cast(t) for c, t in RECORD_SCHEMA.items() if c in ("well", "sample", "target", "ct")
                          ).write_parquet(out)
