"""Reading an inbox file: its rows as all-text frames, in bulk, straight into DuckDB.

Each file is identified by the SHA-256 of its content (the ingest ledger's key): a file seen
before is skipped whatever its name. CSV (UTF-8, BOM tolerated, header row, columns by name,
case-insensitive), Parquet and JSON Lines are told apart by content. Rows that cannot be split
into the header's columns are *rejects* (they go to quarantine with their line); a file that
cannot be read at all, or lacks a required column, raises :class:`RefusedFile`.

Line numbers: CSV counts physical lines with the header as line 1; JSON Lines counts lines;
Parquet counts rows from 1.

:func:`read_file` reads into a temporary table of the caller's connection (the batch's
warehouse session: no database of its own per file) and hands the rows back in chunks;
:func:`read_table` reads a small file whole (the generic results parser, tests).
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
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from kernel.rules import LINE

REJECT_SCHEMA = {LINE: pl.Int64, "column": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8}

#: the longest CSV / JSON line read (DuckDB's default is 2 MB, and a longer line refused the whole
#: file): far above any real row, so an over-long field is read and quarantined by its column's
#: length rule (``kernel.rules.text_rules``) while the file's other rows are taken
MAX_LINE_BYTES = 8 << 20
# the csv module (header, and line numbers of files with quoted line breaks) reads such lines too
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
#: rows handed to the checks at a time (memory stays bounded whatever the file's size)
CHUNK_ROWS = 1_000_000


class RefusedFile(Exception):
    """A whole file is refused; the message names the file and the reason."""


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
# A batch is staged in its own folder below the warehouse's staging folder ``<warehouse>.staging/``
# (mode 0700, beside the warehouse: the same protection), never in $TMPDIR: a staged register holds
# personal data in clear. The folder holds what DuckDB spills while reading and staging (the batch's
# checked rows live in an in-memory ``stage`` database, ``ingest.take``). Each staging folder has an
# ``owner.lock`` its process holds (flock) while it lives. A process killed halfway leaves its
# folder behind; the next staging sweeps every folder whose lock nobody holds, and never one of a
# concurrent ingest. Creating a folder (with its lock taken) and sweeping happen under
# ``.sweep.lock`` of the staging folder, so a sweep never sees a new folder before its owner holds
# it.

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


@dataclass
class ReadFile:
    """One file's rows as read: text columns with lower-case names, in file order.

    ``chunks()`` hands them out as text frames with ``_line`` (the row's line in its file),
    ``CHUNK_ROWS`` at a time; ``rejects`` holds the unreadable rows (``_line``, column, reason,
    raw). ``rows_read`` counts both."""

    file_format: str
    rejects: pl.DataFrame
    rows: int
    columns: list[str]
    chunks: Callable[[], Iterator[pl.DataFrame]]

    @property
    def rows_read(self) -> int:
        return self.rows + self.rejects.height

    def frame(self) -> pl.DataFrame:
        """All rows at once (small files and tests)."""
        parts = list(self.chunks())
        return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame(
            schema={**{c: pl.Utf8 for c in self.columns}, LINE: pl.Int64})


@contextmanager
def read_file(con: duckdb.DuckDBPyConnection, path: Path, required: Iterable[str], label: str | None = None,
              table: str = "ingest_raw", *, plain: bool = True) -> Iterator[ReadFile]:
    """Read one inbox file into the temporary table ``table`` of ``con`` (dropped on exit; what
    does not fit the connection's memory spills to its temp directory); refuse it if it is
    empty, unreadable, foreign-encoded, names a column twice or lacks a required column.
    Parquet is read by row groups straight from the file, without a table. A plain CSV of at
    most :data:`PLAIN_CSV_MAX_BYTES` is read by polars instead (:func:`plain_csv_table`, the
    same rows and lines; issue 15: DuckDB's reader with its rejects table cost a small file
    several milliseconds); ``plain=False`` always reads through DuckDB."""
    required = tuple(required)
    label = label or str(path)
    size = path.stat().st_size
    if size == 0:
        raise RefusedFile(f"{label}: empty file")
    file_format = sniff_format(path)
    if plain and file_format == "csv" and size <= PLAIN_CSV_MAX_BYTES:
        raw = plain_csv_table(path, required)
        if raw is not None:  # a plain CSV, read by polars (no table, nothing to drop)
            yield _frame_read(raw)
            return
    if file_format in ("csv", "jsonl"):
        encoding = foreign_encoding(path)
        if encoding is not None:
            raise RefusedFile(f"{label}: file is {encoding}-encoded, not UTF-8: re-save it as UTF-8")
    try:
        if file_format == "parquet":
            read = _read_parquet(path, label)
        elif file_format == "csv":
            read = _read_csv(con, path, label, table)
        else:
            read = _read_jsonl(con, path, label, table)
        missing = [c for c in required if c not in read.columns]
        if missing:
            raise RefusedFile(f"{label}: missing required column(s) {', '.join(missing)}")
        yield read
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")


class _Reader:
    """An in-memory DuckDB spilling to a staging folder of its own, held until it is dropped
    (or the process ends): :func:`read_table`'s, one per thread and staging root."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        stack = ExitStack()
        try:
            folder = stack.enter_context(staging_folder(root))
            self.con = duckdb.connect()
            stack.callback(self.con.close)
            self.con.execute(f"SET temp_directory = '{folder / 'spill'}'")
        except BaseException:
            stack.close()
            raise
        # closed and removed when this reader is dropped (another root, the thread's end) or at exit
        self._release = weakref.finalize(self, stack.close)

    def close(self) -> None:
        self._release()


_READERS = threading.local()


def _reader() -> duckdb.DuckDBPyConnection:
    """This thread's reader for the context's staging root (see :func:`staging_in`): a DuckDB
    connects in ≈ 20 ms, more than a small results file takes to read (issue 15: one reader a
    thread, not one a file). A reader of another root is closed first."""
    root = _STAGING_ROOT.get()
    held = getattr(_READERS, "reader", None)
    if held is None or held.root != root:
        if held is not None:
            held.close()
        _READERS.reader = held = _Reader(root)
    return held.con


#: the largest CSV :func:`read_file` tries to read whole by polars (:func:`plain_csv_table`
#: holds the file's bytes and its frame at once, and its regular expression runs in one thread);
#: a larger one streams through DuckDB. Measured on manifest files (2026-12-02, medians): 600 rows
#: 2.3 against 7.8 ms, 12,000 rows (1.1 MiB) 11.8 against 20.6 ms, 24,000 rows (2.1 MiB) 22.5
#: against 30.5 ms, 30,000 rows (2.6 MiB) 50 against 37 ms
PLAIN_CSV_MAX_BYTES = 2 << 20


def _frame_read(raw: RawTable) -> ReadFile:
    """A table read whole (:func:`plain_csv_table`) as :func:`read_file` hands rows out."""
    frame = raw.frame

    def chunks() -> Iterator[pl.DataFrame]:
        for start in range(0, max(frame.height, 1), CHUNK_ROWS):
            yield frame.slice(start, CHUNK_ROWS)

    return ReadFile(raw.file_format, raw.rejects, frame.height, [c for c in frame.columns if c != LINE], chunks)


def read_table(path: Path, required: Iterable[str], label: str | None = None) -> RawTable:
    """A whole (small) file as one text frame, read as :func:`read_file` reads it (a plain CSV of
    at most :data:`PLAIN_CSV_MAX_BYTES` by polars, any other) with this thread's in-memory DuckDB
    (kept between files), spilling to a staging folder (see :func:`staging_in`): the generic
    results parser and tests. Its temporary table is dropped after each file."""
    with read_file(_reader(), path, required, label) as read:
        return RawTable(read.frame(), read.rejects, read.file_format)


#: one CSV field on one line: unquoted (no quote, comma or line break), or quoted with its quotes
#: doubled inside (RFC 4180, DuckDB's ``quote = '"', escape = '"'``) and no line break
_PLAIN_FIELD = rb'(?:[^",\n]*|"(?:[^"\n]|"")*")'


def plain_csv_table(path: Path, required: Iterable[str]) -> RawTable | None:
    """A plain CSV file read whole by polars, giving what :func:`read_file` gives, or None for any
    other file. Plain: UTF-8 (a BOM tolerated), no carriage return or NUL, header names distinct,
    non-empty and naming every required column, and every line a row of the header's number of
    fields, each unquoted or wholly quoted (:data:`_PLAIN_FIELD`) with no line break inside: then
    nothing is a reject and a row's line is its ordinal plus one. An empty or quoted empty field
    is null, as DuckDB reads it. Issue 15: a generic results file of 3,200 readings took 15 ms
    through DuckDB's reader (``read_csv`` with its rejects table, then the rows copied back in
    line order); any file that is not plain still goes there."""
    if sniff_format(path) != "csv":
        return None
    data = path.read_bytes()
    if not data or b"\r" in data or b"\x00" in data or b"\n\n" in data:
        return None
    try:  # UTF-8 throughout (what foreign_encoding accepts, without reading the file again)
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    header = _csv_header(path)
    lowered = [c.strip().lower() for c in header]
    if (not header or any(not c for c in lowered) or len(set(lowered)) != len(lowered)
            or any(c not in lowered for c in required)):
        return None
    line = _PLAIN_FIELD + rb"(?:," + _PLAIN_FIELD + rb"){" + str(len(header) - 1).encode() + rb"}"
    if re.fullmatch(line + rb"(?:\n" + line + rb")*\n?", data.removeprefix(b"\xef\xbb\xbf")) is None:
        return None
    try:
        frame = pl.read_csv(data, has_header=True, infer_schema=False, encoding="utf8")
    except pl.exceptions.PolarsError:
        return None
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if frame.height != lines - 1 or frame.width != len(header):
        return None
    frame = frame.rename(dict(zip(frame.columns, lowered))).with_columns(
        pl.when(pl.all().str.len_bytes() > 0).then(pl.all()).name.keep(),
        pl.int_range(2, frame.height + 2, dtype=pl.Int64).alias(LINE))
    return RawTable(frame, _empty_rejects(), "csv")


@dataclass(frozen=True)
class RawTable:
    frame: pl.DataFrame
    rejects: pl.DataFrame
    file_format: str

    @property
    def rows_read(self) -> int:
        return self.frame.height + self.rejects.height


def _lowered(label: str, columns: list[str]) -> list[str]:
    lowered = [c.strip().lower() for c in columns]
    twice = sorted({c for c in lowered if lowered.count(c) > 1})
    if twice:
        raise RefusedFile(f"{label}: column named twice (names are case-insensitive): {', '.join(twice)}")
    return lowered


def _table_chunks(con: duckdb.DuckDBPyConnection, table: str, rows: int, columns: list[str], lowered: list[str],
                  line_of: Callable[[pl.Series], pl.Series] | None) -> Callable[[], Iterator[pl.DataFrame]]:
    select = ", ".join(f'"{c}" AS "{n}"' for c, n in zip(columns, lowered))
    if line_of is None:
        select += f", {LINE}"

    def chunks() -> Iterator[pl.DataFrame]:
        for start in range(0, max(rows, 1), CHUNK_ROWS):
            frame = pl.from_arrow(con.sql(
                f"SELECT rowid + 1 AS __ord, {select} FROM {table}"
                f" WHERE rowid >= {start} AND rowid < {start + CHUNK_ROWS} ORDER BY rowid").to_arrow_table())
            assert isinstance(frame, pl.DataFrame)
            if line_of is not None:
                frame = frame.with_columns(line_of(frame["__ord"]).alias(LINE))
            yield frame.drop("__ord")

    return chunks


def _read_csv(con: duckdb.DuckDBPyConnection, path: Path, label: str, table: str) -> ReadFile:
    _lowered(label, _csv_header(path))
    try:
        # the statement's one row is the rows it stored (no count afterwards: issue 15, a file's fixed cost)
        rows = int(con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_csv(?, header = true, all_varchar = true,"
            " delim = ',', quote = '\"', escape = '\"', store_rejects = true,"
            f" rejects_table = '{table}_rejects', rejects_scan = '{table}_scans', null_padding = false,"
            f" max_line_size = {MAX_LINE_BYTES})",
            [str(path)],
        ).fetchall()[0][0])
        physical = _physical_lines(path)
        # every line the header or a stored row: nothing was rejected, nothing to look up
        rejects = _NO_CSV_REJECTS if physical == 1 + rows else pl.from_arrow(
            con.sql(
                f"SELECT line::BIGINT AS {LINE}, column_name::VARCHAR AS column, error_type::VARCHAR AS error_type,"
                f" csv_line AS raw FROM {table}_rejects ORDER BY line"
            ).to_arrow_table()
        )
    except duckdb.Error as exc:
        raise RefusedFile(f"{label}: not readable as CSV ({_first_line(exc)})") from exc
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}_rejects; DROP TABLE IF EXISTS {table}_scans")
    assert isinstance(rejects, pl.DataFrame)
    columns = [c for c in con.sql(f"SELECT * FROM {table} LIMIT 0").columns]
    if not columns:
        raise RefusedFile(f"{label}: no header row")
    lowered = _lowered(label, columns)
    line_of = _good_row_lines(path, rows, rejects.get_column(LINE), physical)
    rejects = rejects.group_by(LINE, maintain_order=True).agg(
        pl.col("column").first(),
        pl.format("unreadable row: {}", pl.col("error_type").first().str.to_lowercase()).alias("reason"),
        pl.col("raw").first(),
    )
    return ReadFile("csv", rejects.cast(REJECT_SCHEMA), rows, lowered,
                    _table_chunks(con, table, rows, columns, lowered, line_of))


def _read_parquet(path: Path, label: str) -> ReadFile:
    try:
        parquet = pq.ParquetFile(path)
        columns = list(parquet.schema_arrow.names)
        rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise RefusedFile(f"{label}: not readable as Parquet ({_first_line(exc)})") from exc
    lowered = _lowered(label, columns)

    def chunks() -> Iterator[pl.DataFrame]:
        start = 0
        try:
            batches = list(parquet.iter_batches(batch_size=CHUNK_ROWS)) if rows <= CHUNK_ROWS else None
            for batch in batches if batches is not None else parquet.iter_batches(batch_size=CHUNK_ROWS):
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                frame = frame.with_columns(_as_text(frame.schema)).rename(dict(zip(columns, lowered)))
                yield frame.with_columns(pl.int_range(start + 1, start + 1 + frame.height, dtype=pl.Int64).alias(LINE))
                start += frame.height
        except (pa.ArrowException, OSError) as exc:
            raise RefusedFile(f"{label}: not readable as Parquet ({_first_line(exc)})") from exc

    if rows <= CHUNK_ROWS:  # a small file is read at once: an unreadable one is refused before any row is kept
        frames = list(chunks())
        return ReadFile("parquet", _empty_rejects(), rows, lowered, lambda: iter(frames))
    return ReadFile("parquet", _empty_rejects(), rows, lowered, chunks)


def _read_jsonl(con: duckdb.DuckDBPyConnection, path: Path, label: str, table: str) -> ReadFile:
    is_object = "CASE WHEN json_valid(j) THEN json_type(j) = 'OBJECT' ELSE false END"
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table}_lines AS SELECT row_number() OVER () AS line, j FROM read_csv(?,"
            " header = false, columns = {'j': 'VARCHAR'}, delim = '\x1e', quote = '', escape = '', auto_detect = false,"
            f" strict_mode = false, max_line_size = {MAX_LINE_BYTES})",
            [str(path)],
        )
        keys = [r[0] for r in con.sql(
            f"SELECT DISTINCT unnest(json_keys(j)) FROM {table}_lines WHERE {is_object} ORDER BY 1").fetchall()]
        if not keys:
            raise RefusedFile(f"{label}: no JSON object lines")
        columns = [k.replace(chr(34), '') for k in keys]
        lowered = _lowered(label, columns)
        select = ", ".join(f"json_extract_string(j, ?) AS \"{c}\"" for c in columns)
        paths = ['$."' + k.replace('"', '\\"') + '"' for k in keys]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {select}, line::BIGINT AS {LINE}"
                    f" FROM {table}_lines WHERE {is_object} ORDER BY line", paths)
        bad = con.sql(
            f"SELECT line::BIGINT AS {LINE}, NULL::VARCHAR AS column, 'unreadable row: not a JSON object'"
            f" AS reason, j AS raw FROM {table}_lines WHERE trim(coalesce(j, '')) <> '' AND NOT {is_object} ORDER BY line"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise RefusedFile(f"{label}: not readable as JSON Lines ({_first_line(exc)})") from exc
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}_lines")
    rejects = pl.from_arrow(bad)
    assert isinstance(rejects, pl.DataFrame)
    rows = int(con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    return ReadFile("jsonl", rejects.cast(REJECT_SCHEMA), rows, lowered,
                    _table_chunks(con, table, rows, columns, lowered, None))

def _empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle), [])


