"""What every instrument parser shares: the format contract (:class:`InstrumentFormat`, the
:class:`Head` it sniffs, the :class:`ParsedExport` it returns), the long-table schema, text
decoding, wells, Ct text, run times. Pure Python and polars; no Prefect."""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

RECORD_SCHEMA = {
    "well": pl.Utf8, "sample": pl.Utf8, "target": pl.Utf8, "ct": pl.Float64, "line": pl.Int64,
    "run_id": pl.Utf8, "plate_id": pl.Utf8, "lab_id": pl.Utf8, "finished_at": pl.Datetime("us", "UTC"),
}
REJECT_SCHEMA = {"line": pl.Int64, "column": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8}

#: the city's zone: a time written without offset or zone is local time here (DESIGN §4)
DEFAULT_TIMEZONE = "Asia/Shanghai"

#: "no Ct" (not detected) as the instruments' own software writes it, lower-case
INSTRUMENT_NOT_DETECTED = frozenset({"", "undetermined", "nan", "no ct", "no cq", "n/a", "na"})
#: "no Ct" in the generic CSV: exactly the spellings of DESIGN §4, lower-case; anything else that
#: is not a number is a row-level reject
GENERIC_NOT_DETECTED = ("", "undetermined", "nan", "no ct")


class UnrecognisedExport(ValueError):
    """A file that is none of the known exports, or a damaged one; the message names the file."""


# --- the format contract ---------------------------------------------------------------------

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


@dataclass(frozen=True)
class Head:
    """What a format's ``sniff`` looks at: the file's first :data:`HEAD_BYTES` (``data``) and
    whether the whole file is a zip (``zipped``: a zip is known by its end, which the head may
    not reach). The text views are computed once and shared by every format's sniff; they are
    empty for binary content (a NUL in the text), so a text format never claims a binary file."""

    data: bytes
    zipped: bool

    @classmethod
    def of(cls, data: bytes, zipped: bool | None = None) -> Head:
        return cls(data[:HEAD_BYTES], is_zip(data) if zipped is None else zipped)

    @cached_property
    def text(self) -> str:
        """The head as text, leniently: it may end inside a character; GB18030 text keeps its
        ASCII header readable; UTF-16 with a BOM is read as such; the BOM is dropped."""
        utf16 = self.data[:2] in (b"\xff\xfe", b"\xfe\xff")
        return self.data.decode("utf-16" if utf16 else "utf-8", errors="replace").lstrip("\ufeff")

    @cached_property
    def binary(self) -> bool:
        return "\x00" in self.text

    @cached_property
    def xml(self) -> bool:
        """Text that begins with ``<`` (an XML declaration or element)."""
        return not self.binary and self.text.lstrip().startswith("<")

    @cached_property
    def lines(self) -> list[str]:
        """The non-blank lines, stripped ([] for binary content)."""
        return [] if self.binary else [line.strip() for line in text_lines(self.text) if line.strip()]

    @cached_property
    def first_cells(self) -> list[str]:
        """The first line's comma-separated cells: stripped, unquoted, lower-case."""
        return [cell.strip().strip('"').lower() for cell in self.lines[0].split(",")] if self.lines else []


@dataclass(frozen=True)
class InstrumentFormat:
    """One instrument export format, as its module declares it (``FORMAT`` at the module's end)
    and ``lab.instruments.REGISTRY`` lists it.

    * ``name``: the ``format`` of its :class:`ParsedExport` (``source_format`` in the warehouse);
    * ``sniff(head) -> bool``: whether a file with this :class:`Head` is this format, from its
      content only (never its name). A claim is final: a file this format claims and then cannot
      read is refused, never handed to another format; so a sniff claims its family (RDML: every
      zip and every XML) and leaves everything else alone;
    * ``parse(path, timezone) -> ParsedExport``: the file read to the long table; raises
      :class:`UnrecognisedExport` for a damaged file; ``timezone``: where a run time without
      zone or offset was written;
    * ``unlike``: what an unrecognised file is told about this format (``not a … (no …)``).
    """

    name: str
    sniff: Callable[[Head], bool]
    parse: Callable[[Path, str], ParsedExport]
    unlike: str


