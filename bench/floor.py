"""The floor of ``make bench`` (issue 15): what plain DuckDB does with a simulated city's inbox on
this machine, to measure tubetrail against.

Every feed of the inbox is loaded **in bulk**: one ``read_parquet`` / ``read_csv`` per feed and
file format over all its files of a link (DuckDB's file list: what a glob per district or lab
folder reads), every column read as text (explicit types, no sniffing), then checked by the
same row rules as the feeds, written as SQL: text rules (length, control characters), required
fields, ``id_type`` in the known types, the RIC shape, its birth date and GB 11643 check
character, event names, capacities, times that parse (a time without offset is city time), the
receipt condition, the generic results' Ct and wells; a row that breaks one is counted as
quarantined, the rest inserted. Sites and labs a scan, box or receipt names but the reference
data lacks are counted (tubetrail keeps such rows and flags them as anomalies; so does this).
No ledger, no per-file bookkeeping, no staging database, no Python per row; the person key (the
same HMAC-SHA256 as the warehouse's) is computed once per row, in SQL.

The instrument exports are read as plainly as the simulator writes them: QuantStudio text
exports as a tab-separated table after their fixed header (run, plate and run end time from
that header), CFX Maestro CSV exports with the file's stem as run and plate and the file's
modification time as run time (as ``stage_export`` does).

The round rule and the re-samples are plain SQL: a scan in the round's window belongs to the
round; a single-tube person scan outside every window joins the round of its person's
re-sampling order (refused, lost or invalid tubes, positive or single-target pools, as
``lab.orders.resample_orders`` derives them as of ``infinity``, an ordinary order only for a
member without another good tube); a seal follows its tube. Then the coverage per grid as of the
report's time, as ``reporting.coverage.coverage`` counts it (members of the round's tubes, last
add/void wins, tube not refused by then), and the counts the bench compares with tubetrail's:
people sampled, tubes of the round, positive pools (pooled tubes called positive or persisting
single target, with members to re-sample).

Each link is one function ``link_<name>(con, spec)`` run by the bench in a child process of its
own (``bench.city`` times it and reads its peak RSS), on one DuckDB file of its own.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import duckdb

#: the links of the floor, in order (the bench times each one)
FLOOR_LINKS = ("register", "collect", "deliver", "test", "re-samples", "coverage")
#: tubetrail's links each floor link is compared with (``bench.city.LINKS``)
COMPARED = {
    "register": ("reference and register",),
    "collect": ("collect (scans)",),
    "deliver": ("deliver (boxes, receipts)",),
    "test": ("test (results)", "positive-pool latency"),
    "re-samples": ("re-samples (next morning)",),
    "coverage": ("report",),
}


# --- the session ---------------------------------------------------------------------------------

def connect(spec: dict) -> duckdb.DuckDBPyConnection:
    """The floor's database (a file of its own), with tubetrail's memory limit, a temp directory
    beside it, the city's time zone, and the rules' macros."""
    from kernel.config import Config
    from kernel.secrets import id_hash_key

    cfg = Config()
    path = Path(spec["floor_db"])
    con = duckdb.connect(str(path))
    con.execute(f"SET memory_limit = '{spec.get('memory_limit') or cfg.warehouse.memory_limit}'")
    con.execute(f"SET temp_directory = '{path.parent / 'floor-tmp'}'")
    if spec.get("threads"):
        con.execute(f"SET threads = {int(spec['threads'])}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET TimeZone = '{cfg.city.timezone}'")
    define_macros(con, id_hash_key())
    return con


def define_macros(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    from lab.instruments.common import GENERIC_NOT_DETECTED, WELL_PATTERN
    from sampling.identity import RIC_CHECK_CHARS, RIC_WEIGHTS
    from kernel.rules import CONTROL_CHARACTERS, MAX_FIELD_CHARS, MAX_FREE_TEXT_CHARS

    block = key.ljust(64, b"\0")
    inner = bytes(b ^ 0x36 for b in block).hex()
    outer = bytes(b ^ 0x5C for b in block).hex()
    # the warehouse's person key (warehouse.connection.define_person_key), computed once per row
    con.execute(f"""CREATE OR REPLACE TEMP MACRO person_key(id_type, id_number) AS
        ('0x' || substr(sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}')
            || encode(id_type || '|' || id_number)))), 1, 32))::UHUGEINT""")
    ws = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
    con.execute(f"CREATE OR REPLACE TEMP MACRO st(v) AS trim(v, {ws})")
    con.execute("CREATE OR REPLACE TEMP MACRO blank(v) AS coalesce(st(v) = '', TRUE)")
    con.execute("CREATE OR REPLACE TEMP MACRO nn(v) AS nullif(st(v), '')")
    free = CONTROL_CHARACTERS.replace(r"\p{Cc}", r"\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}", 1)
    con.execute(f"""CREATE OR REPLACE TEMP MACRO bad_text(v) AS
        coalesce(length(st(v)) > {MAX_FIELD_CHARS} OR regexp_matches(st(v), '{CONTROL_CHARACTERS}'), FALSE)""")
    con.execute(f"""CREATE OR REPLACE TEMP MACRO bad_free_text(v) AS
        coalesce(length(st(v)) > {MAX_FREE_TEXT_CHARS} OR regexp_matches(st(v), '{free}'), FALSE)""")
    # a time: ISO 8601 with offset, or without (city time: the session's TimeZone)
    con.execute("""CREATE OR REPLACE TEMP MACRO ts(v) AS
        TRY_CAST(regexp_replace(st(v), 'Z$', '+00:00') AS TIMESTAMPTZ)""")
    digits = " + ".join(f"TRY_CAST(substr(n, {i + 1}, 1) AS INTEGER) * {w}" for i, w in enumerate(RIC_WEIGHTS))
    # ``latest``: the day a birth date may not pass (a scan's own local day; the register's take day)
    con.execute(f"""CREATE OR REPLACE TEMP MACRO ric_problem(n, latest) AS
        CASE WHEN NOT coalesce(regexp_full_match(n, '\\d{{17}}[\\dX]'), FALSE) THEN 'RIC not 17 digits plus a check character'
             WHEN coalesce(year(try_strptime(substr(n, 7, 8), '%Y%m%d')) < 1880
                           OR try_strptime(substr(n, 7, 8), '%Y%m%d')::DATE > coalesce(latest, DATE '9999-12-31'), TRUE)
             THEN 'RIC birth date not a real date'
             WHEN substr('{RIC_CHECK_CHARS}', (({digits}) % 11) + 1, 1) <> substr(n, 18, 1)
             THEN 'RIC check digit wrong (GB 11643)' END""")
    con.execute("CREATE OR REPLACE TEMP MACRO id_norm(t, n) AS "
                "CASE WHEN t = 'RIC' THEN upper(regexp_replace(st(n), '\\s', '', 'g')) "
                "ELSE regexp_replace(st(n), '\\s', '', 'g') END")
    nd = ", ".join(f"'{v}'" for v in GENERIC_NOT_DETECTED)
    con.execute(f"CREATE OR REPLACE TEMP MACRO not_detected(v) AS coalesce(lower(st(v)) IN ({nd}), TRUE)")
    con.execute(f"""CREATE OR REPLACE TEMP MACRO well_of(v) AS
        CASE WHEN regexp_full_match(st(v), '{WELL_PATTERN}')
             THEN upper(regexp_extract(st(v), '^{WELL_PATTERN}$', 1))
                  || TRY_CAST(regexp_extract(st(v), '^{WELL_PATTERN}$', 2) AS INTEGER)::VARCHAR END""")


def rough_text(columns) -> str:
    """A first pass of the text rules over a whole row (one regular expression over its fields
    joined, their longest length): only a row it flags has each field judged (``bad_text``)."""
    from kernel.rules import CONTROL_CHARACTERS, MAX_FIELD_CHARS

    return (f"coalesce(regexp_matches(concat_ws('|', {', '.join(columns)}), '{CONTROL_CHARACTERS}') "
            f"OR greatest({', '.join(f'length({c})' for c in columns)}) > {MAX_FIELD_CHARS}, FALSE)")


def paths(files: list, kind: str, suffix: str) -> list[str]:
    return [f[1] for f in files if f[0] == kind and f[1].endswith(suffix)]


def file_list(ps: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in ps) + "]"


def csv(ps: list[str], columns: tuple[str, ...]) -> str:
    """A CSV read with every column as text (the feeds' columns, no sniffing of types)."""
    cols = ", ".join(f"'{c}': 'VARCHAR'" for c in columns)
    return (f"read_csv({file_list(ps)}, header = true, columns = {{{cols}}}, filename = true, "
            "quote = '\"', escape = '\"', null_padding = true, strict_mode = false)")


def count(con, sql: str) -> int:
    return con.sql(sql).fetchall()[0][0]


# --- the links -----------------------------------------------------------------------------------

SITE_COLUMNS = ("site_id", "name", "district", "subdistrict", "community", "kind", "opens", "closes")
REGISTER_COLUMNS = ("id_type", "id_number", "name", "phone", "district", "subdistrict", "community", "grid",
                    "address", "household_id", "mobility_limited", "key_group")
SCAN_COLUMNS = ("scanned_at", "site_id", "collector_id", "tube_barcode", "event", "id_type", "id_number", "name",
                "phone", "capacity")
MANIFEST_COLUMNS = ("box_id", "tube_barcode", "site_id", "packed_at", "courier_id", "departed_at", "lab_id")
RECEIPT_COLUMNS = ("lab_id", "box_id", "tube_barcode", "received_at", "condition")
RESULT_COLUMNS = ("lab_id", "run_id", "plate_id", "well", "sample", "target", "ct", "finished_at")


def link_register(con: duckdb.DuckDBPyConnection, spec: dict) -> dict:
    """Reference data (sites, labs), the round, the register: last row per person wins (files in
    path order, lines in order), its person key once."""
    from sampling.identity import ID_TYPES

    files = spec["files"]
    rnd = spec["truth"]["round"]
    con.execute("CREATE OR REPLACE TABLE rounds (round_id VARCHAR, starts_at TIMESTAMPTZ, ends_at TIMESTAMPTZ, "
                "districts VARCHAR[], pool_size INTEGER)")
    con.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?)",
                [rnd["id"], datetime.fromisoformat(rnd["start"]), datetime.fromisoformat(rnd["end"]),
                 rnd.get("districts"), rnd["pool_size"]])
    con.execute(f"""CREATE OR REPLACE TABLE sites AS
        SELECT DISTINCT ON (st(site_id)) st(site_id) AS site_id, nn(district) AS district,
               nn(subdistrict) AS subdistrict, nn(community) AS community, nn(kind) AS kind
        FROM {csv(paths(files, 'sites', '.csv'), SITE_COLUMNS)} WHERE NOT blank(site_id)""")
    con.execute(f"""CREATE OR REPLACE TABLE labs AS
        SELECT DISTINCT st(lab_id) AS lab_id FROM {csv(paths(files, 'labs', '.csv'), ('lab_id', 'name',
        'daily_capacity_tubes'))} WHERE NOT blank(lab_id)""")
    reg = sorted(paths(files, "register", ".parquet"))
    types = ", ".join(f"'{t}'" for t in ID_TYPES)
    per_column = " OR ".join(f"bad_text({c})" for c in REGISTER_COLUMNS if c != "address")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE register_in AS
        WITH raw AS (
            SELECT * EXCLUDE (id_type, id_number), upper(st(id_type)) AS id_type,
                   id_norm(upper(st(id_type)), id_number) AS id_number, filename AS file, file_row_number AS line,
                   {rough_text(REGISTER_COLUMNS)} AS rough
            FROM read_parquet({file_list(reg)}, filename = true, file_row_number = true, union_by_name = true)
        )
        SELECT *, CASE WHEN rough AND ({per_column}) THEN 'text' WHEN rough AND bad_free_text(address) THEN 'address: text'
                       WHEN id_type IS NULL OR id_type NOT IN ({types}) THEN 'id_type'
                       WHEN blank(id_number) THEN 'id_number missing'
                       WHEN id_type = 'RIC' AND ric_problem(id_number, current_date) IS NOT NULL
                       THEN ric_problem(id_number, current_date)
                       WHEN blank(name) THEN 'name missing'
                       WHEN blank(district) OR blank(subdistrict) OR blank(community) OR blank(grid) THEN 'area missing'
                       WHEN NOT coalesce(lower(st(mobility_limited)) IN
                            ('true', 't', 'yes', 'y', '1', '是', 'false', 'f', 'no', 'n', '0', '否', ''), TRUE)
                       THEN 'mobility_limited' END AS problem
        FROM raw""")
    # within a file an exact repeat of a row is a duplicate (quarantined); otherwise the last line
    # per person wins, and across files the later file
    con.execute(f"""CREATE OR REPLACE TABLE register AS
        SELECT person_key(id_type, id_number) AS person_key, id_type, id_number, nn(name) AS name,
               nn(district) AS district, nn(subdistrict) AS subdistrict, nn(community) AS community, nn(grid) AS grid,
               nn(household_id) AS household_id, nn(lower(st(key_group))) AS key_group,
               coalesce(lower(st(mobility_limited)) IN ('true', 't', 'yes', 'y', '1', '是'), FALSE) AS mobility_limited
        FROM (SELECT id_type, id_number, unnest(arg_max(struct_pack(name, district, subdistrict, community, grid,
                                                                     household_id, key_group, mobility_limited),
                                                         (file, line)))
              FROM register_in WHERE problem IS NULL GROUP BY id_type, id_number)""")
    read = count(con, "SELECT count(*) FROM register_in")
    bad = count(con, "SELECT count(*) FROM register_in WHERE problem IS NOT NULL")
    # exact repeats, looked for among the few people with several rows in one file only
    dup = count(con, f"""WITH multi AS (
            SELECT id_type, id_number, file FROM register_in WHERE problem IS NULL GROUP BY ALL HAVING count(*) > 1)
        SELECT coalesce(sum(n - d), 0)::BIGINT FROM (
            SELECT count(*) AS n, count(DISTINCT ({', '.join(REGISTER_COLUMNS)})) AS d
            FROM register_in SEMI JOIN multi USING (id_type, id_number, file) WHERE problem IS NULL
            GROUP BY id_type, id_number, file)""")
    return {"rows_read": read, "rows_quarantined": bad + dup, "rows_accepted": read - bad - dup,
            "people": count(con, "SELECT count(*) FROM register"),
            "files": len(reg) + len(paths(files, "sites", ".csv")) + len(paths(files, "labs", ".csv"))}


def _load_scans(con: duckdb.DuckDBPyConnection, files: list) -> dict:
    """Scan files (Parquet and CSV) checked; a row in the round's window into ``scans``, any other
    into ``scans_outside`` (the round rule places them with the re-samples)."""
    from sampling.identity import ID_TYPES

    types = ", ".join(f"'{t}'" for t in ID_TYPES)
    parts = []
    pq = paths(files, "scans", ".parquet")
    if pq:
        parts.append(f"SELECT {', '.join(SCAN_COLUMNS)} FROM read_parquet({file_list(pq)}, union_by_name = true)")
    cs = paths(files, "scans", ".csv")
    if cs:
        parts.append(f"SELECT {', '.join(SCAN_COLUMNS)} FROM {csv(cs, SCAN_COLUMNS)}")
    if not parts:
        return {"files": 0, "rows_read": 0, "rows_quarantined": 0, "rows_accepted": 0}
    per_column = " OR ".join(f"bad_text({c})" for c in SCAN_COLUMNS)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE scans_in AS
        WITH raw AS (
            SELECT * EXCLUDE (event, id_type, id_number), {rough_text(SCAN_COLUMNS)} AS rough,
                   lower(st(event)) AS event, upper(st(id_type)) AS id_type,
                   id_norm(upper(st(id_type)), id_number) AS id_number, ts(scanned_at) AS scan_at,
                   TRY_CAST(st(capacity) AS BIGINT) AS cap
            FROM ({' UNION ALL '.join(parts)})
        ), checked AS (
            SELECT *, event IN ('add', 'void') AS person_event,
                   CASE WHEN rough AND ({per_column}) THEN 'text' WHEN scan_at IS NULL THEN 'scanned_at not an ISO 8601 time'
                        WHEN blank(site_id) OR blank(collector_id) OR blank(tube_barcode) THEN 'required'
                        WHEN event IS NULL OR event NOT IN ('add', 'seal', 'void') THEN 'event'
                        WHEN event IN ('add', 'void') AND blank(id_type) THEN 'add/void without id_type'
                        WHEN event IN ('add', 'void') AND id_type NOT IN ({types}) THEN 'id_type'
                        WHEN event IN ('add', 'void') AND blank(id_number) THEN 'add/void without id_number'
                        WHEN event IN ('add', 'void') AND id_type = 'RIC' THEN ric_problem(id_number, scan_at::DATE)
                        WHEN NOT blank(capacity) AND (cap IS NULL OR cap < 1) THEN 'capacity'
                   END AS problem
            FROM raw
        )
        SELECT c.scan_at AS scanned_at, st(c.site_id) AS site_id, nn(c.collector_id) AS collector_id,
               st(c.tube_barcode) AS tube_barcode, c.event,
               CASE WHEN person_event THEN person_key(c.id_type, c.id_number) END AS person_key,
               c.cap::INTEGER AS capacity, w.round_id, c.problem
        FROM checked c LEFT JOIN rounds w ON c.scan_at >= w.starts_at AND c.scan_at < w.ends_at""")
    con.execute("CREATE TABLE IF NOT EXISTS scans (scanned_at TIMESTAMPTZ, site_id VARCHAR, collector_id VARCHAR, "
                "tube_barcode VARCHAR, event VARCHAR, person_key UHUGEINT, capacity INTEGER, round_id VARCHAR, "
                "resample BOOLEAN)")
    con.execute("CREATE TABLE IF NOT EXISTS scans_outside AS SELECT * EXCLUDE (problem) FROM scans_in WHERE false")
    con.execute("INSERT INTO scans SELECT * EXCLUDE (problem), FALSE FROM scans_in "
                "WHERE problem IS NULL AND round_id IS NOT NULL")
    con.execute("INSERT INTO scans_outside SELECT * EXCLUDE (problem) FROM scans_in "
                "WHERE problem IS NULL AND round_id IS NULL")
    read, bad, outside = con.sql("SELECT count(*), count(problem), count(*) FILTER (WHERE problem IS NULL "
                                 "AND round_id IS NULL) FROM scans_in").fetchall()[0]
    unknown = count(con, "SELECT count(*) FROM scans_in s WHERE problem IS NULL AND site_id NOT IN (SELECT site_id FROM sites)")
    return {"files": len(pq) + len(cs), "rows_read": read, "rows_quarantined": bad, "outside_window": outside,
            "rows_accepted": read - bad, "unknown_sites": unknown}


