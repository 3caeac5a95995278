"""The ``export-results`` flow (``tubetrail export results --since T --out DIR``, deployment
``export-results``): the final individual results for the health-code platform, exactly once.

Under the warehouse write slot (concurrent exports serialise: two runs of one ``since`` make one
export) the flow finds the export recorded for ``since``, or records a new one with its rows in
one transaction (``warehouse.writer.record_result_export``, the rule in ``reporting.exports``);
then, without the warehouse, it writes the files from the recorded rows (temporary name, fsync,
rename). A crash after the commit leaves the export recorded and its file unwritten: the re-run
with the same ``since`` writes it, the same bytes. ``since`` None: where the recorded exports
end (the previous export's ``until``).

Parameters, run name, logs and the ``export-results`` artifact carry times, counts and the file
name only: the files hold ID numbers and names, for the platform alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from flows.limits import ensure_concurrency_limits, warehouse_write_guard
from reporting.exports import (
    NEW_RESULTS_SQL,
    RESULTS,
    ExportFiles,
    counts_by_result,
    define_export_views,
    export_stem,
    export_until,
    previous_until,
    recorded_rows,
    render_export,
    write_export_files,
)
from kernel.config import Config, load_config
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_configured
from warehouse.writer import ResultExport, find_result_export, record_result_export


class NoEarlierExport(ValueError):
    """``since`` was left out and no export has been recorded yet."""


def _run_name() -> str:
    since = flow_run.parameters.get("since")
    if since is None:
        return "export results after the last export"
    text = since.isoformat(timespec="seconds") if isinstance(since, datetime) else str(since)
    return f"export results since {text}"


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


@flow(name="export-results", flow_run_name=_run_name)
def export_results(out: str, since: datetime | None = None, config_path: str | None = None,
                   warehouse: str | None = None) -> dict:
    cfg = load_config(config_path).with_warehouse(warehouse)
    logger = get_run_logger()
    ensure_concurrency_limits(cfg)
    with warehouse_write_guard(cfg)(), open_configured(cfg.warehouse, id_hash_key()) as con:
        made = find_or_record_export(con, cfg, since, str(flow_run.get_id()))
    if not made.matches_ledger:
        logger.warning("export %d: the files written now differ from the content recorded when it was made "
                       "(another version of the file writer?); its rows are the recorded ones", made.export.export_id)
    csv, parquet = write_export_files(made.files, Path(out))
    counts = counts_by_result(made.rows, made.since)
    local = ZoneInfo(cfg.city.timezone)
    export = made.export
    label = f"export {export.export_id}" if export is not None else "no export (nothing new)"
    how = "recorded now" if made.created else "recorded before, written again" if export else "nothing recorded"
    create_table_artifact(
        key="export-results",
        table=[{"export": export.export_id if export else "-", "file": csv.name,
                "since": made.since.astimezone(local).isoformat(), "until": made.until.astimezone(local).isoformat(),
                "result": r, "rows": counts[r]["rows"], "amending an earlier export": counts[r]["amending"],
                "decided before since (late or amended)": counts[r]["decided_before_since"]} for r in RESULTS],
        description=f"Results for the health-code platform: {label}, {how}; counts only",
    )
    logger.info("%s (%s): %s in %s and its Parquet twin; next export since %s", label, how,
                ", ".join(f"{counts[r]['rows']} {r}" for r in RESULTS), csv.name,
                made.next_since.astimezone(local).isoformat())
    return {"export_id": export.export_id if export else None, "created": made.created, "rows": made.rows.height,
            "since": made.since.astimezone(local).isoformat(), "until": made.until.astimezone(local).isoformat(),
            "next_since": made.next_since.astimezone(local).isoformat(), "counts": counts,
            "csv": str(csv), "parquet": str(parquet), "matches_ledger": made.matches_ledger}