# --- text ------------------------------------------------------------------------------------

def decode_text(data: bytes) -> str:
    """Export bytes as text: UTF-8 (BOM or not), UTF-16 with a BOM, else GB18030 (exports written
    by Chinese Windows software). Raises :class:`UnicodeDecodeError` when none fits."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def text_lines(text: str) -> list[str]:
    """Physical lines (CRLF, CR or LF), so that line numbers match an editor's. Unlike
    ``str.splitlines`` it does not break on U+2028, U+0085 … that may occur inside a name."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# --- wells -----------------------------------------------------------------------------------

#: a well of a 96-, 384- or 1536-well plate: rows A–P or AA–AF, columns 1–48 (zero padding allowed)
WELL_PATTERN = r"([A-Pa-p]|[Aa][A-Fa-f])0*([1-9]|[1-3]\d|4[0-8])"
_ROWS = [chr(ord("A") + i) for i in range(26)] + [f"A{chr(ord('A') + i)}" for i in range(6)]


def canonical_well(text: str | None) -> str:
    """``A01`` / ``a1`` / ``A1`` → ``A1``; raises ValueError on anything else."""
    match = re.fullmatch(r"\s*" + WELL_PATTERN + r"\s*", text or "")
    if not match:
        raise ValueError(f"not a well: {text!r}")
    return f"{match.group(1).upper()}{int(match.group(2))}"


def well_from_number(number: int, rows: int, columns: int) -> str:
    """1-based well number counted row-major over a ``rows`` × ``columns`` plate: on 8 × 12,
    1 → A1, 12 → A12, 13 → B1, 96 → H12. Raises ValueError outside the plate."""
    if not (1 <= number <= rows * columns) or rows > len(_ROWS):
        raise ValueError(f"well number {number} outside a {rows} x {columns} plate")
    row, column = divmod(number - 1, columns)
    return f"{_ROWS[row]}{column + 1}"


# --- Ct --------------------------------------------------------------------------------------

def ct_value(text: str | None) -> float | None:
    """An instrument's Ct text as a number; None when not detected (``Undetermined``, ``NaN``,
    empty, RDML's ``-1`` …). A decimal comma (``31,25``, Russian or German locale) is a decimal
    point: a Ct is never in the thousands. Raises ValueError on other text and on Ct ≤ 0."""
    value = (text or "").strip()
    if value.lower() in INSTRUMENT_NOT_DETECTED:
        return None
    if re.fullmatch(r"[+-]?\d+,\d+", value):
        value = value.replace(",", ".")
    number = float(value)
    if math.isnan(number) or number == -1:
        return None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"Ct not a positive number: {text!r}")
    return number


# --- run times -------------------------------------------------------------------------------

#: time-zone abbreviations seen in run end times, as hours from UTC. ``CST`` is read as China
#: Standard Time (+08:00), the zone of this system's labs; in an export from a US lab it would mean
#: US Central (-06:00). Abbreviations with several common meanings (``IST``, ``BST`` …) are not
#: here: a run time with one of them is refused, never guessed.
ZONE_HOURS = {"UTC": 0, "GMT": 0, "Z": 0, "CST": 8, "CCT": 8, "HKT": 8, "BJT": 8, "SGT": 8, "MYT": 8, "PHT": 8,
              "AWST": 8, "JST": 9, "KST": 9, "ICT": 7, "WIB": 7, "AEST": 10, "AEDT": 11, "MSK": 3,
              "WET": 0, "WEST": 1, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3,
              "EDT": -4, "EST": -5, "CDT": -5, "MDT": -6, "MST": -7, "PDT": -7, "PST": -8, "AKDT": -8, "AKST": -9,
              "HST": -10, "CHINA STANDARD TIME": 8, "COORDINATED UNIVERSAL TIME": 0}


class UnreadableRunTime(ValueError):
    """A run time written as a date and time that cannot be taken as an instant: refused, never
    replaced by another time (an instant off by hours would misorder runs and breach or hide TAT)."""


