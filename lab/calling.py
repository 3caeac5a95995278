"""Calling (判读): from the stored results to a call per tube, set-based, never stored over them.

The rules of DESIGN §8, each a view or table macro named after it (cut-offs and target roles
from ``[assay]`` in the config):

* ``result_readings``: the current reading of every run, plate, well and target. A later file
  that reports the same run, plate, well and target again (a re-export, an amended run)
  supersedes the earlier reading; both stay in ``results`` and the amendment is audited by the
  writer. When that file gives one well and target two different readings (another Ct, another
  sample), all of them are kept marked ``conflicting``: none may decide anything (DESIGN §8).
  An exact repeat is no conflict.
* ``plate_qc`` (质控): a plate is valid only if its positive control shows every viral target
  (ORF1ab and N detected, Ct < ``detected_below``) and its negative control shows none
  (no Ct < ``grey_below``). A plate without either control, with a negative control lacking a
  reading for ORF1ab or N, or with conflicting readings of a control, is invalid. The internal
  control is not judged on controls: kits differ in whether their controls carry it.
* ``tube_runs``: one row per tube and run with the Ct of each role and two readings of it:
  ``first_call`` (a first test: grey zone 37 ≤ Ct < 40 is its own call, re-run once) and
  ``rerun_call`` (a re-run: Ct < 40 counts as detected). On an invalid plate both are
  ``plate_invalid``; a tube without a reading for every target role (``missing_roles``) is
  ``reading_missing``, one with conflicting readings ``conflicting_readings``: such a run is not
  ``callable``, the tube is re-run and nothing is called from it.
* ``tube_call_history(as_of)``: every run of a tube with its attempt number on callable runs, the
  audit of how a call came about.
* ``tube_calls(as_of[, tubes := [...]])``: the current call per tube, derived from the history: the first valid
  run decides ``positive`` and ``negative``; ``grey``, ``single_target`` and ``invalid`` wait
  for one re-run, whose ``rerun_call`` is final (a persisting single target stays
  ``single_target``, treated as positive for its people; invalid twice is ``invalid``, a
  re-sample). Until then the call is ``rerun`` with ``pending_reason`` (the first call waiting
  for its re-run, else why the latest run called nothing: ``plate_invalid``, ``reading_missing``,
  ``conflicting_readings``).
A ``tubes`` list narrows the readings to the plates those tubes ran on (``result_readings_of``,
``plate_qc_of``, ``tube_runs_of``): an alert right after one results file calls its few
candidate tubes in a fraction of a second instead of the whole city.

* ``lab_anomalies(as_of)``: ``plate_invalid`` (with the QC reason), ``well_reported_twice``
  (one file gives a well two samples: none of them is called from it), ``conflicting_readings``
  (one file gives a well, target and sample two Cts), ``reading_missing`` (a tube run without a
  reading for a target role) and ``result_unknown_tube`` (a sample that is not a control and was
  never scanned).
"""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb

from kernel.config import AssayConfig
from kernel.sql import sql_text


