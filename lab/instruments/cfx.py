"""Bio-Rad CFX Maestro "Quantification Cq Results" CSV: a leading empty column, then Well,
Fluor, Target, Content, Sample, Biological Set Name, Cq, …; wells like ``A01``; ``NaN`` for no
Cq. When ``Target`` is empty the dye (``Fluor``) names the target. The file carries no run,
plate or lab: those stay null and the caller takes them from the file's place in the inbox.

An export that ends mid-table is refused whole (DESIGN §8): CFX Maestro writes every column of
every row and ends every row with a line break, so a header without rows, or a last row with
fewer cells than the header or without its line break, is a cut file. A shorter row inside the
table is a row-level reject."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lab.instruments.common import (
    Head,
    InstrumentFormat,
    ParsedExport,
    UnrecognisedExport,
    canonical_well,
    ct_value,
    decode_text,
    records_frame,
    rejects_frame,
)

REQUIRED = ("well", "sample", "cq")
RawRows = list[tuple[int, list[str]]]


# --- 1. reading: bytes → header and rows -------------------------------------------------------

def read(data: bytes, name: str) -> tuple[list[str], RawRows]:
    """The header (lower-case, stripped) and the non-empty rows as (1-based line, cells)."""
    text = decode_text(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: RawRows = []
    line = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                if header is None:
                    header = [cell.strip().lower() for cell in cells]
                else:
                    rows.append((line, cells))
            line = reader.line_num + 1  # the line where the next record starts
    except csv.Error as exc:
        raise UnrecognisedExport(f"{name}: not readable as CSV at line {line} ({exc})") from exc
    if header is None:
        raise UnrecognisedExport(f"{name}: empty CFX export")
    missing = [c for c in REQUIRED if c not in header] + ([] if {"target", "fluor"} & set(header) else ["target"])
    if missing:
        raise UnrecognisedExport(f"{name}: CFX export without the column(s) {', '.join(m.capitalize() for m in missing)}")
    _refuse_cut_table(name, header, rows, ends_with_break=text.endswith(("\n", "\r")))
    return header, rows


def _refuse_cut_table(name: str, header: list[str], rows: RawRows, ends_with_break: bool) -> None:
    """An export that ends mid-table is refused whole, never read as far as it goes."""
    if not rows:
        raise UnrecognisedExport(f"{name}: a header but no rows: a truncated export, refused whole")
    last, cells = rows[-1]
    if len(cells) < len(header):
        raise UnrecognisedExport(f"{name}: ends mid-table: the last row (line {last}) has {len(cells)} of the "
                                 f"header's {len(header)} cells: a truncated export, refused whole")
    if not ends_with_break:
        raise UnrecognisedExport(f"{name}: ends mid-table: the last row (line {last}) has no line break: "
                                 "a truncated export, refused whole")


# --- 2. typed records ---------------------------------------------------------------------------

def records(header: list[str], rows: RawRows) -> tuple[list[dict], list[dict]]:
    at = {h: i for i, h in reversed(list(enumerate(header)))}  # the first column of a name wins
    needed = max(at[c] for c in REQUIRED)
    good, bad = [], []
    for number, cells in rows:
        raw = ",".join(cells)
        if len(cells) <= needed:
            bad.append({"line": number, "column": "Cq", "reason": "row ends before its last needed column", "raw": raw})
            continue
        cell = lambda column: cells[at[column]].strip() if column in at and at[column] < len(cells) else ""  # noqa: E731
        target = cell("target") or cell("fluor")
        if not target:
            continue  # a well without a target or dye: nothing was measured there
        try:
            well = canonical_well(cell("well"))
        except ValueError:
            bad.append({"line": number, "column": "Well", "reason": "not a well", "raw": raw})
            continue
        try:
            ct = ct_value(cell("cq"))
        except ValueError:
            bad.append({"line": number, "column": "Cq", "reason": "Ct not a number", "raw": raw})
            continue
        good.append({"well": well, "sample": cell("sample"), "target": target, "ct": ct, "line": number,
                     "run_id": None, "plate_id": None, "lab_id": None, "finished_at": None})
    return good, bad


# --- 3. mapping to the long table -----------------------------------------------------------------

def to_table(good: list[dict], bad: list[dict]) -> ParsedExport:
    return ParsedExport("cfx_maestro", records_frame(good), rejects_frame(bad), {"export": "Quantification Cq Results"})


def parse(data: bytes, name: str) -> ParsedExport:
    header, rows = read(data, name)
    return to_table(*records(header, rows))


# --- the format, for the registry (lab.instruments.REGISTRY) -----------------------------------

def sniff(head: Head) -> bool:
    """A CSV whose first line has ``Well`` and ``Fluor``, or ``Well``, ``Target`` and ``Cq``."""
    cells = head.first_cells
    return "well" in cells and ("fluor" in cells or ("cq" in cells and "target" in cells))


FORMAT = InstrumentFormat(
    name="cfx_maestro", sniff=sniff,
    parse=lambda path, timezone: parse(Path(path).read_bytes(), Path(path).name),  # no run time in the file
    unlike="not a CFX Maestro Cq results CSV (no Well, Fluor, Cq columns)")
