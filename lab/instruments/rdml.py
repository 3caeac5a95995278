"""RDML 1.0–1.3 (Real-time PCR Data Markup Language): normally a zip holding
``rdml_data.xml``, sometimes the plain XML. Each ``<run>`` has a ``<pcrFormat>`` (rows, columns,
row and column labels) and ``<react id>`` elements, whose id is either a well name or a number
counted row-major over the plate (id 13 = B1 on 12 columns). A ``<data>`` without ``<cq>`` (or
with ``-1`` / ``NaN``) is not detected."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timezone
from xml.etree import ElementTree

from lab.instruments import ParsedExport
from lab.instruments.common import UnrecognisedExport, canonical_well, ct_value, records_frame

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def read(data: bytes, name: str) -> ElementTree.Element:
    xml = data
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.endswith("rdml_data.xml")] or [
                n for n in archive.namelist() if n.endswith(".xml")]
            if not names:
                raise UnrecognisedExport(f"{name}: an RDML zip without rdml_data.xml")
            xml = archive.read(names[0])
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise UnrecognisedExport(f"{name}: RDML XML that does not parse ({exc})") from exc
    if not root.tag.endswith("rdml"):
        raise UnrecognisedExport(f"{name}: XML but not RDML")
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ElementTree.Element | None, name: str) -> str | None:
    child = _child(element, name) if element is not None else None
    return child.text.strip() if child is not None and child.text else None


def well_of(react_id: str, columns: int, row_label: str) -> str:
    """A reaction id as a well: a well name as it is, a number row-major over the plate."""
    if react_id.strip().isdigit():
        index = int(react_id) - 1
        row, column = divmod(index, columns)
        letters = LETTERS if row_label.upper().startswith("A") else LETTERS
        return f"{letters[row]}{column + 1}"
    return canonical_well(react_id)


def records(root: ElementTree.Element, name: str) -> list[dict]:
    good: list[dict] = []
    ordinal = 0
    for experiment in (e for e in root if _local(e.tag) == "experiment"):
        for run in (r for r in experiment if _local(r.tag) == "run"):
            run_id = run.get("id")
            fmt = _child(run, "pcrFormat")
            columns = int(_text(fmt, "columns") or 12) if fmt is not None and len(fmt) else 12
            row_label = (_text(fmt, "rowLabel") or "ABC") if fmt is not None and len(fmt) else "ABC"
            run_date = _text(run, "runDate")
            finished = None
            if run_date:
                try:
                    finished = datetime.fromisoformat(run_date).replace(tzinfo=timezone.utc)
                except ValueError:
                    finished = None
            for react in (r for r in run if _local(r.tag) == "react"):
                ordinal += 1
                well = well_of(react.get("id", ""), columns, row_label)
                sample = _child(react, "sample")
                for data in (d for d in react if _local(d.tag) == "data"):
                    target = _child(data, "tar")
                    good.append({
                        "well": well, "sample": sample.get("id", "") if sample is not None else "",
                        "target": target.get("id", "") if target is not None else "",
                        "ct": ct_value(_text(data, "cq")), "line": ordinal, "run_id": run_id,
                        "plate_id": run_id, "lab_id": None, "finished_at": finished,
                    })
    if not good:
        raise UnrecognisedExport(f"{name}: RDML without reactions")
    return good


def parse(data: bytes, name: str) -> ParsedExport:
    root = read(data, name)
    return ParsedExport("rdml", records_frame(records(root, name)), meta={"rdml_version": root.get("version", "")})
