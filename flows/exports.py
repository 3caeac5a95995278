"""The ``export-results`` flow (``tubetrail export results --since T --out DIR``, deployment
``export-results``): the final individual results for the health-code platform, exactly once.

Under the warehouse write slot (concurrent exports serialise: two runs of one ``since`` make one
export) the flow finds the export recorded for ``since``, or records a new one with its rows in
one transaction (``warehouse.exports.find_or_record_export``, the rule in ``reporting.exports``);
then, without the warehouse, it writes the files from the recorded rows (temporary name, fsync,
rename). A crash after the commit leaves the export recorded and its file unwritten: the re-run
with the same ``since`` writes it, the same bytes. ``since`` None: where the recorded exports
end (the previous export's ``until``).

Parameters, run name, logs and the ``export-results`` artifact carry times, counts and the file
name only: the files hold ID numbers and names, for the platform alone."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from flows.limits import ensure_concurrency_limits, warehouse_session
from reporting.exports import RESULTS, counts_by_result, export_table_rows, write_export_files
from warehouse.exports import find_or_record_export


def _run_name() -> str:
    since = flow_run.parameters.get("since")
    if since is None:
        return "export results after the last export"
    text = since.isoformat(timespec="seconds") if isinstance(since, datetime) else str(since)
    return f"export results since {text}"


@flow(name="export-results", flow_run_name=_run_name)
def export_results(out: str, since: datetime | None = None, config_path: str | None = None,
                   warehouse: str | None = None) -> dict:
    session = warehouse_session(config_path, warehouse)
    cfg = session.cfg
    logger = get_run_logger()
    ensure_concurrency_limits(cfg)
    with session.write() as con:
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
        table=export_table_rows(export.export_id if export else None, csv.name, made.since, made.until, counts,
                                cfg.city.timezone),
        description=f"Results for the health-code platform: {label}, {how}; counts only",
    )
    logger.info("%s (%s): %s in %s and its Parquet twin; next export since %s", label, how,
                ", ".join(f"{counts[r]['rows']} {r}" for r in RESULTS), csv.name,
                made.next_since.astimezone(local).isoformat())
    return {"export_id": export.export_id if export else None, "created": made.created, "rows": made.rows.height,
            "since": made.since.astimezone(local).isoformat(), "until": made.until.astimezone(local).isoformat(),
            "next_since": made.next_since.astimezone(local).isoformat(), "counts": counts,
            "csv": str(csv), "parquet": str(parquet), "matches_ledger": made.matches_ledger}
