"""Results for the health-code platform (健康码 / 省平台): every final individual result decided
since a time, exactly once per person, tube and result (DESIGN §6, §9).

The rule, ``final_results(as_of)`` (a table macro over the calling and status views): a person's
result that will not change without a new sample. It is ``individual_result`` of
``lab.calling`` (the rule ``person_status`` decides people by) applied to every good tube
(``good_tubes``: not refused, not lost) and its members:

* ``negative``: a member of a tube called negative, pooled or single;
* ``positive``: the person of a single tube called positive, or whose single target persisted on
  the re-run (treated as positive, DESIGN §8);
* nobody for a pool that finds virus (混阳: its people are re-sampled one by one, and their
  re-sample's call is their result), an ``invalid`` tube (a re-sample), or a call not final yet.

Decided = the call's time (``called_at``: the end of the run that made the call final).

What an export takes (:data:`NEW_RESULTS_SQL`), judged at ``until`` = the latest call time in
the warehouse (:func:`export_until`, a fact time, never the wall clock), for each person and tube
compared with what the earlier exports delivered (the ledger):

* never delivered: the final result if decided in ``(since, until]``, or inside the window of an
  earlier export (a results file that reached the inbox late: nothing is skipped when each
  export starts where the previous one ended);
* delivered, and the final result is another one now (a re-export amended the call): the new
  result, whenever decided, with the result it replaces in ``amends`` (a new (person, result)
  pair, exported once);
* delivered, and no final result any more (the call was amended to a positive pool, an invalid,
  a pending re-run; the tube refused after all): ``withdrawn``, with what it withdraws in
  ``amends``, decided at the tube's latest run. The platform must not keep a negative the lab
  took back.

The warehouse records each export and its rows in one transaction
(``warehouse.writer.record_result_export``, migration 9); the files are always written from the
recorded rows (:func:`recorded_rows`, :func:`render_export`), so re-running with the same
``since`` writes the same bytes, whatever arrived meanwhile. An export with no rows is not
recorded (it delivers nothing, and would take its ``since`` for good).

The files (``results_<since>_<until>.csv`` and its ``.parquet`` twin, times in city time):
the CSV is for the people who open it too (``reporting.people_csv``: UTF-8 BOM, formula cells
neutralised with a leading ``'``); the Parquet file keeps every value exactly as recorded and
is the one a machine should read. Both carry personal data (ID numbers, names): like the
worklists they are for an authorised recipient only, never for artifacts or logs.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from reporting.people_csv import write_people_csv
from reporting.people_csv import city_times

#: the columns of an export's files, in order
EXPORT_COLUMNS = ("round_id", "id_type", "id_number", "name", "result", "sampled_at", "called_at", "lab_id",
                  "tube_barcode", "pooled", "amends")
RESULTS = ("negative", "positive", "withdrawn")
#: the window of an export made when nothing was decided after its ``since``: see :func:`export_until`
EMPTY_WINDOW = timedelta(seconds=1)


def define_export_views(con: duckdb.DuckDBPyConnection) -> None:
    """``final_results(as_of)``. Needs :func:`warehouse.views.define_views`."""
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO final_results(as_of) AS TABLE
        WITH calls AS MATERIALIZED (
            SELECT tube_barcode, call, final, lab_id, called_at FROM tube_calls(as_of) WHERE final
        ), decided AS MATERIALIZED (
            SELECT g.round_id, g.person_key, g.tube_barcode, g.added_at AS sampled_at, g.capacity > 1 AS pooled,
                   individual_result(k.call, k.final, g.capacity) AS result, k.called_at, k.lab_id
            FROM good_tubes(as_of) g JOIN calls k USING (tube_barcode)
            WHERE individual_result(k.call, k.final, g.capacity) IS NOT NULL
        )
        SELECT d.round_id, d.person_key, tm.id_type, tm.id_number, d.result, d.sampled_at, d.called_at, d.lab_id,
               d.tube_barcode, d.pooled
        FROM decided d JOIN tube_members tm USING (round_id, tube_barcode, person_key)
        """
    )