def define_calling_views(con: duckdb.DuckDBPyConnection, assay: AssayConfig) -> None:
    """Needs the views of :func:`sampling.tubes.define_tube_views` (for unknown tubes)."""
    detected, grey = float(assay.detected_below), float(assay.grey_below)
    pc = sql_text(assay.positive_control_sample.strip().upper())
    nc = sql_text(assay.negative_control_sample.strip().upper())
    role = (
        f"CASE lower(trim(r.target)) WHEN lower({sql_text(assay.orf1ab_target)}) THEN 'orf1ab'"
        f" WHEN lower({sql_text(assay.n_target)}) THEN 'n'"
        f" WHEN lower({sql_text(assay.internal_control_target)}) THEN 'ic' END"
    )
    # a call that finds virus in the tube: its pool's people are re-sampled urgently
    con.execute("CREATE OR REPLACE TEMP MACRO viral_call(call) AS call IN ('positive', 'single_target')")
    # a person's own result from a tube's call (个人结果), or NULL when the call decides nobody:
    # a final negative decides every member of the tube, pooled or single; a final positive or
    # persisting single target decides the person of a single tube (treated as positive); a pool
    # that finds virus decides nobody (its people are re-sampled one by one: their re-sample's call
    # does), nor does an invalid or not yet final call
    con.execute(
        "CREATE OR REPLACE TEMP MACRO individual_result(call, final, capacity) AS"
        " CASE WHEN NOT coalesce(final, FALSE) THEN NULL"
        " WHEN call = 'negative' THEN 'negative'"
        " WHEN viral_call(call) AND capacity <= 1 THEN 'positive' END"
    )
    # a well holding the plate's positive or negative control, not a tube
    con.execute(f"CREATE OR REPLACE TEMP MACRO control_sample(sample) AS upper(trim(sample)) IN ({pc}, {nc})")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO result_readings_of(tubes) AS TABLE
        WITH src AS MATERIALIZED (
            SELECT r.lab_id, r.run_id, r.plate_id, r.well, trim(r.sample) AS sample,
                   control_sample(r.sample) AS control, upper(trim(r.sample)) AS control_name,
                   r.target, {role} AS role, r.ct,
                   coalesce(r.finished_at, l.ingested_at) AS finished_at, r.source_hash, l.ingested_at,
                   lower(trim(r.target)) AS target_key, r.source_line,
                   hash(r.lab_id, r.run_id, r.plate_id, r.well, lower(trim(r.target))) AS reading_hash
            FROM (
                SELECT * FROM results WHERE tubes IS NULL
                UNION ALL
                SELECT x.* FROM results x SEMI JOIN (
                    SELECT DISTINCT lab_id, run_id, plate_id FROM results WHERE trim(sample) IN (SELECT unnest(tubes))
                ) p USING (lab_id, run_id, plate_id)
                WHERE tubes IS NOT NULL
            ) r JOIN ingest_ledger l ON l.content_hash = r.source_hash
        ), again AS MATERIALIZED (
            -- issue 15: the few wells and targets reported more than once (a re-export, a repeat
            -- in one file), found by a hash of their key; only their readings are ranked (every
            -- reading of the city was sorted before). A hash shared by two keys only sends a
            -- reading to the ranking, which counts its key exactly.
            SELECT reading_hash FROM src GROUP BY reading_hash HAVING count(*) > 1
        ), ranked AS MATERIALIZED (
            SELECT *, row_number() OVER newest AS rank_in_well,
                   count(*) OVER (newest ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS reported
            FROM src WHERE reading_hash IN (SELECT reading_hash FROM again)
            WINDOW newest AS (PARTITION BY lab_id, run_id, plate_id, well, target_key
                              ORDER BY ingested_at DESC, source_hash, source_line DESC)
        ), repeated AS (
            SELECT *, min(sample) OVER in_file <> max(sample) OVER in_file
                      OR min(coalesce(ct, -1)) OVER in_file <> max(coalesce(ct, -1)) OVER in_file AS conflicting,
                   first_value(source_hash) OVER (PARTITION BY lab_id, run_id, plate_id, well, target_key
                                                  ORDER BY rank_in_well) AS newest_file
            FROM ranked WHERE reported > 1
            WINDOW in_file AS (PARTITION BY lab_id, run_id, plate_id, well, target_key, source_hash)
        )
        SELECT * EXCLUDE (target_key, source_line, reading_hash), FALSE AS conflicting FROM src
        WHERE reading_hash NOT IN (SELECT reading_hash FROM again)
        UNION ALL BY NAME
        SELECT * EXCLUDE (target_key, source_line, reading_hash, rank_in_well, reported), FALSE AS conflicting
        FROM ranked WHERE reported = 1
        UNION ALL BY NAME
        -- the newest file's reading; when that file gives the well and target conflicting
        -- readings, all of them, each marked: none of them may decide a call
        SELECT * EXCLUDE (target_key, source_line, reading_hash, rank_in_well, reported, newest_file) FROM repeated
        WHERE rank_in_well = 1 OR (conflicting AND source_hash = newest_file)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO plate_qc_of(tubes) AS TABLE
        WITH p AS (
            SELECT lab_id, run_id, plate_id, max(finished_at) AS finished_at,
                   count(DISTINCT well) FILTER (WHERE NOT control) AS tube_wells,
                   bool_or(control AND control_name = {pc}) AS has_pc,
                   bool_or(control AND control_name = {nc}) AS has_nc,
                   bool_or(control AND conflicting AND role IN ('orf1ab', 'n')) AS control_conflict,
                   count(DISTINCT role) FILTER (WHERE control AND control_name = {pc} AND role IN ('orf1ab', 'n')
                                                AND ct < {detected}) AS pc_targets,
                   count(DISTINCT role) FILTER (WHERE control AND control_name = {nc} AND role IN ('orf1ab', 'n'))
                       AS nc_readings,
                   count(DISTINCT role) FILTER (WHERE control AND control_name = {nc} AND role IN ('orf1ab', 'n')
                                                AND ct < {grey}) AS nc_targets
            FROM result_readings_of(tubes) GROUP BY lab_id, run_id, plate_id
        )
        SELECT lab_id, run_id, plate_id, finished_at, tube_wells,
               coalesce(has_pc AND pc_targets = 2 AND has_nc AND nc_readings = 2 AND nc_targets = 0
                        AND NOT control_conflict, FALSE) AS valid,
               CASE WHEN NOT coalesce(has_pc, FALSE) THEN 'no positive control'
                    WHEN control_conflict THEN 'conflicting readings of a control'
                    WHEN pc_targets < 2 THEN 'positive control misses a target'
                    WHEN NOT coalesce(has_nc, FALSE) THEN 'no negative control'
                    WHEN nc_readings < 2 THEN 'negative control misses a reading'
                    WHEN nc_targets > 0 THEN 'negative control shows a target' END AS qc_reason
        FROM p
        """
    )
    define_tube_runs(con, assay)
    for name in ("result_readings", "plate_qc", "tube_runs"):
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {name}_of(NULL::VARCHAR[])")
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO tube_call_history(as_of, tubes := NULL::VARCHAR[]) AS TABLE
        SELECT tr.*,
               CASE WHEN tr.callable THEN row_number() OVER (
                   PARTITION BY tr.tube_barcode, tr.callable ORDER BY tr.finished_at, tr.run_id, tr.plate_id) END AS attempt
        FROM (SELECT * FROM tube_runs WHERE tubes IS NULL
              UNION ALL SELECT * FROM tube_runs_of(tubes) WHERE tubes IS NOT NULL) tr
        WHERE tr.finished_at <= as_of
        """
    )
    define_tube_calls(con)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO lab_anomalies(as_of) AS TABLE
        -- issue 15: the few wells (and well targets) whose readings in one file differ are found
        -- first, grouped by a hash of their key (min <> max: no distinct count, no ledger join);
        -- the rules below read only those wells' rows. A hash shared by two keys only adds a
        -- candidate, never loses one; a difference among the readings up to ``as_of`` is one
        -- among all of them. (Every reading of the city grouped twice before: 35 s at 25.7 M.)
        WITH twice_wells AS MATERIALIZED (
            SELECT hash(lab_id, run_id, plate_id, well, source_hash) AS well_hash FROM results
            GROUP BY well_hash HAVING min(trim(sample)) <> max(trim(sample))
        ), conflicting_wells AS MATERIALIZED (
            SELECT DISTINCT hash(lab_id, run_id, plate_id, well, source_hash) AS well_hash FROM results
            GROUP BY well_hash, hash(lower(trim(target)), trim(sample))
            HAVING min(coalesce(ct, -1)) <> max(coalesce(ct, -1))
        )
        SELECT 'plate_invalid' AS kind, NULL::VARCHAR AS round_id, NULL::VARCHAR AS tube_barcode, NULL::VARCHAR AS box_id,
               format('lab {{}} run {{}} plate {{}}: {{}}; {{}} tube(s) to re-run', lab_id, run_id, plate_id, qc_reason, tube_wells)
                   AS detail, finished_at AS detected_at
        FROM plate_qc WHERE NOT valid AND finished_at <= as_of
        UNION ALL
        SELECT 'well_reported_twice', NULL, NULL, NULL,
               format('lab {{}} run {{}} plate {{}} well {{}}: {{}} different samples in one file; none of them is called from it',
                      r.lab_id, r.run_id, r.plate_id, r.well, count(DISTINCT trim(r.sample))),
               min(coalesce(r.finished_at, l.ingested_at))
        FROM results r JOIN ingest_ledger l ON l.content_hash = r.source_hash
        WHERE coalesce(r.finished_at, l.ingested_at) <= as_of
          AND hash(r.lab_id, r.run_id, r.plate_id, r.well, r.source_hash) IN (SELECT well_hash FROM twice_wells)
        GROUP BY r.lab_id, r.run_id, r.plate_id, r.well, r.source_hash
        HAVING count(DISTINCT trim(r.sample)) > 1
        UNION ALL
        SELECT 'conflicting_readings', NULL,
               CASE WHEN upper(trim(r.sample)) NOT IN ({pc}, {nc}) THEN trim(r.sample) END, NULL,
               format('lab {{}} run {{}} plate {{}} well {{}} target {{}}: {{}} different readings in one file; none of them is called from it',
                      r.lab_id, r.run_id, r.plate_id, r.well, min(trim(r.target)), count(DISTINCT coalesce(r.ct, -1))),
               min(coalesce(r.finished_at, l.ingested_at))
        FROM results r JOIN ingest_ledger l ON l.content_hash = r.source_hash
        WHERE coalesce(r.finished_at, l.ingested_at) <= as_of
          AND hash(r.lab_id, r.run_id, r.plate_id, r.well, r.source_hash) IN (SELECT well_hash FROM conflicting_wells)
        GROUP BY r.lab_id, r.run_id, r.plate_id, r.well, lower(trim(r.target)), trim(r.sample), r.source_hash
        HAVING count(DISTINCT coalesce(r.ct, -1)) > 1
        UNION ALL
        SELECT 'reading_missing', NULL, tube_barcode, NULL,
               format('lab {{}} run {{}} plate {{}} well {{}}: no reading for {{}}; not called, to re-run',
                      lab_id, run_id, plate_id, well, missing_roles),
               finished_at
        FROM tube_runs WHERE missing_roles IS NOT NULL AND finished_at <= as_of
        UNION ALL
        SELECT 'result_unknown_tube', NULL, tr.tube_barcode, NULL,
               format('lab {{}} plate {{}} well {{}}: sample is no control and was never scanned', tr.lab_id, tr.plate_id, tr.well),
               tr.finished_at
        FROM tube_runs tr ANTI JOIN tubes t USING (tube_barcode)
        WHERE tr.finished_at <= as_of
        """
    )


#: the plates' QC that ``tube_runs_of`` joins: derived from the readings of its plates
DERIVED_PLATES = "plate_qc_of(tubes)"


def define_tube_runs(con: duckdb.DuckDBPyConnection, assay: AssayConfig, plates: str = DERIVED_PLATES) -> None:
    """``tube_runs_of(tubes)``: one row per tube and run with its two calls (see the module
    docstring), on the plates' QC ``plates`` (:data:`DERIVED_PLATES`; a snapshot passes
    :func:`snapshot_plates`)."""
    detected, grey = float(assay.detected_below), float(assay.grey_below)
    override = "TRUE" if assay.positive_overrides_internal_control else "FALSE"
    det = lambda c: f"coalesce({c} < {detected}, FALSE)"  # noqa: E731
    shows = lambda c: f"coalesce({c} < {grey}, FALSE)"  # noqa: E731
    in_grey = lambda c: f"coalesce({c} >= {detected} AND {c} < {grey}, FALSE)"  # noqa: E731
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO tube_runs_of(tubes) AS TABLE
        WITH t AS (
            SELECT lab_id, run_id, plate_id, sample AS tube_barcode, min(well) AS well,
                   max(finished_at) AS finished_at, max(source_hash) AS source_hash,
                   min(ct) FILTER (WHERE role = 'orf1ab') AS orf1ab_ct,
                   min(ct) FILTER (WHERE role = 'n') AS n_ct,
                   min(ct) FILTER (WHERE role = 'ic') AS ic_ct,
                   nullif(concat_ws(', ',
                       CASE WHEN count(*) FILTER (WHERE role = 'orf1ab') = 0 THEN {sql_text(assay.orf1ab_target)} END,
                       CASE WHEN count(*) FILTER (WHERE role = 'n') = 0 THEN {sql_text(assay.n_target)} END,
                       CASE WHEN count(*) FILTER (WHERE role = 'ic') = 0 THEN {sql_text(assay.internal_control_target)} END
                   ), '') AS missing_roles,
                   coalesce(bool_or(conflicting AND role IS NOT NULL), FALSE) AS conflicting
            FROM result_readings_of(tubes) WHERE NOT control AND (tubes IS NULL OR sample IN (SELECT unnest(tubes)))
            GROUP BY lab_id, run_id, plate_id, sample
        )
        SELECT t.*, q.valid AS plate_valid,
               q.valid AND NOT t.conflicting AND t.missing_roles IS NULL AS callable,
               CASE WHEN NOT q.valid THEN 'plate_invalid'
                    WHEN t.conflicting THEN 'conflicting_readings'
                    WHEN t.missing_roles IS NOT NULL THEN 'reading_missing'
                    WHEN NOT {shows('ic_ct')} AND NOT ({override} AND ({det('orf1ab_ct')} OR {det('n_ct')})) THEN 'invalid'
                    WHEN {det('orf1ab_ct')} AND {det('n_ct')} THEN 'positive'
                    WHEN {in_grey('orf1ab_ct')} OR {in_grey('n_ct')} THEN 'grey'
                    WHEN {det('orf1ab_ct')} OR {det('n_ct')} THEN 'single_target'
                    ELSE 'negative' END AS first_call,
               CASE WHEN NOT q.valid THEN 'plate_invalid'
                    WHEN t.conflicting THEN 'conflicting_readings'
                    WHEN t.missing_roles IS NOT NULL THEN 'reading_missing'
                    WHEN NOT {shows('ic_ct')} AND NOT ({override} AND ({shows('orf1ab_ct')} OR {shows('n_ct')})) THEN 'invalid'
                    WHEN {shows('orf1ab_ct')} AND {shows('n_ct')} THEN 'positive'
                    WHEN {shows('orf1ab_ct')} OR {shows('n_ct')} THEN 'single_target'
                    ELSE 'negative' END AS rerun_call
        FROM t JOIN {plates} q USING (lab_id, run_id, plate_id)
        """
    )


