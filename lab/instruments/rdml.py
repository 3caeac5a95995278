"""RDML 1.0–1.3 (Real-time PCR Data Markup Language, http://www.rdml.org): normally a zip
holding ``rdml_data.xml``, sometimes the plain XML. Read with the standard library only
(zipfile, ``xml.etree.ElementTree.iterparse``, streamed: amplification curves are dropped as
they are read). Namespaces differ between versions, so elements are matched by local name.

Every ``<experiment>/<run>`` is kept, with its id as ``run_id`` (``plate_id`` stays null: the
caller takes it from the run id or the path). A run has a ``<pcrFormat>`` (rows, columns, row and
column labels; v1.0 files may have none or a text like ``free format``: 8 × 12 is assumed) and
``<react id>`` elements whose id is a well name (``A1``) or a number counted row-major over the
plate (on 12 columns 1 = A1, 13 = B1). Each ``<data>`` holds ``<tar id>`` and ``<cq>``; a missing
``<cq>``, ``-1`` or ``NaN`` is not detected. ``line`` is the reaction's ordinal in the file."""

from __future__ import annotations

import io
import zipfile
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from xml.etree import ElementTree

from lab.instruments.common import (
    DEFAULT_TIMEZONE,
    ZIP_STARTS,
    Head,
    InstrumentFormat,
    ParsedExport,
    UnreadableRunTime,
    UnrecognisedExport,
    canonical_well,
    ct_value,
    records_frame,
    rejects_frame,
    run_time,
    well_from_number,
)

DEFAULT_PLATE = (8, 12)
#: refuse a zip member that inflates beyond this (a zip bomb is no export)
MAX_XML_BYTES = 2 << 30


@dataclass
class Run:
    id: str | None
    experiment: str | None
    rows: str | None = None
    columns: str | None = None
    date: str | None = None
    instrument: str | None = None


@dataclass
class Reaction:
    ordinal: int
    run: Run
    id: str
    sample: str = ""
    data: list[tuple[str, str | None]] = field(default_factory=list)  # (target id, cq text)


# --- 1. reading: bytes → runs and reactions -------------------------------------------------------

def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _open_xml(data: bytes, name: str, stack: ExitStack) -> IO[bytes]:
    """The RDML XML as a stream: the zip member ``rdml_data.xml``, or ``data`` itself. A zip is
    known by its central directory, wherever it starts (some Bio-Rad files begin with the
    split-archive marker ``PK\\x07\\x08``); a damaged one by its ``PK`` start."""
    if not zipfile.is_zipfile(io.BytesIO(data)) and data[:2] != b"PK":
        if b"<" not in data[:1024]:
            raise UnrecognisedExport(f"{name}: not a zip and not RDML XML")
        return io.BytesIO(data)
    try:
        archive = stack.enter_context(zipfile.ZipFile(io.BytesIO(data)))
        infos = archive.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise UnrecognisedExport(f"{name}: a damaged zip, not readable as RDML ({exc})") from exc
    xml = [i for i in infos if i.filename.lower().endswith(".xml")]
    chosen = [i for i in xml if i.filename.rsplit("/", 1)[-1] == "rdml_data.xml"] or (xml if len(xml) == 1 else [])
    if not chosen:
        raise UnrecognisedExport(f"{name}: a zip without rdml_data.xml, not an RDML file")
    if chosen[0].file_size > MAX_XML_BYTES:
        raise UnrecognisedExport(f"{name}: rdml_data.xml inflates to {chosen[0].file_size} bytes")
    return stack.enter_context(archive.open(chosen[0]))


