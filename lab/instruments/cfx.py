"""Bio-Rad CFX Maestro "Quantification Cq Results" CSV: a leading empty column, wells like
``A01``, ``NaN`` for no Cq; ``Target`` may be empty, then the dye (``Fluor``) names the target."""

from __future__ import annotations

import csv
import io

import polars as pl

from lab.instruments import ParsedExport
from lab.instruments.common import REJECT_SCHEMA, UnrecognisedExport, canonical_well, ct_value, records_frame


def read(data: bytes, name: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    rows = [(n, r) for n, r in enumerate(reader, start=1) if any(cell.strip() for cell in r)]
    if not rows:
        raise UnrecognisedExport(f"{name}: empty CFX export")
    header = [h.strip().lower() for h in rows[0][1]]
    for needed in ("well", "sample", "cq"):
        if needed not in header:
            raise UnrecognisedExport(f"{name}: CFX export without a {needed.capitalize()} column")
    return header, rows[1:]


def records(header: list[str], rows: list[tuple[int, list[str]]], name: str) -> tuple[list[dict], list[dict]]:
    at = {h: i for i, h in enumerate(header)}
    good, bad = [], []
    for number, cells in rows:
        cells = cells + [""] * (len(header) - len(cells))
        target = cells[at["target"]].strip() if "target" in at else ""
        target = target or (cells[at["fluor"]].strip() if "fluor" in at else "")
        try:
            well = canonical_well(cells[at["well"]])
            ct = ct_value(cells[at["cq"]])
        except ValueError as exc:
            bad.append({"line": number, "column": "Cq" if "well" not in str(exc) else "Well",
                        "reason": "not a well" if "well" in str(exc) else "Cq not a number", "raw": ",".join(cells)})
            continue
        good.append({"well": well, "sample": cells[at["sample"]].strip(), "target": target, "ct": ct, "line": number,
                     "run_id": None, "plate_id": None, "lab_id": None, "finished_at": None})
    return good, bad


def parse(data: bytes, name: str) -> ParsedExport:
    header, rows = read(data, name)
    good, bad = records(header, rows, name)
    return ParsedExport("cfx_maestro", records_frame(good),
                        pl.DataFrame(bad, schema=REJECT_SCHEMA) if bad else pl.DataFrame(schema=REJECT_SCHEMA), {})
