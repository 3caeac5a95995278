"""The inbox: one subfolder per feed kind; files read in bulk into all-text frames.

Each file is identified by the SHA-256 of its content (the ingest ledger's key): a file seen
before is skipped whatever its name. CSV (UTF-8, BOM tolerated, header row, columns by name,
case-insensitive), Parquet and JSON Lines are told apart by content. Rows that cannot be split
into the header's columns are *rejects* (they go to quarantine with their line); a file that
cannot be read at all, or lacks a required column, raises :class:`RefusedFile`.

Line numbers: CSV counts physical lines with the header as line 1; JSON Lines counts lines;
Parquet counts rows from 1.
"""

from __future__ import annotations

import codecs
import csv
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tubetrail.rules import LINE, WARNING_PREFIX, Checked

#: feed kinds in dependency order: reference data, the register, then the chain (stock counts
#: after labs and the register, whose lab ids and districts name their holders)
KINDS = ("sites", "labs", "zones", "register", "stock", "scans", "manifests", "receipts", "results")

REJECT_SCHEMA = {LINE: pl.Int64, "column": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8}

#: the longest CSV / JSON line read (DuckDB's default is 2 MB, and a longer line refused the whole
#: file): far above any real row, so an over-long field is read and quarantined by its column's
#: length rule (``tubetrail.rules.text_rules``) while the file's other rows are taken
MAX_LINE_BYTES = 8 << 20
# the csv module (header, and line numbers of files with quoted line breaks) reads such lines too
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))


class RefusedFile(Exception):
    """A whole file is refused; the message names the file and the reason."""


@dataclass(frozen=True)
class InboxFile:
    kind: str
    path: Path
    #: the file's path below the inbox, e.g. ``register/register.csv`` (feed names, no personal data)
    label: str