def read(data: bytes, name: str) -> tuple[dict[str, str], list[Reaction]]:
    """The file's reactions in document order, and its header facts (version, instrument)."""
    meta: dict[str, str] = {}
    reactions: list[Reaction] = []
    path: list[str] = []
    experiment: str | None = None
    run = Run(None, None)
    react: Reaction | None = None
    target, cq = "", None
    runs = 0
    with ExitStack() as stack:
        stream = _open_xml(data, name, stack)
        try:
            for event, element in ElementTree.iterparse(stream, events=("start", "end")):
                tag = _local(element.tag)
                if event == "start":
                    parent = path[-1] if path else None
                    path.append(tag)
                    if parent is None:
                        if tag != "rdml":
                            raise UnrecognisedExport(f"{name}: XML but not RDML (root element <{tag}>)")
                        meta["rdml_version"] = element.get("version", "")
                    elif tag == "experiment" and parent == "rdml":
                        experiment = element.get("id")
                    elif tag == "run" and parent == "experiment":
                        run, runs = Run(element.get("id"), experiment), runs + 1
                    elif tag == "react" and parent == "run":
                        react = Reaction(len(reactions) + 1, run, element.get("id", "").strip())
                    elif tag == "sample" and parent == "react" and react is not None:
                        react.sample = element.get("id", "").strip()
                    elif tag == "data" and parent == "react":
                        target, cq = "", None
                    elif tag == "tar" and parent == "data":
                        target = element.get("id", "").strip()
                    continue
                path.pop()
                parent = path[-1] if path else None
                text = (element.text or "").strip()
                if parent == "pcrFormat" and tag in ("rows", "columns"):
                    setattr(run, tag, text)
                elif parent == "run" and tag in ("runDate", "instrument"):
                    setattr(run, "date" if tag == "runDate" else "instrument", text)
                    if tag == "instrument" and text:
                        meta.setdefault("instrument", text)
                elif parent == "data" and tag == "cq":
                    cq = text
                elif tag == "data" and parent == "react" and react is not None:
                    react.data.append((target, cq))
                elif tag == "react" and parent == "run" and react is not None:
                    reactions.append(react)
                    react = None
                    element.clear()
                elif tag in ("adp", "mdp"):
                    element.clear()  # amplification and melting points: not needed, not kept
        except ElementTree.ParseError as exc:
            raise UnrecognisedExport(f"{name}: RDML XML that does not parse ({exc})") from exc
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise UnrecognisedExport(f"{name}: a damaged zip, not readable as RDML ({exc})") from exc
    meta["runs"] = str(runs)
    return meta, reactions


# --- 2. typed records: reaction ids → wells, cq → Ct ------------------------------------------------

def _plate(run: Run) -> tuple[int, int]:
    try:
        rows, columns = int(run.rows or ""), int(run.columns or "")
    except ValueError:
        return DEFAULT_PLATE
    return (rows, columns) if rows > 0 and columns > 0 else DEFAULT_PLATE


def well_of(react_id: str, rows: int, columns: int) -> str:
    """A reaction id as a well: a well name as it is (``A01`` → ``A1``), a number row-major."""
    return well_from_number(int(react_id), rows, columns) if react_id.isdigit() else canonical_well(react_id)


def records(reactions: list[Reaction], timezone: str = DEFAULT_TIMEZONE,
            name: str = "RDML") -> tuple[list[dict], list[dict]]:
    """Raises :class:`UnrecognisedExport` for a run whose ``runDate`` names an unknown time zone
    or is no real date and time."""
    good, bad = [], []
    for react in reactions:
        raw = f"run {react.run.id} react {react.id} sample {react.sample}"
        try:
            well = well_of(react.id, *_plate(react.run))
        except ValueError:
            bad.append({"line": react.ordinal, "column": "react id", "reason": "reaction id not a well of the plate", "raw": raw})
            continue
        try:
            when = run_time(react.run.date, timezone)
        except UnreadableRunTime as exc:
            raise UnrecognisedExport(f"{name}: runDate of run {react.run.id}: {exc}") from exc
        for target, cq in react.data:
            if not target:
                continue  # data without a target: nothing to report
            try:
                ct = ct_value(cq)
            except ValueError:
                bad.append({"line": react.ordinal, "column": "cq", "reason": "Ct not a number",
                            "raw": f"{raw} target {target} cq {cq}"})
                continue
            good.append({"well": well, "sample": react.sample, "target": target, "ct": ct, "line": react.ordinal,
                         "run_id": react.run.id, "plate_id": None, "lab_id": None, "finished_at": when})
    return good, bad


# --- 3. mapping to the long table ---------------------------------------------------------------------

def to_table(good: list[dict], bad: list[dict], meta: dict[str, str], name: str) -> ParsedExport:
    if not good and not bad:
        raise UnrecognisedExport(f"{name}: RDML without any reaction data")
    return ParsedExport("rdml", records_frame(good), rejects_frame(bad), meta)


def parse(data: bytes, name: str, timezone: str = DEFAULT_TIMEZONE) -> ParsedExport:
    meta, reactions = read(data, name)
    return to_table(*records(reactions, timezone, name), meta, name)


# --- the format, for the registry (lab.instruments.REGISTRY) -----------------------------------

def sniff(head: Head) -> bool:
    """RDML claims every zip (by its central directory, or a zip's first bytes) and every XML:
    :func:`read` refuses a zip without ``rdml_data.xml``, a damaged one, and XML of another root."""
    return head.zipped or head.data[:4] in ZIP_STARTS or head.xml


FORMAT = InstrumentFormat(
    name="rdml", sniff=sniff,
    parse=lambda path, timezone: parse(Path(path).read_bytes(), Path(path).name, timezone),
    unlike="not a zip and not RDML XML")
