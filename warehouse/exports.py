"""The export ledger's one entry point for the ``export-results`` flow (``flows.exports``):
:func:`find_or_record_export` finds the export recorded for a ``since`` or records a new one in
one transaction (``warehouse.writer.record_result_export``; the rule, ``NEW_RESULTS_SQL``, and
the files are ``reporting.exports``'s), and hands back its rows as recorded with its files
rendered from them. The caller holds the writer slot; writing the files is the caller's, after
the session (a crash between leaves the export recorded, and a re-run writes the same bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import polars as pl

from kernel.config import Config
from reporting.exports import (
    NEW_RESULTS_SQL,
    ExportFiles,
    define_export_views,
    export_stem,
    export_until,
    previous_until,
    recorded_rows,
    render_export,
)
from warehouse.views import define_views
from warehouse.writer import ResultExport, find_result_export, record_result_export


class NoEarlierExport(ValueError):
    """``since`` was left out and no export has been recorded yet."""


@dataclass(frozen=True)
class Export:
    """What one run found or recorded: the export (None: nothing new, nothing recorded), its rows
    as recorded, its files rendered from them, and whether this run recorded it."""

    since: datetime
    until: datetime
    export: ResultExport | None
    rows: pl.DataFrame
    files: ExportFiles
    created: bool

    @property
    def next_since(self) -> datetime:
        """The ``since`` of the next export: this one's ``until``; nothing recorded, ``since``
        again (a result decided in the window checked, arriving late, must not be skipped)."""
        return self.export.until if self.export is not None else self.since

    @property
    def matches_ledger(self) -> bool:
        return self.export is None or (self.files.csv_sha256, self.files.parquet_sha256) == (
            self.export.content_sha256, self.export.parquet_sha256)


def find_or_record_export(con, cfg: Config, since: datetime | None, run_id: str | None) -> Export:
    """The export recorded for ``since`` (None: where the recorded exports end; without offset:
    city time), else a new one recorded now, with its files rendered from its recorded rows. The
    caller holds the write slot."""
    timezone = cfg.city.timezone
    if since is not None and since.tzinfo is None:  # a time without offset is city time (DESIGN §4)
        since = since.replace(tzinfo=ZoneInfo(timezone))
    if since is None:
        since = previous_until(con)
        if since is None:
            raise NoEarlierExport("no export has been recorded yet: give the time to export from (since)")
    export = find_result_export(con, since)
    if export is not None:
        rows = recorded_rows(con, export.export_id)
        return Export(since, export.until, export, rows,
                      render_export(rows, export.file_name.removesuffix(".csv"), timezone), False)
    define_views(con, cfg, snapshot=True)
    define_export_views(con)
    until = export_until(con, since)
    rendered: dict[int, ExportFiles] = {}

    def render(con, export_id: int) -> tuple[str, str, str]:
        files = render_export(recorded_rows(con, export_id), export_stem(since, until, timezone), timezone)
        rendered[export_id] = files
        return f"{files.stem}.csv", files.csv_sha256, files.parquet_sha256

    export = record_result_export(con, since=since, until=until, select_sql=NEW_RESULTS_SQL, render=render,
                                  run_id=run_id)
    if export is None:  # nothing to deliver: an empty file, nothing recorded
        rows = recorded_rows(con, 0)
        return Export(since, until, None, rows, render_export(rows, export_stem(since, until, timezone), timezone),
                      False)
    rows = recorded_rows(con, export.export_id)
    files = rendered.get(export.export_id) or render_export(rows, export.file_name.removesuffix(".csv"), timezone)
    return Export(since, export.until, export, rows, files, export.export_id in rendered)