def link_collect(con: duckdb.DuckDBPyConnection, spec: dict) -> dict:
    return _load_scans(con, spec["files"])


def _load_custody(con: duckdb.DuckDBPyConnection, files: list) -> dict:
    from lab.custody import CONDITIONS

    con.execute("CREATE TABLE IF NOT EXISTS manifests (box_id VARCHAR, tube_barcode VARCHAR, site_id VARCHAR, "
                "packed_at TIMESTAMPTZ, courier_id VARCHAR, departed_at TIMESTAMPTZ, lab_id VARCHAR)")
    con.execute("CREATE TABLE IF NOT EXISTS receipts (lab_id VARCHAR, box_id VARCHAR, tube_barcode VARCHAR, "
                "received_at TIMESTAMPTZ, condition VARCHAR)")
    out = {"files": 0, "rows_read": 0, "rows_quarantined": 0}
    ms = paths(files, "manifests", ".csv")
    if ms:
        text = " WHEN ".join(f"bad_text({c}) THEN '{c}'" for c in MANIFEST_COLUMNS)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE manifests_in AS
            SELECT *, CASE WHEN {text} WHEN blank(box_id) OR blank(tube_barcode) OR blank(site_id) THEN 'required'
                           WHEN ts(packed_at) IS NULL THEN 'packed_at'
                           WHEN NOT blank(departed_at) AND ts(departed_at) IS NULL THEN 'departed_at' END AS problem
            FROM {csv(ms, MANIFEST_COLUMNS)}""")
        con.execute("""INSERT INTO manifests SELECT st(box_id), st(tube_barcode), st(site_id), ts(packed_at),
                       nn(courier_id), ts(departed_at), nn(lab_id) FROM manifests_in WHERE problem IS NULL""")
        read, bad = con.sql("SELECT count(*), count(problem) FROM manifests_in").fetchall()[0]
        out = {"files": len(ms), "rows_read": read, "rows_quarantined": bad}
    rs = paths(files, "receipts", ".csv")
    if rs:
        text = " WHEN ".join(f"bad_text({c}) THEN '{c}'" for c in RECEIPT_COLUMNS)
        conditions = ", ".join(f"'{c}'" for c in CONDITIONS)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE receipts_in AS
            SELECT *, CASE WHEN {text} WHEN blank(lab_id) OR blank(box_id) OR blank(tube_barcode) THEN 'required'
                           WHEN ts(received_at) IS NULL THEN 'received_at'
                           WHEN NOT blank(condition) AND lower(st(condition)) NOT IN ({conditions}) THEN 'condition'
                      END AS problem
            FROM {csv(rs, RECEIPT_COLUMNS)}""")
        con.execute("""INSERT INTO receipts SELECT st(lab_id), st(box_id), st(tube_barcode), ts(received_at),
                       coalesce(nullif(lower(st(condition)), ''), 'ok') FROM receipts_in WHERE problem IS NULL""")
        read, bad = con.sql("SELECT count(*), count(problem) FROM receipts_in").fetchall()[0]
        unknown = count(con, "SELECT count(*) FROM receipts_in WHERE problem IS NULL AND st(lab_id) NOT IN (SELECT lab_id FROM labs)")
        out = {"files": out["files"] + len(rs), "rows_read": out["rows_read"] + read,
               "rows_quarantined": out["rows_quarantined"] + bad, "unknown_labs": unknown}
    out["rows_accepted"] = out["rows_read"] - out["rows_quarantined"]
    return out