class UnknownTimeZone(UnreadableRunTime):
    """A run time that names a time zone this system does not know."""

    def __init__(self, text: str, zone: str) -> None:
        self.text, self.zone = text, zone
        super().__init__(f"run time {text!r} carries the unknown time zone {zone!r}: refused, not guessed "
                         "(give the time with a UTC offset, an IANA zone such as Asia/Shanghai or a known "
                         "abbreviation such as CST, UTC, EDT)")


_RUN_TIME = re.compile(
    r"(?:(?P<y>\d{4})[-/](?P<m>\d{1,2})[-/](?P<d>\d{1,2})|(?P<m2>\d{1,2})[-/](?P<d2>\d{1,2})[-/](?P<y2>\d{4}))"
    r"[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?"
    r"(?:\s*(?P<half>[AaPp][Mm])(?![A-Za-z]))?"
    r"(?:\s*(?P<zone>\S.*?))?"
)
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*(?P<sign>[+-])(?P<h>\d{1,2})(?::?(?P<m>\d{2}))?", re.IGNORECASE)
_IANA = re.compile(r"[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+")


def _zone(name: str) -> tzinfo | None:
    """A zone as written after a run time: an offset (``+08:00``, ``+0800``, ``UTC+8``), a known
    abbreviation (:data:`ZONE_HOURS`) or an IANA name; None when it is none of them."""
    offset = _OFFSET.fullmatch(name)
    if offset:
        hours, minutes = int(offset["h"]), int(offset["m"] or 0)
        if hours > 14 or minutes > 59:
            return None
        sign = 1 if offset["sign"] == "+" else -1
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    key = " ".join(name.upper().split())
    if key in ZONE_HOURS:
        return timezone(timedelta(hours=ZONE_HOURS[key]))
    if _IANA.fullmatch(name):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return None
    return None


def run_time(text: str | None, local_zone: str = DEFAULT_TIMEZONE) -> datetime | None:
    """An instrument's run time (``2010-10-21 00:51:26 AM EDT``, ``10/21/2010 13:02:11 PM CST``,
    ``2014-08-19T11:30:20``, ``2022-04-04 09:15:00 +08:00``) as a UTC instant. No zone → local
    time of ``local_zone``; a text that is no time (``Not Started``, empty) → None: the export
    has no run time. A time whose zone is not known raises :class:`UnknownTimeZone`, naming it,
    and one with an impossible date or clock (``2022-13-40 25:00``) :class:`UnreadableRunTime`:
    never a silent fallback to some other time."""
    text = (text or "").strip()
    match = _RUN_TIME.fullmatch(text)
    if not match:
        return None
    g = match.groupdict()
    zone: tzinfo | None
    if g["zone"] is None:
        zone = ZoneInfo(local_zone)
    else:
        zone = _zone(g["zone"])
        if zone is None:
            raise UnknownTimeZone(text, g["zone"])
    hour = int(g["H"])
    half = (g["half"] or "").upper()
    if half == "PM" and hour < 12:
        hour += 12  # "13:02:11 PM" (24-hour clock with a PM suffix) stays 13
    elif half == "AM" and hour == 12:
        hour = 0
    try:
        local = datetime(int(g["y"] or g["y2"]), int(g["m"] or g["m2"]), int(g["d"] or g["d2"]),
                         hour, int(g["M"]), int(g["S"] or 0), tzinfo=zone)
    except ValueError as exc:
        raise UnreadableRunTime(f"run time {text!r} is no real date and time ({exc})") from exc
    return local.astimezone(timezone.utc)


# --- frames ----------------------------------------------------------------------------------

def records_frame(rows: list[dict]) -> pl.DataFrame:
    """Typed records (dicts with the keys of :data:`RECORD_SCHEMA`) as the long table."""
    return pl.DataFrame(rows, schema=RECORD_SCHEMA, orient="row") if rows else pl.DataFrame(schema=RECORD_SCHEMA)


def rejects_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=REJECT_SCHEMA, orient="row") if rows else pl.DataFrame(schema=REJECT_SCHEMA)
