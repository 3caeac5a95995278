"""Discovery: the inbox's files (one subfolder per feed kind) in the order things happened.

Reference data and the register come first (feed order, then path), then the chain files by
their first event time (the feed's ``event_time`` column). An instrument export keeps its run
time in its header: discovery parses it once and keeps the parsed export for the take
(:func:`parsed_export`), so an export is never parsed twice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.feeds import EVENT_TIME, KINDS
from kernel.tables import _csv_header, sniff_format
from lab.instruments import ParsedExport, UnrecognisedExport, parse_export


@dataclass(frozen=True)
class InboxFile:
    kind: str
    path: Path
    #: the file's path below the inbox, e.g. ``register/register.csv`` (feed names, no personal data)
    label: str


#: the chain files of one window of first event time are taken kind by kind (issue 15: a wave's
#: boxes, receipts and results interleave in time; strictly by time a stretch of one kind, and so
#: a batch, held 1.7–2.2 files at 1 M residents)
ORDER_WINDOW = timedelta(hours=1)


def discover(inbox: Path, kinds: Sequence[str] = KINDS, timezone_name: str = "Asia/Shanghai",
             window: timedelta | None = ORDER_WINDOW) -> list[InboxFile]:
    """Every file under the inbox's kind folders, in dependency order: reference data and the
    register first (kind order, then path), then the chain files in the order things happened:
    by the ``window`` (an hour) their first event falls in, within it by kind (scans, boxes,
    receipts, results: the order a tube travels), then first event time and path; files without
    a readable time last. So a re-sample scanned the next morning comes after the receipts and
    results that ordered it, even when one inbox holds a whole round, and a wave's files of one
    kind lie together (one batch each). A re-sample scan ahead of the results of its own hour
    waits and is placed by them (``waiting_scans``): the facts are those of the strict time
    order (tested). ``window=None``: strictly by first event time."""
    found: list[InboxFile] = []
    for kind in kinds:  # hidden files too (see ``is_hidden``): they are reported, not taken
        folder = inbox / kind
        if not folder.is_dir():
            continue
        paths = sorted(p for p in folder.rglob("*") if p.is_file())
        found.extend(InboxFile(kind, p, p.relative_to(inbox).as_posix()) for p in paths)
    reference = [f for f in found if f.kind not in EVENT_TIME]
    chain = [f for f in found if f.kind in EVENT_TIME]
    if not chain:
        return reference
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = ?", [timezone_name])
        times = {f.path: None if is_hidden(f.label) else first_event_at(f, con) for f in chain}
    finally:
        con.close()
    far = datetime.max.replace(tzinfo=timezone.utc)
    def bucket(f: InboxFile) -> float:
        t = times[f.path]
        if t is None:
            return float("inf")
        return t.timestamp() if window is None else t.timestamp() // window.total_seconds()

    chain.sort(key=lambda f: (bucket(f), KINDS.index(f.kind), times[f.path] or far, f.label))
    return reference + chain


def is_hidden(label: str) -> bool:
    """A file whose name, or a folder's below the inbox, starts with ``.``: partial uploads
    (``.r.csv.part``, rsync's ``.~tmp~/``), editors' lock files, ``.DS_Store``. ``discover``
    lists them and the ingest reports each as skipped, never taking it: a half-written file
    taken would be a file of missing rows."""
    return any(part.startswith(".") for part in Path(label).parts)


def first_event_at(file: InboxFile, con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The earliest event time in a chain file (a quick scan of one column; a time without
    offset is local time of the connection's TimeZone), or None."""
    found = _quick_first_event_at(file, con)
    if found is None and file.kind == "results":
        return _export_finished_at(file.path, con)
    return found


def _quick_first_event_at(file: InboxFile, con: duckdb.DuckDBPyConnection) -> datetime | None:
    column = EVENT_TIME[file.kind]
    file_format = sniff_format(file.path) if file.path.stat().st_size else "empty"
    try:
        if file_format == "csv":
            header = _csv_header(file.path)
            names = [h.strip().lower() for h in header]
            if column not in names:
                return None
            spec = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header))) + "}"
            source = (f"read_csv(?, header = true, columns = {spec}, auto_detect = false, delim = ',',"
                      " quote = '\"', escape = '\"', ignore_errors = true, null_padding = true)")
            target = f"c{names.index(column)}"
        elif file_format == "parquet":
            names = {n.lower(): n for n in pq.read_schema(file.path).names}
            if column not in names:
                return None
            source, target = "read_parquet(?)", names[column]
        elif file_format == "jsonl":
            source, target = "read_json(?, format = 'newline_delimited', ignore_errors = true)", column
        else:
            return None
        found = con.sql(f'SELECT min(TRY_CAST("{target}" AS TIMESTAMPTZ)) FROM {source}',
                        params=[str(file.path)]).fetchall()[0][0]
    except (duckdb.Error, pa.ArrowException, OSError):
        return None
    return found.astimezone(timezone.utc) if found is not None else None


def _export_finished_at(path: Path, con: duckdb.DuckDBPyConnection) -> datetime | None:
    """An instrument export (one plate, small) keeps its run time in its header: read it with
    the export's parser. An export without a run time (CFX Maestro) was written when its run
    ended: the file's modification time. None for a file that is no export."""
    zone = con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
    try:
        records = parsed_export(path, zone, keep=True).records
    except (UnrecognisedExport, OSError):
        return None
    if "finished_at" not in records.columns or records["finished_at"].null_count() == records.height:
        return export_written_at(path)
    return records["finished_at"].min().astimezone(timezone.utc)


def export_written_at(path: Path) -> datetime:
    """When an export was written: its file's modification time (the run time of an export
    that carries none)."""
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)


# --- exports parsed once ----------------------------------------------------------------------------
#
# Discovery parses an instrument export for its run time; the take needs the same rows. The
# parsed export is kept here, by path, size, modification time and time zone, until the take
# asks for it (once) — in the process that discovered it (the ingest flow's tasks run in it);
# elsewhere the take parses it itself. The store is bounded in rows (a plate is a few thousand).

KEEP_ROWS = 2_000_000
_kept: dict[tuple[str, int, int, str], ParsedExport] = {}
_kept_lock = threading.Lock()


def _export_key(path: Path, zone: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, zone


def parsed_export(path: Path, zone: str, *, keep: bool = False) -> ParsedExport:
    """The export at ``path`` parsed (run times without zone in ``zone``). ``keep``: keep it
    for the take (discovery); otherwise a kept one is handed out and forgotten, or the file is
    parsed now. Raises :class:`UnrecognisedExport`."""
    key = _export_key(path, zone)
    with _kept_lock:
        found = _kept.get(key) if keep else _kept.pop(key, None)
    if found is not None:
        return found
    parsed = parse_export(path, timezone=zone)
    if keep:
        with _kept_lock:
            if sum(p.records.height for p in _kept.values()) + parsed.records.height <= KEEP_ROWS:
                _kept[key] = parsed
    return parsed