def link_deliver(con: duckdb.DuckDBPyConnection, spec: dict) -> dict:
    return _load_custody(con, spec["files"])


def _load_results(con: duckdb.DuckDBPyConnection, files: list) -> dict:
    """Generic results CSVs, QuantStudio text exports and CFX Maestro CSV exports into
    ``readings``; the lab from the folder (``results/<lab>/``) where a file names none."""
    con.execute("CREATE TABLE IF NOT EXISTS readings (lab_id VARCHAR, run_id VARCHAR, plate_id VARCHAR, well VARCHAR, "
                "sample VARCHAR, target VARCHAR, ct DOUBLE, finished_at TIMESTAMPTZ, file VARCHAR, line BIGINT)")
    all_csv = paths(files, "results", ".csv")
    cfx_files, generic = [], []
    for p in all_csv:  # a CFX Maestro export starts with its own header line
        with open(p, encoding="utf-8-sig") as fh:
            (cfx_files if fh.readline().startswith(",Well,Fluor,") else generic).append(p)
    qs = paths(files, "results", ".txt")
    lab = "regexp_extract(filename, '/results/([^/]+)/[^/]+$', 1)"
    stem = "regexp_extract(filename, '([^/]+)\\.[^./]+$', 1)"
    read = bad = 0
    if generic:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE results_in AS
            SELECT *, ts(finished_at) AS fin_at, TRY_CAST(st(ct) AS DOUBLE) AS number,
                   CASE WHEN NOT not_detected(ct) AND NOT coalesce(isfinite(TRY_CAST(st(ct) AS DOUBLE))
                                                               AND TRY_CAST(st(ct) AS DOUBLE) > 0, FALSE) THEN 'ct'
                        WHEN well_of(well) IS NULL THEN 'well'
                        WHEN NOT blank(finished_at) AND ts(finished_at) IS NULL THEN 'finished_at'
                        WHEN bad_text(lab_id) OR bad_text(run_id) OR bad_text(plate_id) OR bad_text(sample)
                             OR bad_text(target) THEN 'text'
                        WHEN coalesce(nn(lab_id), nullif({lab}, '')) IS NULL THEN 'lab_id'
                        WHEN blank(sample) THEN 'sample' WHEN blank(target) THEN 'target' END AS problem
            FROM (SELECT *, row_number() OVER (PARTITION BY filename) + 1 AS line FROM {csv(generic, RESULT_COLUMNS)})""")
        con.execute(f"""INSERT INTO readings
            SELECT coalesce(nn(lab_id), {lab}), coalesce(nn(run_id), {stem}), coalesce(nn(plate_id), nn(run_id), {stem}),
                   well_of(well), st(sample), st(target), CASE WHEN NOT not_detected(ct) THEN number END, fin_at, filename, line
            FROM results_in WHERE problem IS NULL""")
        r, b = con.sql("SELECT count(*), count(problem) FROM results_in").fetchall()[0]
        read, bad = read + r, bad + b
    if qs:
        # the header: run (Experiment Name), plate (Experiment Barcode), run end time (CST: +08:00)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE qs_head AS
            SELECT filename,
                   nullif(st(regexp_extract(content, '\\* Experiment Name = ([^\\r\\n]*)', 1)), 'NA') AS run_id,
                   nullif(st(regexp_extract(content, '\\* Experiment Barcode = ([^\\r\\n]*)', 1)), 'NA') AS plate_id,
                   strptime(replace(st(regexp_extract(content, '\\* Experiment Run End Time = ([^\\r\\n]*)', 1)),
                                    ' CST', ' +0800'), '%Y-%m-%d %I:%M:%S %p %z') AS finished_at
            FROM read_text({file_list(qs)})""")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE qs_in AS
            SELECT *, CASE WHEN lower(st(omit)) = 'true' THEN 'omitted'
                           WHEN NOT (lower(st(ct)) IN ('', 'undetermined', 'nan', 'no ct', 'no cq', 'n/a', 'na')
                                     OR coalesce(TRY_CAST(st(ct) AS DOUBLE) > 0, FALSE)) THEN 'ct'
                           WHEN well_of(pos) IS NULL THEN 'well' END AS problem
            FROM read_csv({file_list(qs)}, skip = 12, header = true, delim = '\t', filename = true, null_padding = true,
                          columns = {{'number': 'VARCHAR', 'pos': 'VARCHAR', 'omit': 'VARCHAR', 'sample': 'VARCHAR',
                                     'target': 'VARCHAR', 'task': 'VARCHAR', 'reporter': 'VARCHAR',
                                     'quencher': 'VARCHAR', 'ct': 'VARCHAR', 'ct_mean': 'VARCHAR', 'ct_sd': 'VARCHAR'}})
            WHERE NOT blank(target)""")
        con.execute(f"""INSERT INTO readings
            SELECT {lab}, coalesce(h.run_id, {stem}), coalesce(h.plate_id, h.run_id, {stem}), well_of(q.pos), st(q.sample),
                   st(q.target), TRY_CAST(nullif(lower(st(q.ct)), 'nan') AS DOUBLE), h.finished_at, q.filename,
                   row_number() OVER (PARTITION BY q.filename)
            FROM qs_in q JOIN qs_head h USING (filename) WHERE q.problem IS NULL""")
        r, b = con.sql("SELECT count(*), count(problem) FROM qs_in").fetchall()[0]
        read, bad = read + r, bad + b
    if cfx_files:
        # no run time in the export: the file's modification time (when the instrument wrote it)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE cfx_in AS
            SELECT c.*, m.last_modified,
                   CASE WHEN NOT (lower(st(cq)) IN ('', 'undetermined', 'nan', 'no ct', 'no cq', 'n/a', 'na')
                                  OR coalesce(TRY_CAST(st(cq) AS DOUBLE) > 0, FALSE)) THEN 'ct'
                        WHEN well_of(well) IS NULL THEN 'well' END AS problem
            FROM read_csv({file_list(cfx_files)}, header = true, filename = true, null_padding = true,
                          columns = {{'blank': 'VARCHAR', 'well': 'VARCHAR', 'fluor': 'VARCHAR', 'target': 'VARCHAR',
                                     'content': 'VARCHAR', 'sample': 'VARCHAR', 'bio': 'VARCHAR', 'cq': 'VARCHAR',
                                     'cq_mean': 'VARCHAR', 'cq_sd': 'VARCHAR', 'sq': 'VARCHAR', 'log_sq': 'VARCHAR',
                                     'sq_mean': 'VARCHAR', 'sq_sd': 'VARCHAR', 'set_point': 'VARCHAR',
                                     'note': 'VARCHAR'}}) c
            JOIN (SELECT filename, last_modified FROM read_blob({file_list(cfx_files)})) m USING (filename)
            WHERE NOT blank(c.target)""")
        con.execute(f"""INSERT INTO readings
            SELECT {lab}, {stem}, {stem}, well_of(well), st(sample), st(target),
                   TRY_CAST(nullif(lower(st(cq)), 'nan') AS DOUBLE), last_modified::TIMESTAMPTZ, filename,
                   row_number() OVER (PARTITION BY filename)
            FROM cfx_in WHERE problem IS NULL""")
        r, b = con.sql("SELECT count(*), count(problem) FROM cfx_in").fetchall()[0]
        read, bad = read + r, bad + b
    return {"files": len(generic) + len(qs) + len(cfx_files), "rows_read": read, "rows_quarantined": bad,
            "rows_accepted": read - bad}