#: the rejects of a CSV file with none (:func:`_read_csv` does not look when every line is a row)
_NO_CSV_REJECTS = pl.DataFrame(schema={LINE: pl.Int64, "column": pl.Utf8, "error_type": pl.Utf8, "raw": pl.Utf8})


def _physical_lines(path: Path) -> int:
    """The lines of a file (a last line without its line break counts)."""
    newlines, last = 0, b"\n"
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    return newlines + (0 if last == b"\n" else 1)


def _good_row_lines(path: Path, good_rows: int, reject_lines: pl.Series,
                    physical: int) -> Callable[[pl.Series], pl.Series]:
    """A function from good-row ordinals (1-based) to their physical CSV lines (``physical``: the
    file's :func:`_physical_lines`).

    When every line is one record (no blank lines, no quoted line breaks: the usual case), a good
    row's line is its ordinal plus the header plus the rejected lines before it. Otherwise the
    record start lines are counted once with the csv module (rare, malformed files only).
    """
    reject_lines = reject_lines.unique().sort()
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


def _first_line(exc: BaseException) -> str:
    """The error's first line, cut short, with digit runs and non-ASCII text masked: a reader's
    error may quote a row, and rows hold personal data."""
    text = str(exc).strip().splitlines()
    line = text[0][:160] if text else type(exc).__name__
    line = re.sub(r"\d{4,}", "****", line)
    return re.sub(r"[^\x00-\x7f]+", "*", line)