class RawFile:
    """A file's rows staged as text in a private on-disk DuckDB database, read back in batches,
    so memory stays bounded whatever the file's size (DuckDB spills to disk).

    The staging table ``raw`` holds the file's columns (lower-case names) in file order;
    ``rejects`` holds the unreadable rows (``_line``, column, reason, raw).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, file_format: str, rejects: pl.DataFrame,
                 line_of: Callable[[pl.Series], pl.Series] | None) -> None:
        self.con = con
        self.file_format = file_format
        self.rejects = rejects.cast(REJECT_SCHEMA)
        self._line_of = line_of
        self.rows = int(con.sql("SELECT count(*) FROM raw").fetchall()[0][0])
        self.columns = [c for c in con.sql("SELECT * FROM raw LIMIT 0").columns if c != LINE]

    @property
    def rows_read(self) -> int:
        return self.rows + self.rejects.height

    def batches(self, size: int = 1_000_000) -> Iterator[pl.DataFrame]:
        """The rows in file order as text frames with ``_line``, ``size`` rows at a time."""
        for start in range(0, max(self.rows, 1), size):
            arrow = self.con.sql(
                f"SELECT rowid + 1 AS __ord, * FROM raw WHERE rowid >= {start} AND rowid < {start + size}"
                " ORDER BY rowid"
            ).to_arrow_table()
            frame = pl.from_arrow(arrow)
            assert isinstance(frame, pl.DataFrame)
            if LINE not in frame.columns:
                assert self._line_of is not None
                frame = frame.with_columns(self._line_of(frame["__ord"]).alias(LINE))
            yield frame.drop("__ord")

    def keep(self, batch: pl.DataFrame, checked: Checked) -> None:
        """Stage a checked batch: accepted rows, and quarantined rows with their raw text as JSON."""
        data_columns = [c for c in batch.columns if c != LINE]
        quarantined = checked.quarantined.join(
            batch.select(LINE, pl.struct(data_columns).struct.json_encode().alias("raw")), on=LINE, how="left"
        ).select(LINE, "column", "reason", "raw")
        for table, frame in (("accepted", checked.accepted), ("quarantined", quarantined)):
            self.con.register("batch_arrow", frame.to_arrow())
            exists = self.con.sql(f"SELECT 1 FROM duckdb_tables() WHERE table_name = '{table}'").fetchall()
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch_arrow" if exists
                             else f"CREATE TABLE {table} AS SELECT * FROM batch_arrow")
            self.con.unregister("batch_arrow")

    def settle(self, unique_key: Sequence[str] | None) -> dict[str, int]:
        """After the last batch: unreadable rows join the quarantine; within the file the last line
        per ``unique_key`` wins (earlier exact repeats are duplicates, earlier different rows are
        superseded). Returns the warning counts over the rows kept."""
        for table, frame in (("accepted", pl.DataFrame({LINE: []}, schema={LINE: pl.Int64})),
                             ("quarantined", pl.DataFrame(schema={LINE: pl.Int64, "column": pl.Utf8,
                                                                   "reason": pl.Utf8, "raw": pl.Utf8}))):
            if not self.con.sql(f"SELECT 1 FROM duckdb_tables() WHERE table_name = '{table}'").fetchall():
                self.con.register("empty_arrow", frame.to_arrow())
                self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM empty_arrow")
                self.con.unregister("empty_arrow")
        if self.rejects.height:
            self.con.register("rejects_arrow", self.rejects.to_arrow())
            self.con.execute("INSERT INTO quarantined BY NAME SELECT * FROM rejects_arrow")
            self.con.unregister("rejects_arrow")
        columns = self.con.sql("SELECT * FROM accepted LIMIT 0").columns
        warnings = [c for c in columns if c.startswith(WARNING_PREFIX)]
        if unique_key:
            data = [c for c in columns if c != LINE and c not in warnings]
            key = ", ".join(f'"{k}"' for k in unique_key)
            on = " AND ".join(f'a."{k}" IS NOT DISTINCT FROM d."{k}"' for k in unique_key)
            packed = ", ".join(f'"{c}" := a."{c}"' for c in data)
            self.con.execute(
                f"""CREATE TEMP TABLE repeats AS
                WITH d AS (SELECT {key} FROM accepted GROUP BY ALL HAVING count(*) > 1),
                r AS (SELECT a.{LINE}, to_json(struct_pack({packed})) AS raw,
                             hash(struct_pack({packed})) AS h,
                             max(a.{LINE}) OVER (PARTITION BY {', '.join(f'a."{k}"' for k in unique_key)}) AS last_line
                      FROM accepted a SEMI JOIN d ON {on})
                SELECT r.*, l.h AS last_h FROM r JOIN r l ON l.{LINE} = r.last_line WHERE r.{LINE} <> r.last_line"""
            )
            self.con.execute(
                f"""INSERT INTO quarantined SELECT {LINE}, '{unique_key[-1]}',
                       CASE WHEN h = last_h THEN format('duplicate row (same as line {{}})', last_line)
                            ELSE format('conflicting duplicate (superseded by line {{}})', last_line) END, raw
                    FROM repeats"""
            )
            self.con.execute(f"DELETE FROM accepted WHERE {LINE} IN (SELECT {LINE} FROM repeats)")
            self.con.execute("DROP TABLE repeats")
        if not warnings:
            return {}
        counts = self.con.sql(
            "SELECT " + ", ".join(f'coalesce(sum("{w}"::INTEGER), 0)' for w in warnings) + " FROM accepted"
        ).fetchall()[0]
        return {w.removeprefix(WARNING_PREFIX): int(n) for w, n in zip(warnings, counts) if n}

    @property
    def path(self) -> str:
        return str(self.con.sql("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0][0])

    def release(self) -> str:
        """Close the staging database so the warehouse connection can attach it; returns its path."""
        path = self.path
        self.con.execute("CHECKPOINT")
        self.con.close()
        return path

    def frame(self) -> pl.DataFrame:
        """All rows at once (small files and tests)."""
        parts = list(self.batches())
        return pl.concat(parts) if parts else pl.DataFrame()


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: the event time of each chain kind, by which its files are ordered
EVENT_TIME = {"scans": "scanned_at", "manifests": "packed_at", "receipts": "received_at", "results": "finished_at",
              # a count is a fact of its time: a delivery counted at noon is taken in the noon of a replay
              "stock": "at"}


def discover(inbox: Path, kinds: Sequence[str] = KINDS, timezone_name: str = "Asia/Shanghai") -> list[InboxFile]:
    """Every file under the inbox's kind folders, in dependency order: reference data and the
    register first (kind order, then path), then the chain files in the order things happened
    (first event time in the file, then kind order, then path; files without a readable time
    last). So a re-sample scanned the next morning comes after the receipts and results that
    ordered it, even when one inbox holds a whole round."""
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
    chain.sort(key=lambda f: (times[f.path] or far, KINDS.index(f.kind), f.label))
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
    from lab.instruments import UnrecognisedExport, parse_export

    zone = con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
    try:
        records = parse_export(path, timezone=zone).records
    except (UnrecognisedExport, OSError):
        return None
    if "finished_at" not in records.columns or records["finished_at"].null_count() == records.height:
        return export_written_at(path)
    return records["finished_at"].min().astimezone(timezone.utc)


def export_written_at(path: Path) -> datetime:
    """When an export was written: its file's modification time (the run time of an export
    that carries none)."""
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)


def foreign_encoding(path: Path) -> str | None:
    """The encoding of a text file that is not UTF-8 as a whole, or None.

    UTF-8 (a BOM tolerated) gives None, and so does a UTF-8 file with a few broken rows (more
    well-formed non-ASCII characters than broken sequences): those rows are rejects, each with
    its line. A file that is mostly not UTF-8 but decodes as GB18030 (GBK and GB2312 are its
    subsets: Excel's "CSV" on Chinese Windows) is ``GBK/GB18030``; a UTF-16 BOM gives ``UTF-16``
    (Excel's "Unicode text"). Streams the file in chunks (C-speed decoding, no per-row work)."""
    with path.open("rb") as handle:
        if handle.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            return "UTF-16"
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    broken = well_formed = 0
    with path.open("rb") as handle:
        for chunk in [*iter(lambda: handle.read(1 << 22), b""), None]:
            text = utf8.decode(b"", final=True) if chunk is None else utf8.decode(chunk)
            if text.isascii():
                continue
            bad = text.count("\ufffd")
            broken += bad
            well_formed += len(text) - len(text.encode("ascii", "ignore")) - bad
    if broken <= well_formed:
        return None
    gb18030 = codecs.getincrementaldecoder("gb18030")("strict")
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                gb18030.decode(chunk)
            gb18030.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    return "GBK/GB18030"


def sniff_format(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"{"):
        return "jsonl"
    return "csv"


# --- staging folders ---------------------------------------------------------------------------------
#
# A file is staged in its own folder below the warehouse's staging folder ``<warehouse>.staging/``
# (mode 0700, beside the warehouse: the same protection), never in $TMPDIR: a staged register
# holds personal data in clear. Each staging folder has an ``owner.lock`` its process holds
# (flock) while it lives. A process killed halfway leaves its folder behind; the next staging
# sweeps every folder whose lock nobody holds, and never one of a concurrent ingest. Creating a
# folder (with its lock taken) and sweeping happen under ``.sweep.lock`` of the staging folder,
# so a sweep never sees a new folder before its owner holds it.

STAGING_SUFFIX = ".staging"
_OWNER_LOCK = "owner.lock"
#: the staging folder of the ingest running in this context (set by ``staging_in``); None: the
#: user's temporary folder (``tubetrail lab parse`` and tests, outside any warehouse)
_STAGING_ROOT: ContextVar[Path | None] = ContextVar("tubetrail_staging_root", default=None)


def staging_root_of(warehouse: str | os.PathLike[str]) -> Path:
    """The staging folder of a warehouse: ``<warehouse>.staging/`` beside it."""
    warehouse = Path(warehouse)
    return warehouse.with_name(warehouse.name + STAGING_SUFFIX)


@contextmanager
def staging_in(root: Path | None) -> Iterator[None]:
    """Stage every file of this context (parsers included) below ``root`` (None: unchanged)."""
    if root is None:
        yield
        return
    token = _STAGING_ROOT.set(Path(root))
    try:
        yield
    finally:
        _STAGING_ROOT.reset(token)


def _private_folder(root: Path) -> Path:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root


@contextmanager
def _locked(path: Path, flags: int) -> Iterator[bool]:
    """flock ``path`` (created if missing); yields False when ``LOCK_NB`` finds it held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def sweep_staging(root: Path) -> list[str]:
    """Remove the staging folders below ``root`` whose owner is gone (nobody holds their
    ``owner.lock``: the process was killed). Returns the names removed."""
    if not root.is_dir():
        return []
    removed = []
    with _locked(root / ".sweep.lock", fcntl.LOCK_EX):
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            lock = folder / _OWNER_LOCK
            if lock.exists():
                with _locked(lock, fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
                    if not free:
                        continue  # a live staging (a concurrent ingest)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


@contextmanager
def staging_folder(root: Path | None = None) -> Iterator[Path]:
    """A new private folder below ``root`` (default: the context's, see :func:`staging_in`) to
    stage one file in, held by this process until the end of the context and then removed.
    Folders left by killed processes are swept first."""
    chosen = root if root is not None else _STAGING_ROOT.get()
    root = _private_folder(chosen if chosen is not None
                           else Path(tempfile.gettempdir()) / f"tubetrail-staging-{os.getuid()}")
    sweep_staging(root)
    with _locked(root / ".sweep.lock", fcntl.LOCK_EX):
        folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
        fd = os.open(folder / _OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


@contextmanager
def stage_file(path: Path, required: Iterable[str], label: str | None = None,
               memory_limit: str = "10GB", staging_root: Path | None = None) -> Iterator[RawFile]:
    """Stage one inbox file as text below ``staging_root`` (the warehouse's, see
    :func:`staging_root_of`); refuse it if unreadable or missing a required column."""
    label = label or str(path)
    if path.stat().st_size == 0:
        raise RefusedFile(f"{label}: empty file")
    file_format = sniff_format(path)
    if file_format in ("csv", "jsonl"):
        encoding = foreign_encoding(path)
        if encoding is not None:
            raise RefusedFile(f"{label}: file is {encoding}-encoded, not UTF-8: re-save it as UTF-8")
    reader = {"csv": _stage_csv, "parquet": _stage_parquet, "jsonl": _stage_jsonl}[file_format]
    with staging_folder(staging_root) as tmp:
        con = duckdb.connect(str(Path(tmp) / "stage.duckdb"))
        try:
            con.execute(f"SET temp_directory = '{Path(tmp) / 'spill'}'")
            con.execute(f"SET memory_limit = '{memory_limit}'")
            rejects, line_of = reader(con, path, label)
            columns = con.sql("SELECT * FROM raw LIMIT 0").columns
            lowered = [c.strip().lower() for c in columns if c != LINE]
            twice = sorted({c for c in lowered if lowered.count(c) > 1})
            if twice:
                raise RefusedFile(f"{label}: column named twice (names are case-insensitive): {', '.join(twice)}")
            renames = [(c, c.strip().lower()) for c in columns if c != c.strip().lower()]
            for old, new in renames:
                con.execute(f'ALTER TABLE raw RENAME COLUMN "{old}" TO "{new}"')
            missing = [c for c in required if c not in lowered]
            if missing:
                raise RefusedFile(f"{label}: missing required column(s) {', '.join(missing)}")
            yield RawFile(con, file_format, rejects, line_of)
        finally:
            con.close()


@contextmanager
def stage_records(records: pl.DataFrame, rejects: pl.DataFrame, file_format: str,
                  memory_limit: str = "10GB", staging_root: Path | None = None) -> Iterator[RawFile]:
    """Stage rows a parser already read (instrument exports): ``records`` with ``_line``."""
    with staging_folder(staging_root) as tmp:
        con = duckdb.connect(str(Path(tmp) / "stage.duckdb"))
        try:
            con.execute(f"SET temp_directory = '{Path(tmp) / 'spill'}'")
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.register("records_arrow", records.to_arrow())
            con.execute("CREATE TABLE raw AS SELECT * FROM records_arrow ORDER BY _line")
            con.unregister("records_arrow")
            yield RawFile(con, file_format, rejects, None)
        finally:
            con.close()


def read_table(path: Path, required: Iterable[str], label: str | None = None) -> RawTable:
    """A whole (small) file as one text frame: for tests and small reference files."""
    with stage_file(path, required, label) as raw:
        return RawTable(raw.frame(), raw.rejects, raw.file_format)


@dataclass(frozen=True)
class RawTable:
    frame: pl.DataFrame
    rejects: pl.DataFrame
    file_format: str

    @property
    def rows_read(self) -> int:
        return self.frame.height + self.rejects.height


def _empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle), [])


def _stage_csv(con: duckdb.DuckDBPyConnection, path: Path, label: str):
    names = [n.strip().lower() for n in _csv_header(path)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RefusedFile(f"{label}: column named twice (names are case-insensitive): {', '.join(twice)}")
    try:
        con.execute(
            "CREATE TABLE raw AS SELECT * FROM read_csv(?, header = true, all_varchar = true, delim = ',',"
            " quote = '\"', escape = '\"', store_rejects = true, rejects_table = 'csv_rejects',"
            f" rejects_scan = 'csv_reject_scans', null_padding = false, max_line_size = {MAX_LINE_BYTES})",
            [str(path)],
        )
        rejects = pl.from_arrow(
            con.sql(
                f"SELECT line::BIGINT AS {LINE}, column_name::VARCHAR AS column, error_type::VARCHAR AS error_type,"
                " csv_line AS raw FROM csv_rejects ORDER BY line"
            ).to_arrow_table()
        )
    except duckdb.Error as exc:
        raise RefusedFile(f"{label}: not readable as CSV ({_first_line(exc)})") from exc
    assert isinstance(rejects, pl.DataFrame)
    if not con.sql("SELECT * FROM raw LIMIT 0").columns:
        raise RefusedFile(f"{label}: no header row")
    rows = int(con.sql("SELECT count(*) FROM raw").fetchall()[0][0])
    line_of = _good_row_lines(path, rows, rejects.get_column(LINE))
    rejects = rejects.group_by(LINE, maintain_order=True).agg(
        pl.col("column").first(),
        pl.format("unreadable row: {}", pl.col("error_type").first().str.to_lowercase()).alias("reason"),
        pl.col("raw").first(),
    )
    return rejects, line_of


def _good_row_lines(path: Path, good_rows: int, reject_lines: pl.Series) -> Callable[[pl.Series], pl.Series]:
    """A function from good-row ordinals (1-based) to their physical CSV lines.

    When every line is one record (no blank lines, no quoted line breaks: the usual case), a good
    row's line is its ordinal plus the header plus the rejected lines before it. Otherwise the
    record start lines are counted once with the csv module (rare, malformed files only).
    """
    reject_lines = reject_lines.unique().sort()
    newlines, last = 0, b"\n"
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    physical = newlines + (0 if last == b"\n" else 1)
    if physical == 1 + good_rows + reject_lines.len():
        shifted = reject_lines - pl.int_range(1, reject_lines.len() + 1, eager=True)

        def by_formula(ordinal: pl.Series) -> pl.Series:
            ordinal = ordinal.cast(pl.Int64)
            return ordinal + 1 + shifted.search_sorted(ordinal, side="right").cast(pl.Int64)

        return by_formula
    starts: list[int] = []
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        previous_end = 0
        for record in reader:
            if record:
                starts.append(previous_end + 1)
            previous_end = reader.line_num
    rejected = set(reject_lines.to_list())
    lines = pl.Series(LINE, [line for line in starts[1:] if line not in rejected][:good_rows], dtype=pl.Int64)

    def by_count(ordinal: pl.Series) -> pl.Series:
        return lines.gather(ordinal.cast(pl.Int64) - 1)

    return by_count


def _stage_parquet(con: duckdb.DuckDBPyConnection, path: Path, label: str):
    try:
        parquet = pq.ParquetFile(path)
        created = False
        for batch in parquet.iter_batches(batch_size=500_000):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            text = frame.with_columns(_as_text(frame.schema)).to_arrow()
            con.register("parquet_batch", text)
            con.execute("INSERT INTO raw SELECT * FROM parquet_batch" if created
                        else "CREATE TABLE raw AS SELECT * FROM parquet_batch")
            con.unregister("parquet_batch")
            created = True
        if not created:
            frame = pl.from_arrow(parquet.schema_arrow.empty_table())
            assert isinstance(frame, pl.DataFrame)
            con.register("parquet_batch", frame.with_columns(_as_text(frame.schema)).to_arrow())
            con.execute("CREATE TABLE raw AS SELECT * FROM parquet_batch")
            con.unregister("parquet_batch")
    except (pa.ArrowException, OSError) as exc:
        raise RefusedFile(f"{label}: not readable as Parquet ({_first_line(exc)})") from exc
    return _empty_rejects(), lambda ordinal: ordinal.cast(pl.Int64)


def _as_text(schema: pl.Schema) -> list[pl.Expr]:
    out = []
    for name, dtype in schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            fmt = "%Y-%m-%dT%H:%M:%S%.f%:z" if dtype.time_zone else "%Y-%m-%dT%H:%M:%S%.f"
            out.append(col.dt.to_string(fmt).alias(name))
        elif dtype == pl.Boolean:
            out.append(pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).alias(name))
        else:
            out.append(col.cast(pl.Utf8).alias(name))
    return out


def _stage_jsonl(con: duckdb.DuckDBPyConnection, path: Path, label: str):
    is_object = "CASE WHEN json_valid(j) THEN json_type(j) = 'OBJECT' ELSE false END"
    try:
        con.execute(
            "CREATE TABLE lines AS SELECT row_number() OVER () AS line, j FROM read_csv(?, header = false,"
            " columns = {'j': 'VARCHAR'}, delim = '\x1e', quote = '', escape = '', auto_detect = false,"
            f" strict_mode = false, max_line_size = {MAX_LINE_BYTES})",
            [str(path)],
        )
        keys = [r[0] for r in con.sql(
            f"SELECT DISTINCT unnest(json_keys(j)) FROM lines WHERE {is_object} ORDER BY 1").fetchall()]
        if not keys:
            raise RefusedFile(f"{label}: no JSON object lines")
        con.execute(f"CREATE TABLE objects AS SELECT line, j FROM lines WHERE {is_object} ORDER BY line")
        select = ", ".join(f"json_extract_string(j, ?) AS \"{k.replace(chr(34), '')}\"" for k in keys)
        paths = ['$."' + k.replace('"', '\\"') + '"' for k in keys]
        con.execute(f"CREATE TABLE raw AS SELECT {select}, line::BIGINT AS {LINE} FROM objects ORDER BY line", paths)
        bad = con.sql(
            f"SELECT line::BIGINT AS {LINE}, NULL::VARCHAR AS column, 'unreadable row: not a JSON object'"
            f" AS reason, j AS raw FROM lines WHERE trim(coalesce(j, '')) <> '' AND NOT {is_object} ORDER BY line"
        ).to_arrow_table()
        con.execute("DROP TABLE lines; DROP TABLE objects")
    except duckdb.Error as exc:
        raise RefusedFile(f"{label}: not readable as JSON Lines ({_first_line(exc)})") from exc
    rejects = pl.from_arrow(bad)
    assert isinstance(rejects, pl.DataFrame)
    return rejects, None


def _first_line(exc: BaseException) -> str:
    """The error's first line, cut short, with digit runs and non-ASCII text masked: a reader's
    error may quote a row, and rows hold personal data."""
    text = str(exc).strip().splitlines()
    line = text[0][:160] if text else type(exc).__name__
    line = re.sub(r"\d{4,}", "****", line)
    return re.sub(r"[^\x00-\x7f]+", "*", line)
