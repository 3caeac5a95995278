"""Instrument exports (检测仪器导出文件) to one long table ``well, sample, target, ct``.

Formats are detected by content, never by file name: the QuantStudio / 7500 text export
(``[Results]`` section), Bio-Rad CFX Maestro "Quantification Cq Results" CSV, RDML 1.0–1.3
(zipped or plain XML) and the generic CSV of DESIGN §4. Parsing is instrument-level: sample
names and targets are kept as the instrument wrote them; mapping targets to assay roles is the
calling rules' business. ``ct`` null means not detected.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from lab.instruments.common import RECORD_SCHEMA, REJECT_SCHEMA, UnrecognisedExport

__all__ = ["ParsedExport", "UnrecognisedExport", "detect_format", "parse_export", "write_long_table"]


@dataclass(frozen=True)
class ParsedExport:
    format: str
    records: pl.DataFrame  # RECORD_SCHEMA
    rejects: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REJECT_SCHEMA))
    meta: dict[str, str] = field(default_factory=dict)


def detect_format(data: bytes, name: str = "") -> str:
    """Which export this is, from its content; :class:`UnrecognisedExport` if none."""
    if data[:4] == b"PK\x03\x04":
        return "rdml"
    head = data[:65536].decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if head.startswith("<?xml") or head.startswith("<rdml"):
        if "rdml" in head[:2000]:
            return "rdml"
    lines = [line.strip() for line in head.splitlines()]
    if any(line == "[Results]" for line in lines) or (
        lines and lines[0].startswith("* ") and "[Sample Setup]" in lines
    ):
        return "quantstudio"
    first = lines[0].lower() if lines else ""
    if first.startswith(",well,") and ",cq," in first + ",":
        return "cfx_maestro"
    columns = {c.strip().lower() for c in first.split(",")}
    if {"well", "sample", "target"} <= columns and ("ct" in columns or "lab_id" in columns):
        return "generic_csv"
    raise UnrecognisedExport(f"{name or 'file'}: not a QuantStudio, CFX Maestro, RDML or generic results export")


def parse_export(path: str | Path) -> ParsedExport:
    from lab.instruments import cfx, generic, quantstudio, rdml

    path = Path(path)
    data = path.read_bytes()
    kind = detect_format(data, path.name)
    try:
        if kind == "quantstudio":
            return quantstudio.parse(data, path.name)
        if kind == "cfx_maestro":
            return cfx.parse(data, path.name)
        if kind == "rdml":
            return rdml.parse(data, path.name)
        return generic.parse(path)
    except UnrecognisedExport:
        raise
    except (zipfile.BadZipFile, UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise UnrecognisedExport(f"{path.name}: a damaged {kind} export ({type(exc).__name__})") from exc


def write_long_table(parsed: ParsedExport, out: str | Path) -> None:
    parsed.records.select("well", "sample", "target", "ct").write_parquet(out)
