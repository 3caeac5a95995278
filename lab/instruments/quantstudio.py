"""QuantStudio / 7500 / StepOne text export: ``* Key = Value`` header lines, then sections such
as ``[Sample Setup]``, ``[Amplification Data]``, ``[Results]``; only ``[Results]`` is read.

Tab-separated; column order varies between exports; the Ct column is headed ``CT``, ``Cт``
(Cyrillic т, written by localised software), ``Ct`` or ``Cq``; ``Undetermined`` means not
detected; CRLF line ends and non-ASCII text occur. A well is given as ``Well Position`` (A1)
and/or ``Well`` (a number, counted row-major over the block of ``* Block Type``).

Run metadata: run_id = ``Experiment Name``, plate_id = ``Experiment Barcode`` (blank or ``NA`` →
null), finished_at = ``Experiment Run End Time`` (see :func:`common.run_time`: ``CST`` is read
as China Standard Time, +08:00; a time with an unknown zone or an impossible date refuses the
export, naming the zone).

An export that ends mid-table is refused whole (DESIGN §8): the software ends every line with a
line break and writes every column of every ``[Results]`` row, so a last row without its line
break or with fewer cells than the header, or a ``[Results]`` header without rows, is a cut file.
A shorter row inside the table is a row-level reject."""

from __future__ import annotations

from pathlib import Path

from lab.instruments.common import (
    DEFAULT_TIMEZONE,
    Head,
    InstrumentFormat,
    ParsedExport,
    UnreadableRunTime,
    UnrecognisedExport,
    canonical_well,
    ct_value,
    decode_text,
    records_frame,
    rejects_frame,
    run_time,
    text_lines,
    well_from_number,
)

#: header facts kept in ``meta``; ``User Name``, ``Experiment File Name`` (a path, often with a
#: user's name) and ``Experiment Comment`` (free text) are left out: they may be personal
META_KEYS = ("Instrument Type", "Instrument Name", "Instrument Serial Number", "Block Type", "Chemistry",
             "Experiment Name", "Experiment Barcode", "Experiment Type", "Experiment Run End Time",
             "Quantification Cycle Method", "Passive Reference", "Analysis Type")

RawRows = list[tuple[int, list[str]]]


# --- 1. reading: bytes → header metadata, the [Results] header and its rows -------------------

def read(data: bytes, name: str) -> tuple[dict[str, str], list[str], RawRows]:
    """``* Key = Value`` lines (and the ``Key = Value`` footer after the results), the
    ``[Results]`` header cells and its rows as (1-based line, cells)."""
    meta: dict[str, str] = {}
    header: list[str] | None = None
    rows: RawRows = []
    section = None
    results_done = False
    lines = text_lines(decode_text(data))
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if section is None and line.startswith("* ") and " = " in line:
            key, _, value = line[2:].partition(" = ")
            meta[key.strip()] = value.strip()
        elif stripped.startswith("[") and stripped.endswith("]") and "\t" not in stripped:
            section = stripped[1:-1].strip()
        elif section == "Results" and not results_done:
            if not stripped:
                results_done = header is not None  # blank lines before the header are allowed
            elif header is None:
                header = line.split("\t")
            else:
                rows.append((number, line.split("\t")))
        elif results_done and " = " in line:  # footer: "Analysis Type = Singleplex"
            key, _, value = line.partition(" = ")
            meta.setdefault(key.strip(), value.strip())
    if header is None:
        raise UnrecognisedExport(f"{name}: no [Results] section (or one without its header row)")
    _refuse_cut_table(name, header, rows, unterminated_line=len(lines) if lines[-1] else None)
    return meta, header, rows


def _refuse_cut_table(name: str, header: list[str], rows: RawRows, unterminated_line: int | None) -> None:
    """An export that ends mid-table is refused whole, never read as far as it goes.
    ``unterminated_line``: the file's last line when no line break ends it."""
    if not rows:
        raise UnrecognisedExport(f"{name}: the [Results] section has a header but no rows: "
                                 "a truncated export, refused whole")
    last, cells = rows[-1]
    if len(cells) < len(header):
        raise UnrecognisedExport(f"{name}: ends mid-table: the last [Results] row (line {last}) has {len(cells)} "
                                 f"of the header's {len(header)} cells: a truncated export, refused whole")
    if last == unterminated_line:
        raise UnrecognisedExport(f"{name}: ends mid-table: the last [Results] row (line {last}) has no line break: "
                                 "a truncated export, refused whole")


# --- 2. typed records: cells → well, sample, target, Ct; row-level rejects --------------------

def _fold(name: str) -> str:
    """A header cell compared loosely: case, spaces, Cyrillic т / с for Latin t / c."""
    return " ".join(name.strip().lower().translate(str.maketrans("тс", "tc")).split())


def _find(header: list[str], *names: str) -> int | None:
    folded = [_fold(h) for h in header]
    return next((folded.index(n) for n in names if n in folded), None)