def link_test(con: duckdb.DuckDBPyConnection, spec: dict) -> dict:
    return _load_results(con, spec["files"])


# --- the rules: calls, orders, the round rule, coverage ------------------------------------------

def define_rules(con: duckdb.DuckDBPyConnection) -> None:
    """Tube members, tubes, custody and calls as plain SQL macros over the floor's tables (the
    same rules as tubetrail's views, written once here for the floor)."""
    from kernel.config import Config

    cfg = Config()
    a = cfg.assay
    lost = f"INTERVAL '{cfg.tat.lost_after_round_end_hours * 3600:.0f} seconds'"
    con.execute("""CREATE OR REPLACE TEMP MACRO members() AS TABLE
        SELECT round_id, tube_barcode, person_key, min(scanned_at) FILTER (WHERE event = 'add') AS added_at
        FROM scans WHERE event IN ('add', 'void')
        GROUP BY round_id, tube_barcode, person_key
        HAVING arg_max(event = 'add', epoch_us(scanned_at) * 2 + (event = 'void')::BIGINT)""")
    con.execute(f"""CREATE OR REPLACE TEMP MACRO custody() AS TABLE
        WITH t AS (
            SELECT round_id, tube_barcode, arg_min(capacity, scanned_at) FILTER (WHERE capacity IS NOT NULL) AS printed,
                   bool_or(resample) AS resample
            FROM scans GROUP BY round_id, tube_barcode
        ), r AS (
            SELECT tube_barcode, min(received_at) AS received_at,
                   arg_min(condition, (condition = 'ok', received_at)) AS condition
            FROM receipts GROUP BY tube_barcode
        )
        SELECT t.round_id, t.tube_barcode, coalesce(t.printed, rd.pool_size) AS capacity, t.resample,
               r.received_at, coalesce(r.condition <> 'ok', FALSE) AS refused,
               NOT t.resample AND (r.received_at IS NULL OR r.received_at > rd.ends_at + {lost}) AS lost_ever,
               rd.ends_at + {lost} AS lost_at
        FROM t JOIN rounds rd USING (round_id) LEFT JOIN r USING (tube_barcode)""")
    # the call of every tube (as tubetrail's tube_calls): the current reading per run, plate, well
    # and target; plate QC by its controls; the first valid run decides positive or negative, else
    # the re-run's call
    con.execute(f"""CREATE OR REPLACE TEMP MACRO calls(as_of) AS TABLE
        WITH now AS (
            SELECT DISTINCT ON (lab_id, run_id, plate_id, well, target)
                   lab_id, run_id, plate_id, st(sample) AS sample, upper(st(sample)) AS control_name,
                   CASE lower(st(target)) WHEN '{a.orf1ab_target.lower()}' THEN 'orf1ab' WHEN '{a.n_target.lower()}' THEN 'n'
                        WHEN '{a.internal_control_target.lower()}' THEN 'ic' END AS role, ct, finished_at
            FROM readings ORDER BY lab_id, run_id, plate_id, well, target, file DESC, line DESC
        ), qc AS (
            SELECT lab_id, run_id, plate_id,
                   coalesce(bool_or(control_name = '{a.positive_control_sample.upper()}'), FALSE)
                   AND count(DISTINCT role) FILTER (WHERE control_name = '{a.positive_control_sample.upper()}'
                                                    AND role IN ('orf1ab', 'n') AND ct < {a.detected_below}) = 2
                   AND coalesce(bool_or(control_name = '{a.negative_control_sample.upper()}'), FALSE)
                   AND count(DISTINCT role) FILTER (WHERE control_name = '{a.negative_control_sample.upper()}'
                                                    AND role IN ('orf1ab', 'n') AND ct < {a.grey_below}) = 0 AS valid
            FROM now GROUP BY ALL
        ), runs AS (
            SELECT lab_id, run_id, plate_id, sample AS tube_barcode, max(finished_at) AS finished_at,
                   min(ct) FILTER (WHERE role = 'orf1ab') AS o, min(ct) FILTER (WHERE role = 'n') AS n,
                   min(ct) FILTER (WHERE role = 'ic') AS ic
            FROM now WHERE control_name NOT IN ('{a.positive_control_sample.upper()}', '{a.negative_control_sample.upper()}')
            GROUP BY ALL
        ), h AS (
            SELECT r.*, row_number() OVER (PARTITION BY tube_barcode ORDER BY finished_at, run_id, plate_id) AS attempt,
                   CASE WHEN NOT coalesce(ic < {a.grey_below}, FALSE) THEN 'invalid'
                        WHEN coalesce(o < {a.detected_below}, FALSE) AND coalesce(n < {a.detected_below}, FALSE) THEN 'positive'
                        WHEN coalesce(o >= {a.detected_below} AND o < {a.grey_below}, FALSE)
                             OR coalesce(n >= {a.detected_below} AND n < {a.grey_below}, FALSE) THEN 'grey'
                        WHEN coalesce(o < {a.detected_below}, FALSE) OR coalesce(n < {a.detected_below}, FALSE) THEN 'single_target'
                        ELSE 'negative' END AS first_call,
                   CASE WHEN NOT coalesce(ic < {a.grey_below}, FALSE) THEN 'invalid'
                        WHEN coalesce(o < {a.grey_below}, FALSE) AND coalesce(n < {a.grey_below}, FALSE) THEN 'positive'
                        WHEN coalesce(o < {a.grey_below}, FALSE) OR coalesce(n < {a.grey_below}, FALSE) THEN 'single_target'
                        ELSE 'negative' END AS rerun_call
            FROM runs r JOIN qc q USING (lab_id, run_id, plate_id)
            WHERE q.valid AND r.finished_at <= as_of
        )
        SELECT f.tube_barcode,
               CASE WHEN f.first_call IN ('positive', 'negative') THEN f.first_call
                    WHEN s.tube_barcode IS NOT NULL THEN s.rerun_call ELSE 'rerun' END AS call
        FROM h f LEFT JOIN h s ON s.tube_barcode = f.tube_barcode AND s.attempt = 2
        WHERE f.attempt = 1""")


