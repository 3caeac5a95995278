"""Taking files: a batch of files of one kind in one warehouse session and one transaction.

:func:`take_batch` is a batch's whole path: hashes → one ledger look-up → each file read
straight into DuckDB (a temporary table of the session) → the feed's row rules once over the
batch's rows (``_line`` carries each row's file and line) → the checked rows staged in the
batch's own in-memory ``stage`` database (spilling to its staging folder below the warehouse's,
0700, swept after a kill) →
the last line per unique key within each file → the views defined once → the stage rule and
warning once over the batch → one transaction that takes every file (``warehouse.writer.record_batch``)
→ one checkpoint when the session closes (merging the tables' partly filled tail row groups every
fourth batch: ``warehouse.writer.note_vacuum_debt``). Each file keeps its own ledger entry, counts,
quarantine lines and refusal; a refused file never blocks the others. :func:`take_file` is a
batch of one; :func:`plan_batches` cuts a stretch of one kind into batches (``[ingest]`` config).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from ingest.discover import InboxFile, export_written_at, is_hidden, parsed_export
from ingest.feeds import FEEDS, Feed
from kernel.tables import (CHUNK_ROWS, REJECT_SCHEMA, RefusedFile, content_hash, read_file, staging_folder,
                         staging_in, staging_root_of)
from lab.instruments import UnrecognisedExport
from reporting.alerts import file_refused_alert
from kernel.config import Config
from kernel.rules import LINE, WARNING_PREFIX
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_configured
from warehouse.session import WriteGuard
from warehouse.writer import (
    FILE_LINE_SHIFT,
    LINE_MASK,
    STAGE,
    FileOutcome,
    StagedFile,
    apply_stage_rule,
    attach_stage,
    detach_stage,
    flag_staged,
    ledger_entries,
    record_batch,
    staged_file_of,
)


#: the outcome's message for a hidden file (``ingest.discover.is_hidden``), reported, not taken
HIDDEN_FILE = "{label}: hidden file (a name starting with '.'), not taken: a partial upload? rename it when complete"


def plan_batches(files: Sequence[InboxFile], cfg: Config) -> list[list[InboxFile]]:
    """``files`` (in discover's order) cut into batches: consecutive files of one kind, at most
    ``cfg.ingest.batch_files`` files (``alert_batch_files`` for a feed whose facts raise alerts:
    results) and ``cfg.ingest.batch_bytes`` bytes (a file larger than that is a batch alone)."""
    batches: list[list[InboxFile]] = []
    size = 0
    for f in files:
        try:
            n = f.path.stat().st_size
        except OSError:
            n = 0
        current = batches[-1] if batches else None
        most = cfg.ingest.alert_batch_files if FEEDS[f.kind].announce is not None else cfg.ingest.batch_files
        if (current is None or current[0].kind != f.kind or len(current) >= most
                or size + n > cfg.ingest.batch_bytes):
            batches.append([f])
            size = n
        else:
            current.append(f)
            size += n
    return batches


def take_file(file: InboxFile, cfg: Config, *, run_id: str | None = None,
              write_guard: WriteGuard = nullcontext, as_of: datetime | None = None) -> FileOutcome:
    """One file: a batch of one."""
    return take_batch([file], cfg, run_id=run_id, write_guard=write_guard, as_of=as_of)[0]


@dataclass
class _File:
    index: int
    file: InboxFile
    digest: str
    size: int
    file_format: str = ""
    rows_read: int = 0
    refusal: str | None = None
    warnings: dict[str, int] = field(default_factory=dict)


def take_batch(files: Sequence[InboxFile], cfg: Config, *, run_id: str | None = None,
               write_guard: WriteGuard = nullcontext, as_of: datetime | None = None) -> list[FileOutcome]:
    """Take files of one kind, in their order, as one batch (see the module's text); returns
    one outcome per file, in the same order. Idempotent: a file the ledger holds is skipped, so
    a retry re-runs the batch safely. The write guard is held once, for the whole batch.

    ``as_of`` judges the rules a row's own time cannot (a register row has none: a birth date
    after its day is not real); ``None``: the time of the take, read here once, the one place
    ingest reads the clock (``tubetrail ingest --as-of`` fixes it for a replay)."""
    if not files:
        return []
    as_of = as_of or datetime.now(timezone.utc)
    kinds = {f.kind for f in files}
    if len(kinds) != 1:
        raise ValueError(f"a batch holds files of one kind, not {', '.join(sorted(kinds))}")
    feed = FEEDS[files[0].kind]
    outcomes: dict[int, FileOutcome] = {}
    entries: list[_File] = []
    for i, f in enumerate(files):
        if is_hidden(f.label):
            outcomes[i] = FileOutcome(f.kind, f.label, "", "skipped", message=HIDDEN_FILE.format(label=f.label))
        else:
            entries.append(_File(i, f, content_hash(Path(f.path)), Path(f.path).stat().st_size))
    if entries:
        root = staging_root_of(cfg.warehouse.path)
        # the staging folder outlives the session: DuckDB's spill files there close with it
        with staging_folder(root) as folder, staging_in(root), write_guard(), \
                open_configured(cfg.warehouse, id_hash_key()) as con:
            seen = ledger_entries(con, [e.digest for e in entries])
            fresh: list[_File] = []
            first: dict[str, _File] = {}
            twins: list[tuple[_File, _File]] = []
            for e in entries:
                if e.digest in seen:
                    status, name = seen[e.digest][:2]
                    outcomes[e.index] = FileOutcome(e.file.kind, e.file.label, e.digest, "skipped",
                                                    message=f"seen before as {name} ({status})")
                elif e.digest in first:  # the same content twice in one batch: taken once
                    twins.append((e, first[e.digest]))
                else:
                    first[e.digest] = e
                    fresh.append(e)
            if fresh:
                con.execute(f"SET temp_directory = '{folder / 'spill'}'")
                attach_stage(con)
                try:
                    taken = _take_staged(con, cfg, feed, fresh, run_id, as_of)
                finally:
                    detach_stage(con)
                for e, outcome in zip(fresh, taken):
                    outcomes[e.index] = outcome
            for e, earlier in twins:
                status = outcomes[earlier.index].status
                outcomes[e.index] = FileOutcome(e.file.kind, e.file.label, e.digest, "skipped",
                                                message=f"seen before as {earlier.file.label} ({status})")
    return [outcomes[i] for i in range(len(files))]


def _take_staged(con: duckdb.DuckDBPyConnection, cfg: Config, feed: Feed, fresh: list[_File],
                 run_id: str | None, as_of: datetime) -> list[FileOutcome]:
    _stage(con, cfg, feed, fresh, as_of)
    if any(e.refusal is None for e in fresh):
        _keep_last_per_key(con, feed.unique_key)
        views = feed.needs_views(con)
        if views:
            define_views(con, cfg)
        if feed.stage_rule is not None:  # the rule's full path needs the views (its quick one does not)
            apply_stage_rule(con, feed.stage_rule,
                             before_full_rule=None if views else (lambda: define_views(con, cfg)))
        if feed.stage_warning is not None:
            flag_staged(con, feed.stage_warning)
        if feed.prepare is not None:
            feed.prepare(con)
        _count_warnings(con, fresh)
    return record_batch(
        con,
        [StagedFile(e.index, e.digest, e.file.kind, e.file.label, e.size, e.file_format, e.rows_read, e.warnings,
                    e.refusal,
                    () if e.refusal is None else [file_refused_alert(
                        content_hash=e.digest, kind=e.file.kind, file_name=e.file.label, size_bytes=e.size,
                        received_at=export_written_at(Path(e.file.path)))])
         for e in fresh],
        apply=feed.apply,
        run_id=run_id,
        settle=feed.settle,
        announce=None if feed.announce is None else (lambda c, hashes: feed.announce(c, cfg, hashes)),
        apart=None if feed.apart is None else (lambda c: feed.apart(c, cfg)),
        appends=feed.appends,
    )


# --- reading and checking: the batch's rows into stage.accepted / stage.quarantined ---------------------

class _Checker:
    """Collects text frames of the batch's files (``_line`` carrying the file) and runs the
    feed's rules once per ``CHUNK_ROWS`` rows (an export's once per file), appending the checked
    rows to the stage's tables together, once per ``CHUNK_ROWS`` rows and at the end."""

    def __init__(self, con: duckdb.DuckDBPyConnection, cfg: Config, feed: Feed, as_of: datetime) -> None:
        self.con, self.cfg, self.feed, self.as_of = con, cfg, feed, as_of
        self.pending: list[tuple[int, pl.DataFrame]] = []
        self.rows = 0
        self.made: set[str] = set()
        # checked rows not yet in the stage, per table: appended together (one insert per table
        # for up to CHUNK_ROWS rows, not one per file: issue 15, ≈ 9 ms a results file)
        self.checked: dict[str, list[pl.DataFrame]] = {}
        self.checked_rows = 0

    def add(self, index: int, frame: pl.DataFrame, label: str) -> None:
        frame = frame.with_columns((pl.col(LINE).cast(pl.Int64) + (index << FILE_LINE_SHIFT)).alias(LINE))
        if self.feed.export:  # the check reads the file's label: one file at a time
            self._check([(index, frame)], label)
            return
        self.pending.append((index, frame))
        self.rows += frame.height
        if self.rows >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Check what is pending and write every checked row to the stage."""
        if self.pending:
            self._check(self.pending, "")
        self.pending, self.rows = [], 0
        self._write()

    def drop(self, index: int) -> None:
        """Forget a file refused halfway (a damaged row group of a large Parquet file)."""
        self.pending = [(i, f) for i, f in self.pending if i != index]
        self.rows = sum(f.height for _, f in self.pending)
        other = pl.col(LINE) // (1 << FILE_LINE_SHIFT) != index
        self.checked = {table: [f.filter(other) for f in frames] for table, frames in self.checked.items()}
        self.checked_rows = sum(f.height for frames in self.checked.values() for f in frames)
        for table in self.made:
            self.con.execute(f"DELETE FROM {STAGE}.{table} WHERE {staged_file_of()} = {int(index)}")

    def quarantine(self, frame: pl.DataFrame) -> None:
        """Rows quarantined before the rules (unreadable rows): ``_line``, column, reason, raw."""
        self._append("quarantined", frame.select(LINE, "column", "reason", "raw").cast(REJECT_SCHEMA))

    def _check(self, parts: list[tuple[int, pl.DataFrame]], label: str) -> None:
        batch = parts[0][1] if len(parts) == 1 else pl.concat([f for _, f in parts], how="diagonal_relaxed")
        checked = self.feed.check(batch, self.cfg, label, self.as_of)
        self._append("accepted", checked.accepted)
        if checked.quarantined.height:
            # the raw text of a quarantined row as its own file had it (its own columns only)
            lines = checked.quarantined.select(LINE)
            raws = []
            for _, frame in parts:
                mine = frame.join(lines, on=LINE, how="semi")
                if mine.height:
                    data = [c for c in frame.columns if c != LINE]
                    raws.append(mine.select(LINE, pl.struct(data).struct.json_encode().alias("raw")))
            raw = pl.concat(raws)
            self._append("quarantined", checked.quarantined.join(raw, on=LINE, how="left")
                         .select(LINE, "column", "reason", "raw").cast(REJECT_SCHEMA))
        elif "quarantined" not in self.made:
            self._append("quarantined", pl.DataFrame(schema=REJECT_SCHEMA))

    def _append(self, table: str, frame: pl.DataFrame) -> None:
        if not frame.height and (table in self.made or table in self.checked):
            return  # nothing to add (most files quarantine no row)
        self.checked.setdefault(table, []).append(frame)
        self.checked_rows += frame.height
        if self.checked_rows >= CHUNK_ROWS:
            self._write()

    def _write(self) -> None:
        for table, frames in self.checked.items():
            frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
            if table in self.made and not frame.height:
                continue
            self.con.register("ingest_arrow", frame.to_arrow())
            try:
                if table in self.made:
                    self.con.execute(f"INSERT INTO {STAGE}.{table} BY NAME SELECT * FROM ingest_arrow")
                else:
                    self.con.execute(f"CREATE TABLE {STAGE}.{table} AS SELECT * FROM ingest_arrow")
                    self.made.add(table)
            finally:
                self.con.unregister("ingest_arrow")
        self.checked, self.checked_rows = {}, 0


def _stage(con: duckdb.DuckDBPyConnection, cfg: Config, feed: Feed, fresh: list[_File], as_of: datetime) -> None:
    checker = _Checker(con, cfg, feed, as_of)
    for e in fresh:
        path, label = Path(e.file.path), e.file.label
        try:
            if feed.export:
                records, rejects, e.file_format = _read_export(path, label, cfg.city.timezone)
                e.rows_read = records.height + rejects.height
                checker.add(e.index, records, label)
                checker.quarantine(_shift(rejects, e.index))
                continue
            with read_file(con, path, feed.required, label) as read:
                e.file_format = read.file_format
                e.rows_read = read.rows_read
                empty = True
                for chunk in read.chunks():
                    checker.add(e.index, chunk, label)
                    empty = False
                if empty:  # no rows: the rules still give the table its columns
                    checker.add(e.index, pl.DataFrame(schema={**{c: pl.Utf8 for c in read.columns}, LINE: pl.Int64}),
                                label)
                checker.quarantine(_shift(read.rejects, e.index))
        except RefusedFile as refusal:
            checker.drop(e.index)
            e.refusal, e.rows_read = str(refusal), 0
    checker.flush()


def _shift(rejects: pl.DataFrame, index: int) -> pl.DataFrame:
    return rejects.with_columns((pl.col(LINE).cast(pl.Int64) + (index << FILE_LINE_SHIFT)).alias(LINE))


def _read_export(path: Path, label: str, timezone: str) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """An instrument export, read by its parser (once: discovery may have parsed it already);
    a reading without run time takes the export's write time (CFX Maestro exports carry none)."""
    try:
        parsed = parsed_export(path, timezone)
    except UnrecognisedExport as exc:
        raise RefusedFile(str(exc) if str(exc).startswith(label) else f"{label}: {exc}") from exc
    written = pl.lit(export_written_at(path)).dt.convert_time_zone("UTC")
    records = parsed.records.rename({"line": LINE}).with_columns(
        pl.lit(parsed.format).alias("source_format"),
        pl.col("finished_at").fill_null(written.cast(parsed.records.schema["finished_at"])))
    return records, parsed.rejects.rename({"line": LINE}), parsed.format


