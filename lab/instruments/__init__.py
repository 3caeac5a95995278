"""Instrument exports (检测仪器导出文件) to one long table ``well, sample, target, ct``.

Formats are detected by content, never by file name: the QuantStudio / 7500 text export
(``[Results]`` section), Bio-Rad CFX Maestro "Quantification Cq Results" CSV, RDML 1.0–1.3
(zipped or plain XML) and the generic results table of DESIGN §4 (CSV; Parquet and JSON Lines
with the same columns are accepted too, DESIGN §4). Parsing is instrument-level: sample names
and targets are kept as the instrument wrote them; mapping targets to assay roles is the calling
rules' business. ``ct`` null means not detected.

Each format is one module that declares ``FORMAT = InstrumentFormat(name, sniff, parse, unlike)``
(:class:`~lab.instruments.common.InstrumentFormat`); :data:`REGISTRY` lists them, and one loop
(:func:`detect_format`) asks each in turn whether it claims a file. **Adding a format** is a
module with its ``sniff`` and ``parse`` plus one line in :data:`REGISTRY`; nothing else names
formats. Inside a module the same three steps: ``read`` (bytes → raw rows), ``records`` (raw
rows → typed records and row-level rejects) and ``to_table`` (records → the long table).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.etree.ElementTree import ParseError

import polars as pl

from lab.instruments import cfx, generic, quantstudio, rdml
from lab.instruments.common import (
    DEFAULT_TIMEZONE,
    HEAD_BYTES,
    RECORD_SCHEMA,
    Head,
    InstrumentFormat,
    ParsedExport,
    UnrecognisedExport,
    is_zip,
)

__all__ = ["REGISTRY", "Head", "InstrumentFormat", "ParsedExport", "UnrecognisedExport", "detect_format",
           "find_format", "is_zip", "parse_export", "write_long_table"]

#: every instrument format, in the order they are asked (a file two formats claimed would go to
#: the first; the tests hold that no two claim any real export). One line per format.
REGISTRY: list[InstrumentFormat] = [
    quantstudio.FORMAT,
    cfx.FORMAT,
    rdml.FORMAT,
    generic.FORMAT,
]


def find_format(data: bytes, name: str = "", *, zipped: bool | None = None) -> InstrumentFormat:
    """The registered format that claims ``data`` (the whole file or its first 64 KiB), from its
    content only. ``zipped``: whether the whole file is a zip (``zipfile.is_zipfile`` on the
    file), when ``data`` is only its head. Raises :class:`UnrecognisedExport` naming ``name``
    and why, when none does."""
    label = name or "file"
    if not data.strip():
        raise UnrecognisedExport(f"{label}: empty file")
    head = Head.of(data, zipped)
    for fmt in REGISTRY:
        if fmt.sniff(head):
            return fmt
    if head.binary:
        raise UnrecognisedExport(f"{label}: binary content, not a zip and not a text export")
    raise UnrecognisedExport(f"{label}: " + ", ".join(fmt.unlike for fmt in REGISTRY))


def detect_format(data: bytes, name: str = "", *, zipped: bool | None = None) -> str:
    """The name of the format that claims ``data`` (:func:`find_format`): ``quantstudio``,
    ``cfx_maestro``, ``rdml``, ``generic_csv`` or a format registered since. A claim is not yet
    a reading: the format's parser still refuses a damaged file (a zip without RDML, XML of
    another root)."""
    return find_format(data, name, zipped=zipped).name


def parse_export(path: str | Path, timezone: str = DEFAULT_TIMEZONE) -> ParsedExport:
    """Read one export, whatever its name. ``timezone``: where a run time without zone or
    offset was written (DESIGN §4: the city's). Raises :class:`UnrecognisedExport` for a file
    that is no export or is damaged beyond its rows; row-level problems go to ``rejects``."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    fmt = find_format(head, path.name, zipped=zipfile.is_zipfile(path))
    try:
        return fmt.parse(path, timezone)
    except UnrecognisedExport as exc:
        if path.name in str(exc):
            raise
        raise UnrecognisedExport(f"{path.name}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UnrecognisedExport(f"{path.name}: a {fmt.name} export that is not UTF-8, UTF-16 or GB18030 text") from exc
    except (zipfile.BadZipFile, ParseError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise UnrecognisedExport(f"{path.name}: a damaged {fmt.name} export ({type(exc).__name__}: {exc})") from exc


def write_long_table(parsed: ParsedExport, out: str | Path) -> None:
    """The long table as Parquet, with exactly the columns well, sample, target, ct."""
    parsed.records.select(pl.col(c).cast(t) for c, t in RECORD_SCHEMA.items() if c in ("well", "sample", "target", "ct")
                          ).write_parquet(out)