def place_outside_scans(con: duckdb.DuckDBPyConnection) -> dict:
    """The round rule for the scans outside every window: a single-tube person scan joins the
    round of its person's re-sampling order (as of ``infinity``), a seal or void its tube's; the
    rest waits (a single-tube person scan) or is quarantined."""
    con.execute("""CREATE OR REPLACE TEMP TABLE candidates AS
        SELECT DISTINCT person_key FROM scans_outside WHERE event IN ('add', 'void') AND capacity = 1""")
    con.execute("""CREATE OR REPLACE TEMP TABLE ordered AS
        WITH c AS (SELECT * FROM custody()),
        m AS (SELECT * FROM members() WHERE person_key IN (SELECT person_key FROM candidates)),
        k AS (SELECT * FROM calls(TIMESTAMPTZ 'infinity')),
        sources AS (
            SELECT round_id, tube_barcode, 'tube_refused' AS reason FROM c WHERE refused
            UNION ALL SELECT round_id, tube_barcode, 'tube_lost' FROM c WHERE lost_ever
            UNION ALL
            SELECT c.round_id, c.tube_barcode,
                   CASE WHEN k.call = 'invalid' THEN 'invalid' WHEN k.call = 'positive' THEN 'pool_positive'
                        ELSE 'single_target' END
            FROM k JOIN c USING (tube_barcode)
            WHERE k.call = 'invalid' OR (c.capacity > 1 AND k.call IN ('positive', 'single_target'))
        ), raised AS (
            SELECT s.round_id, m.person_key, s.reason, s.tube_barcode AS source_tube
            FROM sources s JOIN m USING (round_id, tube_barcode)
        ), good AS (
            SELECT m.round_id, m.person_key, m.tube_barcode, c.resample
            FROM m JOIN c USING (round_id, tube_barcode) WHERE NOT c.refused AND NOT c.lost_ever
        ), kept AS (
            SELECT o.* FROM raised o
            WHERE o.reason IN ('pool_positive', 'single_target')
               OR NOT EXISTS (SELECT 1 FROM good g WHERE g.round_id = o.round_id AND g.person_key = o.person_key
                              AND NOT g.resample AND g.tube_barcode <> o.source_tube)
        )
        SELECT k.person_key, arg_max(k.round_id, rd.starts_at) AS round_id
        FROM kept k JOIN rounds rd USING (round_id) GROUP BY k.person_key""")
    con.execute("""CREATE OR REPLACE TEMP TABLE placed AS
        WITH by_row AS (
            SELECT s.* EXCLUDE (round_id), o.round_id AS row_round
            FROM scans_outside s LEFT JOIN ordered o
              ON s.event IN ('add', 'void') AND s.capacity = 1 AND o.person_key = s.person_key
        ), tube_round AS (
            SELECT tube_barcode, arg_max(round_id, resample) AS round_id, bool_or(resample) AS resample FROM (
                SELECT tube_barcode, row_round AS round_id, TRUE AS resample FROM by_row WHERE row_round IS NOT NULL
                UNION ALL
                SELECT DISTINCT tube_barcode, round_id, resample FROM scans
                WHERE tube_barcode IN (SELECT tube_barcode FROM by_row WHERE row_round IS NULL)
            ) GROUP BY tube_barcode
        )
        SELECT b.* EXCLUDE (row_round), coalesce(b.row_round, t.round_id) AS round_id,
               coalesce(b.row_round IS NOT NULL OR t.resample, FALSE) AS resample
        FROM by_row b LEFT JOIN tube_round t ON b.row_round IS NULL AND t.tube_barcode = b.tube_barcode""")
    con.execute("INSERT INTO scans SELECT scanned_at, site_id, collector_id, tube_barcode, event, person_key, capacity, "
                "round_id, resample FROM placed WHERE round_id IS NOT NULL")
    placed, waiting = con.sql("""SELECT count(*) FILTER (WHERE round_id IS NOT NULL),
        count(*) FILTER (WHERE round_id IS NULL AND event IN ('add', 'void') AND capacity = 1) FROM placed""").fetchall()[0]
    left = count(con, "SELECT count(*) FROM placed") - placed - waiting
    con.execute("DELETE FROM scans_outside")
    return {"orders_people": count(con, "SELECT count(*) FROM ordered"), "placed": placed, "waiting": waiting,
            "outside_rounds": left}