def latest_call_time(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When the latest final call in the warehouse was made (a fact time)."""
    return con.execute("SELECT max(called_at) FROM tube_calls('infinity'::TIMESTAMPTZ) WHERE final").fetchall()[0][0]


def previous_until(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """Where the recorded exports end: the ``since`` of the next one."""
    return con.execute("SELECT max(until) FROM result_exports").fetchall()[0][0]


#: the rows of a new export (the ledger's columns but ``export_id``), parameters ``since`` and
#: ``until``; needs :func:`define_export_views`. Names come from the register, else (a person
#: outside the register) from their add scan into that tube.
NEW_RESULTS_SQL = """
    WITH f AS MATERIALIZED (
        SELECT * FROM final_results($until) WHERE called_at <= $until
    ), last AS MATERIALIZED (
        -- what was last exported for each person and tube
        SELECT * FROM result_export_rows
        QUALIFY row_number() OVER (PARTITION BY person_key, round_id, tube_barcode ORDER BY export_id DESC) = 1
    ), new AS MATERIALIZED (
        SELECT f.*, l.result AS amends
        FROM f LEFT JOIN last l USING (person_key, round_id, tube_barcode)
        WHERE CASE WHEN l.result IS NULL
                   -- decided in this window, or late: in the window of an earlier export
                   THEN f.called_at > $since
                        OR EXISTS (SELECT 1 FROM result_exports e WHERE f.called_at > e.since AND f.called_at <= e.until)
                   -- amended: another result than the one delivered, whenever decided
                   ELSE l.result <> f.result END
    ), withdrawn AS (
        -- delivered, and no final result any more (the call was amended to a positive pool, an
        -- invalid or a pending re-run, or the tube refused): withdrawn, at the tube's latest run
        SELECT l.round_id, l.person_key, l.id_type, l.id_number, l.name, 'withdrawn' AS result, l.sampled_at,
               coalesce(r.last_run, l.called_at) AS called_at, l.lab_id, l.tube_barcode, l.pooled,
               l.result AS amends
        FROM last l ANTI JOIN f USING (person_key, round_id, tube_barcode)
        LEFT JOIN (SELECT tube_barcode, max(finished_at) AS last_run FROM tube_runs
                   WHERE finished_at <= $until AND tube_barcode IN (SELECT tube_barcode FROM last)
                   GROUP BY tube_barcode) r USING (tube_barcode)
        WHERE l.result <> 'withdrawn'
    ), scanned AS (
        SELECT s.person_key, s.tube_barcode, arg_min(s.name, s.scanned_at) AS name
        FROM scans s SEMI JOIN new n ON n.person_key = s.person_key AND n.tube_barcode = s.tube_barcode
        WHERE s.event = 'add' GROUP BY ALL
    )
    SELECT n.round_id, n.person_key, n.id_type, n.id_number, coalesce(reg.name, sc.name) AS name, n.result,
           n.sampled_at, n.called_at, n.lab_id, n.tube_barcode, n.pooled, n.amends
    FROM new n LEFT JOIN register reg USING (person_key) LEFT JOIN scanned sc USING (person_key, tube_barcode)
    UNION ALL BY NAME
    SELECT * FROM withdrawn
"""


def export_until(con: duckdb.DuckDBPyConnection, since: datetime) -> datetime:
    """The end of a new export's window: the latest call time in the warehouse. When nothing
    was decided after ``since`` (a since in the future, or no new call yet), a moment after
    ``since`` (:data:`EMPTY_WINDOW`): such an export holds at most late or amended results, and
    its window must not be empty, or the next export's ``since`` (its ``until``) would be
    ``since`` again, the ``since`` it has taken for good."""
    latest = latest_call_time(con)
    return latest if latest is not None and latest > since else since + EMPTY_WINDOW


def recorded_rows(con: duckdb.DuckDBPyConnection, export_id: int) -> pl.DataFrame:
    """An export's rows as recorded, in file order (an unknown id: no rows, the same columns)."""
    return pl.from_arrow(con.sql(
        f"SELECT {', '.join(EXPORT_COLUMNS)} FROM result_export_rows WHERE export_id = $export_id"
        " ORDER BY called_at, round_id, tube_barcode, id_type, id_number",
        params={"export_id": export_id}).to_arrow_table())


def file_time(moment: datetime, timezone: str) -> str:
    """A time for a file name: city time, compact, with its offset (``20220404T060000+0800``)."""
    local = moment.astimezone(ZoneInfo(timezone))
    return local.strftime("%Y%m%dT%H%M%S") + (f".{local.microsecond:06d}" if local.microsecond else "") \
        + local.strftime("%z")


def export_stem(since: datetime, until: datetime, timezone: str) -> str:
    return f"results_{file_time(since, timezone)}_{file_time(until, timezone)}"


@dataclass(frozen=True)
class ExportFiles:
    """An export's two files, as bytes (rendered once, hashed, then written)."""

    stem: str
    csv: bytes
    parquet: bytes

    @property
    def csv_sha256(self) -> str:
        return hashlib.sha256(self.csv).hexdigest()

    @property
    def parquet_sha256(self) -> str:
        return hashlib.sha256(self.parquet).hexdigest()


def render_export(rows: pl.DataFrame, stem: str, timezone: str) -> ExportFiles:
    """The files of an export from its recorded rows: times in city time with offset; the CSV
    for people (BOM, formula cells neutralised), the Parquet twin with the values unchanged."""
    frame = city_times(rows.select(EXPORT_COLUMNS), timezone)
    csv, parquet = io.BytesIO(), io.BytesIO()
    write_people_csv(frame, csv)
    frame.write_parquet(parquet)
    return ExportFiles(stem, csv.getvalue(), parquet.getvalue())


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _write_atomically(data: bytes, path: Path) -> None:
    """Write to a hidden temporary name beside ``path``, fsync, rename, fsync the folder: a
    crash leaves the old file or the whole new one, never half of it. Temporary files of this
    name left by a killed process are removed first."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name.removesuffix(".tmp").rsplit(".", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or _process_gone(int(pid))):
            stale.unlink(missing_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_export_files(files: ExportFiles, out: Path) -> tuple[Path, Path]:
    """Write an export's files into ``out`` (created if needed): the Parquet twin first, then
    the CSV, so a CSV in place means both are whole. Returns (csv, parquet)."""
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / f"{files.stem}.csv", out / f"{files.stem}.parquet"
    _write_atomically(files.parquet, parquet)
    _write_atomically(files.csv, csv)
    return csv, parquet


def counts_by_result(rows: pl.DataFrame, since: datetime) -> dict[str, dict[str, int]]:
    """Per result: rows, rows amending an earlier export, rows decided before ``since`` (late
    or amended). Counts only: safe for artifacts and logs."""
    before = pl.col("called_at").dt.convert_time_zone("UTC") <= since.astimezone(UTC)
    return {r: {"rows": rows.filter(pl.col("result") == r).height,
                "amending": rows.filter((pl.col("result") == r) & pl.col("amends").is_not_null()).height,
                "decided_before_since": rows.filter((pl.col("result") == r) & before).height}
            for r in RESULTS}


def export_table_rows(export_id: int | None, file_name: str, since: datetime, until: datetime,
                      counts: dict[str, dict[str, int]], timezone: str) -> list[dict]:
    """The ``export-results`` table: per result (:data:`RESULTS`) the export (``-``: nothing
    recorded), its file, window in city time and the counts of :func:`counts_by_result`."""
    local = ZoneInfo(timezone)
    return [{"export": export_id if export_id is not None else "-", "file": file_name,
             "since": since.astimezone(local).isoformat(), "until": until.astimezone(local).isoformat(),
             "result": r, "rows": counts[r]["rows"], "amending an earlier export": counts[r]["amending"],
             "decided before since (late or amended)": counts[r]["decided_before_since"]} for r in RESULTS]