def plate_shape(block_type: str | None) -> tuple[int, int]:
    """Rows × columns of ``* Block Type``: 384-well 16 × 24, 48-well (StepOne) 6 × 8, else 8 × 12."""
    block = (block_type or "").lower()
    if "384" in block:
        return 16, 24
    if block.startswith("48") or "48-well" in block:
        return 6, 8
    return 8, 12


def records(meta: dict[str, str], header: list[str], rows: RawRows, name: str,
            timezone: str = DEFAULT_TIMEZONE) -> tuple[list[dict], list[dict]]:
    position_at, number_at = _find(header, "well position"), _find(header, "well")
    sample_at = _find(header, "sample name", "sample")
    target_at = _find(header, "target name", "detector name", "detector", "target")
    ct_at = _find(header, "ct", "cq", "c t")
    omit_at = _find(header, "omit")
    for column, at in (("Well Position or Well", position_at if position_at is not None else number_at),
                       ("Sample Name", sample_at), ("Target Name", target_at), ("CT / Ct / Cт / Cq", ct_at)):
        if at is None:
            raise UnrecognisedExport(f"{name}: no {column} column in [Results] "
                                     f"(columns: {', '.join(h.strip() for h in header[:10])} …)")
    rows_on_plate, columns_on_plate = plate_shape(meta.get("Block Type"))
    blank = lambda v: None if v is None or v.strip().upper() in ("", "NA", "N/A") else v.strip()  # noqa: E731
    run_id, plate_id = blank(meta.get("Experiment Name")), blank(meta.get("Experiment Barcode"))
    try:
        finished = run_time(meta.get("Experiment Run End Time"), timezone)
    except UnreadableRunTime as exc:
        raise UnrecognisedExport(f"{name}: Experiment Run End Time: {exc}") from exc
    needed = max(at for at in (position_at, number_at, sample_at, target_at, ct_at) if at is not None)
    good, bad = [], []
    for number, cells in rows:
        raw = "\t".join(cells)
        if len(cells) <= needed:  # a cut line: a missing Ct must not read as "not detected"
            bad.append({"line": number, "column": header[needed].strip(), "reason": "row ends before its last needed column",
                        "raw": raw})
            continue
        target = cells[target_at].strip()
        if not target:
            continue  # a well without a target: nothing was measured there
        try:
            if position_at is not None and cells[position_at].strip():
                well = canonical_well(cells[position_at])
            else:
                text = cells[number_at].strip() if number_at is not None else ""
                well = (well_from_number(int(text), rows_on_plate, columns_on_plate) if text.isdigit()
                        else canonical_well(text))
        except ValueError:
            column = header[position_at if position_at is not None else number_at].strip()  # type: ignore[index]
            bad.append({"line": number, "column": column, "reason": "not a well", "raw": raw})
            continue
        if omit_at is not None and len(cells) > omit_at and cells[omit_at].strip().lower() == "true":
            bad.append({"line": number, "column": header[omit_at].strip(), "reason": "well omitted in the instrument software",
                        "raw": raw})
            continue
        try:
            ct = ct_value(cells[ct_at])
        except ValueError:
            bad.append({"line": number, "column": header[ct_at].strip(), "reason": "Ct not a number", "raw": raw})
            continue
        good.append({"well": well, "sample": cells[sample_at].strip(), "target": target, "ct": ct, "line": number,
                     "run_id": run_id, "plate_id": plate_id, "lab_id": None, "finished_at": finished})
    return good, bad


# --- 3. mapping to the long table -------------------------------------------------------------

def to_table(good: list[dict], bad: list[dict], meta: dict[str, str]) -> ParsedExport:
    return ParsedExport("quantstudio", records_frame(good), rejects_frame(bad),
                        {k: meta[k] for k in META_KEYS if meta.get(k)})


def parse(data: bytes, name: str, timezone: str = DEFAULT_TIMEZONE) -> ParsedExport:
    meta, header, rows = read(data, name)
    good, bad = records(meta, header, rows, name, timezone)
    return to_table(good, bad, meta)


# --- the format, for the registry (lab.instruments.REGISTRY) -----------------------------------

#: section headers that mark the export wherever they stand in the head
SECTIONS = ("[Results]", "[Sample Setup]", "[Amplification Data]")


def sniff(head: Head) -> bool:
    """A text (not XML) whose first line is ``* Key = Value`` or that has one of :data:`SECTIONS`."""
    if head.xml or not head.lines:
        return False
    first = head.lines[0]
    return (first.startswith("* ") and " = " in first) or any(line in SECTIONS for line in head.lines)


FORMAT = InstrumentFormat(
    name="quantstudio", sniff=sniff,
    parse=lambda path, timezone: parse(Path(path).read_bytes(), Path(path).name, timezone),
    unlike="not a QuantStudio export (no '* Key = Value' header, no [Results] section)")