def link_resamples(con: duckdb.DuckDBPyConnection, spec: dict) -> dict:
    """The next morning's files (re-sample scans, their boxes, receipts and results) in bulk,
    then the round rule places the scans outside the window."""
    files = spec["files"]
    define_rules(con)
    scans = _load_scans(con, files)
    custody = _load_custody(con, files)
    results = _load_results(con, files)
    rule = place_outside_scans(con)
    out = {k: scans.get(k, 0) + custody.get(k, 0) + results.get(k, 0)
           for k in ("files", "rows_read", "rows_quarantined", "rows_accepted")}
    out["rows_quarantined"] += rule["outside_rounds"]
    out["rows_accepted"] -= rule["outside_rounds"]
    return {**out, **rule}


def link_coverage(con: duckdb.DuckDBPyConnection, spec: dict) -> dict:
    """Coverage per grid as of the report's time (``reporting.coverage.coverage``'s grid rows),
    written to ``floor_coverage.parquet``; people sampled, tubes, positive pools."""
    define_rules(con)
    rid = spec["truth"]["round"]["id"]
    as_of = datetime.fromisoformat(spec["as_of"])
    con.execute("""CREATE OR REPLACE TEMP TABLE c AS SELECT * FROM custody() WHERE round_id = $rid""", {"rid": rid})
    con.execute("""CREATE OR REPLACE TEMP TABLE sampled AS
        SELECT DISTINCT m.person_key FROM members() m JOIN c USING (round_id, tube_barcode)
        WHERE m.round_id = $rid AND m.added_at <= $as_of AND NOT (c.refused AND c.received_at <= $as_of)""",
                {"rid": rid, "as_of": as_of})
    con.execute("""CREATE OR REPLACE TEMP TABLE floor_coverage AS
        SELECT reg.grid, count(*) AS registered, count(s.person_key) AS sampled,
               round(count(s.person_key) / count(*), 4) AS coverage
        FROM register reg JOIN rounds r ON r.round_id = $rid LEFT JOIN sampled s USING (person_key)
        WHERE r.districts IS NULL OR list_contains(r.districts, reg.district)
        GROUP BY reg.grid ORDER BY reg.grid""", {"rid": rid})
    # a positive pool: a pooled tube called positive or persisting single target with members to
    # re-sample (a pool whose only person was voided raises no order, in tubetrail neither)
    pools = count(con, f"""SELECT count(*) FROM calls('{as_of.isoformat()}'::TIMESTAMPTZ) k JOIN c USING (tube_barcode)
                          WHERE c.capacity > 1 AND k.call IN ('positive', 'single_target')
                            AND k.tube_barcode IN (SELECT tube_barcode FROM members() WHERE round_id = '{rid}')""")
    out = Path(spec["out"])
    con.execute(f"COPY floor_coverage TO '{out}' (FORMAT parquet)")
    grids, registered, sampled = con.sql("SELECT count(*), sum(registered), sum(sampled) FROM floor_coverage").fetchall()[0]
    return {"grids": grids, "registered": int(registered), "sampled": int(sampled),
            "tubes": count(con, "SELECT count(*) FROM c"), "pools": pools}


