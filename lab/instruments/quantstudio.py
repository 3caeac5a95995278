"""QuantStudio / 7500 text export: ``* Key = Value`` header lines, then sections such as
``[Sample Setup]``, ``[Amplification Data]``, ``[Results]``; only ``[Results]`` is read.
Tab-separated; column order varies; the Ct column is ``CT``, ``Cт`` (Cyrillic т), ``Ct`` or
``Cq``; ``Undetermined`` means not detected; CRLF line ends and non-ASCII text occur."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from lab.instruments import ParsedExport
from lab.instruments.common import UnrecognisedExport, canonical_well, ct_value, records_frame

#: time-zone abbreviations of run end times; CST is read as China Standard Time (+08:00),
#: the zone of this system's labs (in a US export it would mean -06:00)
ZONES = {"UTC": 0, "GMT": 0, "CST": 8, "CCT": 8, "EDT": -4, "EST": -5, "PDT": -7, "PST": -8, "CET": 1, "CEST": 2}


# --- reading: text → header metadata and the [Results] table -----------------------------------

def read(data: bytes, name: str) -> tuple[dict[str, str], list[str], list[tuple[int, list[str]]]]:
    text = data.decode("utf-8-sig")
    meta: dict[str, str] = {}
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    in_results = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("* ") and " = " in line and not in_results:
            key, _, value = line[2:].partition(" = ")
            meta[key.strip()] = value.strip()
        elif line.strip().startswith("[") and line.strip().endswith("]"):
            in_results = line.strip() == "[Results]"
        elif in_results and not line.strip():
            in_results = header is None  # a blank line after the table ends it
        elif in_results:
            cells = line.split("\t")
            if header is None:
                header = cells
            else:
                rows.append((number, cells))
        elif " = " in line and header is not None:  # footer lines: "Analysis Type = Singleplex"
            key, _, value = line.partition(" = ")
            meta[key.strip()] = value.strip()
    if header is None:
        raise UnrecognisedExport(f"{name}: no [Results] section with a header row")
    return meta, header, rows


# --- typed records ---------------------------------------------------------------------------

def _column(header: list[str], *names: str) -> int:
    folded = [h.strip().replace("т", "t").replace("Т", "T").lower() for h in header]
    for candidate in names:
        if candidate in folded:
            return folded.index(candidate)
    raise UnrecognisedExport(f"no {names[0]} column in [Results] (columns: {', '.join(h.strip() for h in header[:12])} …)")


def run_end(text: str | None) -> datetime | None:
    """``2010-10-21 00:51:26 AM EDT`` → UTC; None when absent or unknown."""
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2}) (\d{1,2}):(\d{2}):(\d{2})(?: ([AP]M))?(?: ([A-Z]{2,4}))?", (text or "").strip())
    if not match or (match.group(6) and match.group(6) not in ZONES):
        return None
    day, hour, minute, second, half, zone = match.groups()
    hour = int(hour)
    if half == "PM" and hour < 12:
        hour += 12
    elif half == "AM" and hour == 12:
        hour = 0
    local = datetime.fromisoformat(day).replace(hour=hour, minute=int(minute), second=int(second))
    offset = timezone(timedelta(hours=ZONES.get(zone or "UTC", 0)))
    return local.replace(tzinfo=offset).astimezone(timezone.utc)


def records(meta: dict[str, str], header: list[str], rows: list[tuple[int, list[str]]], name: str) -> tuple[list[dict], list[dict]]:
    try:
        well_at = _column(header, "well position", "well")
        sample_at = _column(header, "sample name", "sample")
        target_at = _column(header, "target name", "detector", "target")
        ct_at = _column(header, "ct", "cq", "c t")
    except UnrecognisedExport as exc:
        raise UnrecognisedExport(f"{name}: {exc}") from exc
    blank = lambda v: None if not v or v.upper() == "NA" else v  # noqa: E731
    run_id, plate_id = blank(meta.get("Experiment Name")), blank(meta.get("Experiment Barcode"))
    finished = run_end(meta.get("Experiment Run End Time"))
    good, bad = [], []
    for number, cells in rows:
        cells = cells + [""] * (len(header) - len(cells))
        try:
            well = canonical_well(cells[well_at])
        except ValueError:
            bad.append({"line": number, "column": header[well_at], "reason": "not a well", "raw": "\t".join(cells)})
            continue
        if not cells[target_at].strip():
            continue  # an empty well
        try:
            ct = ct_value(cells[ct_at])
        except ValueError:
            bad.append({"line": number, "column": header[ct_at], "reason": "Ct not a number", "raw": "\t".join(cells)})
            continue
        good.append({"well": well, "sample": cells[sample_at].strip(), "target": cells[target_at].strip(), "ct": ct,
                     "line": number, "run_id": run_id, "plate_id": plate_id, "lab_id": None, "finished_at": finished})
    return good, bad


# --- mapping to the long table ----------------------------------------------------------------

def parse(data: bytes, name: str) -> ParsedExport:
    import polars as pl

    from lab.instruments.common import REJECT_SCHEMA

    meta, header, rows = read(data, name)
    good, bad = records(meta, header, rows, name)
    keep = ("Instrument Type", "Instrument Serial Number", "Experiment Name", "Experiment Barcode",
            "Experiment Run End Time", "Block Type")
    return ParsedExport("quantstudio", records_frame(good),
                        pl.DataFrame(bad, schema=REJECT_SCHEMA) if bad else pl.DataFrame(schema=REJECT_SCHEMA),
                        {k: meta[k] for k in keep if k in meta})
