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

import csv
import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tubetrail.rules import LINE

#: feed kinds in dependency order: reference data, the register, then the chain
KINDS = ("sites", "labs", "zones", "register", "scans", "manifests", "receipts", "results")

REJECT_SCHEMA = {LINE: pl.Int64, "column": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8}
_counter = itertools.count()


class RefusedFile(Exception):
    """A whole file is refused; the message names the file and the reason."""


@dataclass(frozen=True)
class InboxFile:
    kind: str
    path: Path
    #: the file's path below the inbox, e.g. ``register/register.csv`` (feed names, no personal data)
    label: str


@dataclass(frozen=True)
class RawTable:
    """A file's rows as text: ``frame`` (columns lower-case, plus ``_line``) and ``rejects``."""

    frame: pl.DataFrame
    rejects: pl.DataFrame
    file_format: str

    @property
    def rows_read(self) -> int:
        return self.frame.height + self.rejects.height


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def discover(inbox: Path, kinds: Sequence[str] = KINDS) -> list[InboxFile]:
    """Every file under the inbox's kind folders, in dependency order, then by path."""
    found: list[InboxFile] = []
    for kind in kinds:
        folder = inbox / kind
        if not folder.is_dir():
            continue
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        found.extend(InboxFile(kind, p, p.relative_to(inbox).as_posix()) for p in paths)
    return found


def sniff_format(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"{"):
        return "jsonl"
    return "csv"


def read_table(path: Path, required: Iterable[str], label: str | None = None) -> RawTable:
    """Read one inbox file into text columns; refuse it if unreadable or missing a column."""
    label = label or str(path)
    if path.stat().st_size == 0:
        raise RefusedFile(f"{label}: empty file")
    file_format = sniff_format(path)
    reader = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl}[file_format]
    frame, rejects = reader(path, label)
    columns = [c.strip().lower() for c in frame.columns if c != LINE]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise RefusedFile(f"{label}: column named twice (names are case-insensitive): {', '.join(duplicates)}")
    frame = frame.rename({c: c.strip().lower() for c in frame.columns if c != LINE})
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RefusedFile(f"{label}: missing required column(s) {', '.join(missing)}")
    return RawTable(frame, rejects.cast(REJECT_SCHEMA), file_format)


def _empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle), [])


def _read_csv(path: Path, label: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    names = [n.strip().lower() for n in _csv_header(path)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RefusedFile(f"{label}: column named twice (names are case-insensitive): {', '.join(twice)}")
    con = duckdb.connect()
    n = next(_counter)
    table, scan = f"rejects_{n}", f"reject_scans_{n}"
    try:
        rel = con.sql(
            "SELECT * FROM read_csv(?, header = true, all_varchar = true, delim = ',', quote = '\"',"
            " escape = '\"', store_rejects = true, rejects_table = ?, rejects_scan = ?,"
            " null_padding = false)",
            params=[str(path), table, scan],
        )
        arrow = rel.to_arrow_table()
        rejects = pl.from_arrow(
            con.sql(
                f"SELECT line::BIGINT AS {LINE}, column_name::VARCHAR AS column, error_type::VARCHAR AS error_type,"
                f" csv_line AS raw FROM {table} ORDER BY line"
            ).to_arrow_table()
        )
    except duckdb.Error as exc:
        raise RefusedFile(f"{label}: not readable as CSV ({_first_line(exc)})") from exc
    finally:
        con.close()
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame) and isinstance(rejects, pl.DataFrame)
    if not frame.width:
        raise RefusedFile(f"{label}: no header row")
    frame = frame.with_columns(_good_row_lines(path, frame.height, rejects.get_column(LINE)).alias(LINE))
    rejects = rejects.group_by(LINE, maintain_order=True).agg(
        pl.col("column").first(),
        pl.format("unreadable row: {}", pl.col("error_type").first().str.to_lowercase()).alias("reason"),
        pl.col("raw").first(),
    )
    return frame, rejects


def _good_row_lines(path: Path, good_rows: int, reject_lines: pl.Series) -> pl.Series:
    """Physical line of each good CSV row, given the lines DuckDB rejected.

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
        ordinal = pl.int_range(1, good_rows + 1, eager=True, dtype=pl.Int64)
        return ordinal + 1 + shifted.search_sorted(ordinal, side="right").cast(pl.Int64)
    starts: list[int] = []
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        previous_end = 0
        for record in reader:
            if record:
                starts.append(previous_end + 1)
            previous_end = reader.line_num
    rejected = set(reject_lines.to_list())
    lines = [line for line in starts[1:] if line not in rejected][:good_rows]
    lines += [None] * (good_rows - len(lines))
    return pl.Series(LINE, lines, dtype=pl.Int64)


def _read_parquet(path: Path, label: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise RefusedFile(f"{label}: not readable as Parquet ({_first_line(exc)})") from exc
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(_as_text(frame.schema)).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINE)
    )
    return frame, _empty_rejects()


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


def _read_jsonl(path: Path, label: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    con = duckdb.connect()
    try:
        con.execute(
            "CREATE TABLE lines AS SELECT row_number() OVER () AS line, j FROM read_csv(?, header = false,"
            " columns = {'j': 'VARCHAR'}, delim = '\x1e', quote = '', escape = '', auto_detect = false,"
            " strict_mode = false)",
            [str(path)],
        )
        keys = [
            r[0]
            for r in con.sql(
                "SELECT DISTINCT unnest(json_keys(j)) FROM lines WHERE json_valid(j)"
                " AND CASE WHEN json_valid(j) THEN json_type(j) = 'OBJECT' ELSE false END ORDER BY 1"
            ).fetchall()
        ]
        if not keys:
            raise RefusedFile(f"{label}: no JSON object lines")
        select = ", ".join(
            f"json_extract_string(j, ?) AS \"{k.replace(chr(34), '')}\"" for k in keys
        )
        con.execute("CREATE TABLE objects AS SELECT line, j FROM lines WHERE CASE WHEN json_valid(j) THEN json_type(j) = 'OBJECT' ELSE false END")
        paths = ['$."' + k.replace('"', '\\"') + '"' for k in keys]
        good = con.sql(
            f"SELECT line::BIGINT AS {LINE}, {select} FROM objects ORDER BY line", params=paths
        ).to_arrow_table()
        bad = con.sql(
            f"SELECT line::BIGINT AS {LINE}, NULL::VARCHAR AS column, 'unreadable row: not a JSON object'"
            " AS reason, j AS raw FROM lines WHERE trim(coalesce(j, '')) <> ''"
            " AND NOT CASE WHEN json_valid(j) THEN json_type(j) = 'OBJECT' ELSE false END ORDER BY line"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise RefusedFile(f"{label}: not readable as JSON Lines ({_first_line(exc)})") from exc
    finally:
        con.close()
    frame = pl.from_arrow(good)
    rejects = pl.from_arrow(bad)
    assert isinstance(frame, pl.DataFrame) and isinstance(rejects, pl.DataFrame)
    return frame, rejects


def _first_line(exc: BaseException) -> str:
    """The error's first line, cut short, with digit runs and non-ASCII text masked: a reader's
    error may quote a row, and rows hold personal data."""
    text = str(exc).strip().splitlines()
    line = text[0][:160] if text else type(exc).__name__
    line = re.sub(r"\d{4,}", "****", line)
    return re.sub(r"[^\x00-\x7f]+", "*", line)