LINK_FUNCTIONS = {"register": link_register, "collect": link_collect, "deliver": link_deliver, "test": link_test,
                  "re-samples": link_resamples, "coverage": link_coverage}


def child_floor(spec: dict) -> dict:
    """One link of the floor, in this process (``bench.city --child``): its work timed inside."""
    if spec["link"] == "register":
        Path(spec["floor_db"]).unlink(missing_ok=True)
    con = connect(spec)
    try:
        start = time.perf_counter()
        out = LINK_FUNCTIONS[spec["link"]](con, spec)
        con.execute("CHECKPOINT")
        out["work_s"] = time.perf_counter() - start
    finally:
        con.close()
    return out


def floor_files(links: dict[str, list], held: list | None) -> dict[str, list]:
    """The inbox's files per floor link: tubetrail's links (``bench.city.plan_links``), the
    held-back results file with the other results, and stock counts left out (the floor's
    answers do not read them)."""
    return {
        "register": [f for f in links["reference and register"] if f[0] in ("sites", "labs", "register")],
        "collect": links["collect (scans)"],
        "deliver": links["deliver (boxes, receipts)"],
        "test": links["test (results)"] + ([held] if held else []),
        "re-samples": links["re-samples (next morning)"],
        "coverage": [],
    }


def compare(floor: dict, tubetrail: dict, facts: Path, floor_coverage: Path) -> dict:
    """Assert the floor's coverage per grid and counts equal tubetrail's (``tt_coverage.parquet``
    and ``child_logic``'s figures); fail loudly with the first differences."""
    mine = duckdb.sql(f"SELECT grid, registered, sampled, coverage::DOUBLE AS coverage FROM '{floor_coverage}' ORDER BY grid").fetchall()
    theirs = duckdb.sql(f"SELECT grid, registered, sampled, coverage::DOUBLE AS coverage FROM '{facts / 'tt_coverage.parquet'}' "
                        "ORDER BY grid").fetchall()
    if [r[0] for r in mine] != [r[0] for r in theirs]:
        raise AssertionError(f"floor: the grids differ from tubetrail's ({len(mine)} against {len(theirs)})")
    differ = [(a[0], a[1:], b[1:]) for a, b in zip(mine, theirs) if a[1] != b[1] or a[2] != b[2] or abs(a[3] - b[3]) > 1e-9]
    if differ:
        raise AssertionError(f"floor: coverage differs from tubetrail's in {len(differ)} grid(s), e.g. {differ[:3]} "
                             "(grid, floor's (registered, sampled, coverage), tubetrail's)")
    for name in ("registered", "sampled", "tubes", "pools"):
        if floor[name] != tubetrail[name]:
            raise AssertionError(f"floor: {name} {floor[name]:,} against tubetrail's {tubetrail[name]:,}")
    return {"grids": len(mine), "registered": floor["registered"], "sampled": floor["sampled"], "tubes": floor["tubes"],
            "pools": floor["pools"], "equal": True}


def ratios(links: dict, floor: dict) -> dict[str, float | None]:
    """tubetrail ÷ floor per floor link (wall time of the child processes, from the parent), and
    end to end (tubetrail's links inbox → report against the floor's links inbox → coverage)."""
    out: dict[str, float | None] = {}
    for name, theirs in COMPARED.items():
        t = sum(links[n]["wall_s"] for n in theirs if n in links)
        f = floor["links"].get(name, {}).get("wall_s")
        out[name] = round(t / f, 2) if f and t else None
    return out