def _keep_last_per_key(con: duckdb.DuckDBPyConnection, unique_key: Sequence[str] | None) -> None:
    """Within each file the last line per ``unique_key`` wins: earlier exact repeats are
    duplicates, earlier different rows are superseded (quarantined, naming the line that won)."""
    if not unique_key:
        return
    columns = con.sql(f"SELECT * FROM {STAGE}.accepted LIMIT 0").columns
    data = [c for c in columns if c != LINE and not c.startswith(WARNING_PREFIX)]
    file = staged_file_of(f"a.{LINE}")
    key = ", ".join(f'"{k}"' for k in unique_key)
    on = " AND ".join([f"{file} = d.__file", *(f'a."{k}" IS NOT DISTINCT FROM d."{k}"' for k in unique_key)])
    packed = ", ".join(f'"{c}" := a."{c}"' for c in data)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE repeats AS
        WITH d AS (SELECT {staged_file_of()} AS __file, {key} FROM {STAGE}.accepted GROUP BY ALL HAVING count(*) > 1),
        r AS (SELECT a.{LINE}, to_json(struct_pack({packed})) AS raw,
                     hash(struct_pack({packed})) AS h,
                     max(a.{LINE}) OVER (PARTITION BY {file}, {', '.join(f'a."{k}"' for k in unique_key)}) AS last_line
              FROM {STAGE}.accepted a SEMI JOIN d ON {on})
        SELECT r.*, l.h AS last_h FROM r JOIN r l ON l.{LINE} = r.last_line WHERE r.{LINE} <> r.last_line"""
    )
    con.execute(
        f"""INSERT INTO {STAGE}.quarantined SELECT {LINE}, '{unique_key[-1]}',
               CASE WHEN h = last_h THEN format('duplicate row (same as line {{}})', last_line & {LINE_MASK})
                    ELSE format('conflicting duplicate (superseded by line {{}})', last_line & {LINE_MASK}) END, raw
            FROM repeats"""
    )
    con.execute(f"DELETE FROM {STAGE}.accepted WHERE {LINE} IN (SELECT {LINE} FROM repeats)")
    con.execute("DROP TABLE repeats")


def _count_warnings(con: duckdb.DuckDBPyConnection, fresh: list[_File]) -> None:
    """Each file's warning counts over its rows kept (warning columns ``warning: <name>``)."""
    columns = con.sql(f"SELECT * FROM {STAGE}.accepted LIMIT 0").columns
    warnings = [c for c in columns if c.startswith(WARNING_PREFIX)]
    if not warnings:
        return
    by_index = {e.index: e for e in fresh}
    for row in con.sql(
            f"SELECT {staged_file_of()}, " + ", ".join(f'coalesce(sum("{w}"::INTEGER), 0)' for w in warnings)
            + f" FROM {STAGE}.accepted GROUP BY ALL").fetchall():
        e = by_index[row[0]]
        e.warnings = {w.removeprefix(WARNING_PREFIX): int(n) for w, n in zip(warnings, row[1:]) if n}