def snapshot_plates(con: duckdb.DuckDBPyConnection, assay: AssayConfig, table: str) -> None:
    """Issue 15: a snapshot holding the whole city's ``plate_qc`` in ``table`` makes
    ``tube_runs_of`` read it for the whole city (the city's readings ranked once for the plates,
    not again for the runs); a ``tubes`` list still derives its own few plates. (A filter on a
    derived view is not pruned before the view runs; one on a table scan is.)"""
    define_tube_runs(con, assay, plates=f"(SELECT * FROM {table} WHERE tubes IS NULL"
                                        f" UNION ALL SELECT * FROM {DERIVED_PLATES} WHERE tubes IS NOT NULL)")


def define_tube_calls(con: duckdb.DuckDBPyConnection) -> None:
    """``tube_calls(as_of[, tubes := [...]])``, derived from ``tube_call_history`` (see the module
    docstring); also what :func:`unpin_tube_calls` puts back."""
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO tube_calls(as_of, tubes := NULL::VARCHAR[]) AS TABLE
        WITH h AS (SELECT * FROM tube_call_history(as_of, tubes := tubes)),
        runs AS (
            SELECT tube_barcode, count(*) AS runs, count(*) FILTER (WHERE NOT plate_valid) AS invalid_plate_runs,
                   arg_max(first_call, finished_at) FILTER (WHERE NOT callable) AS uncallable
            FROM h GROUP BY tube_barcode
        ), f AS (SELECT * FROM h WHERE attempt = 1), s AS (SELECT * FROM h WHERE attempt = 2),
        decided AS (
            SELECT runs.tube_barcode, runs.runs, runs.invalid_plate_runs, f.first_call,
                   CASE WHEN f.first_call IN ('positive', 'negative') THEN f.first_call
                        WHEN s.tube_barcode IS NOT NULL THEN s.rerun_call
                        ELSE 'rerun' END AS call,
                   CASE WHEN f.tube_barcode IS NULL THEN runs.uncallable
                        WHEN f.first_call NOT IN ('positive', 'negative') AND s.tube_barcode IS NULL
                        THEN f.first_call END AS pending_reason,
                   CASE WHEN f.first_call IN ('positive', 'negative') THEN f ELSE s END AS by_run
            FROM runs LEFT JOIN f USING (tube_barcode) LEFT JOIN s USING (tube_barcode)
        )
        SELECT tube_barcode, call, call <> 'rerun' AS final, pending_reason, first_call, runs, invalid_plate_runs,
               by_run.lab_id, by_run.run_id, by_run.plate_id, by_run.well,
               by_run.finished_at AS called_at, by_run.source_hash AS called_by_file
        FROM decided
        """
    )


# --- issue 15: one report, one derivation of the calls ---------------------------------------------

#: the session's table holding ``tube_calls(as_of)`` of one time (:func:`pin_tube_calls`)
PINNED_CALLS = "pinned_tube_calls"


def pin_tube_calls(con: duckdb.DuckDBPyConnection, as_of: datetime) -> str:
    """Compute ``tube_calls(as_of)`` of the whole city once into the temporary table
    :data:`PINNED_CALLS` and shadow the macro with a read of it, for a read session that judges
    everything at one ``as_of`` (the report: coverage, status, orders, TAT, daily, html all name
    ``tube_calls``; at 25.7 M residents each derivation is seconds and GBs of working memory).
    The shadow refuses any other ``as_of`` or a ``tubes`` list (an error, never a wrong answer);
    :func:`unpin_tube_calls` puts the derived macro back. Needs the snapshot's views."""
    moment = as_of.astimezone(timezone.utc).isoformat()
    con.execute(f"CREATE OR REPLACE TEMP TABLE {PINNED_CALLS} AS SELECT * FROM tube_calls($as_of)", {"as_of": as_of})
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO tube_calls(as_of, tubes := NULL::VARCHAR[]) AS TABLE
        SELECT * FROM {PINNED_CALLS}
        WHERE CASE WHEN as_of::TIMESTAMPTZ = TIMESTAMPTZ '{moment}' AND tubes IS NULL THEN TRUE
                   ELSE error('tube_calls is pinned at {moment} for the whole city in this session') END
        """
    )
    return PINNED_CALLS


def unpin_tube_calls(con: duckdb.DuckDBPyConnection) -> None:
    """Undo :func:`pin_tube_calls`: the derived ``tube_calls`` again, the table dropped."""
    define_tube_calls(con)
    con.execute(f"DROP TABLE IF EXISTS {PINNED_CALLS}")
