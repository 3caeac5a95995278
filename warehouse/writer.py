"""The single writer: every INSERT, UPDATE and DELETE of the warehouse is in this module.

A batch of files is taken in one transaction (:func:`record_batch`): each file's accepted rows,
quarantined rows and ledger entry commit together or not at all, so a retry, a re-run or a kill
-9 halfway leaves the warehouse as one clean run would. A later file that changes a row amends it and the amendment is appended to
``audit`` with when, by which flow run and why; nothing is overwritten silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from kernel.rules import LINE, WARNING_PREFIX, StageRule, StageWarning
from warehouse.connection import registered, transaction
from kernel.sql import INDEX_LOOKUP_MAX_KEYS, sql_key_lookup, sql_text_list
from warehouse.schema import INDEXED_UPSERT_KEYS, UPSERT_KEYS

if TYPE_CHECKING:
    from reporting.alerts import OutboxAlert


@dataclass(frozen=True)
class FileOutcome:
    """What taking one file did: counts and reasons only, never row content."""

    kind: str
    file_name: str
    content_hash: str
    status: str  # accepted | refused | skipped
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    message: str = ""


def ledger_entry(con: duckdb.DuckDBPyConnection, content_hash: str) -> tuple | None:
    rows = con.execute(
        "SELECT status, file_name, rows_read, rows_accepted, rows_quarantined FROM ingest_ledger"
        " WHERE content_hash = ?",
        [content_hash],
    ).fetchall()
    return rows[0] if rows else None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def record_alerts(con: duckdb.DuckDBPyConnection, alerts: Sequence[OutboxAlert]) -> None:
    """Put alerts in the outbox, ``pending``, inside the caller's transaction: an alert already
    there (same kind and subject) is not recorded again."""
    if not alerts:
        return
    # one statement for all (a next-morning results file raises an alert per positive re-sample:
    # one INSERT per alert cost seconds at city scale), in the list's order; of alerts repeated
    # in the list the first is kept, as one INSERT each in turn would keep it (an alert already in
    # the outbox is left out by the anti-joins, not by ON CONFLICT, which here loses the order)
    firsts: dict[str, OutboxAlert] = {}
    for a in alerts:
        firsts.setdefault(a.alert_id, a)
    con.execute(
        """INSERT INTO alert_outbox (alert_id, kind, subject, round_id, payload, raised_at, source_hash, state, attempts,
                                     recorded_at)
        SELECT a.alert_id, a.kind, a.subject, a.round_id, a.payload::JSON, a.raised_at, a.source_hash, 'pending', 0, $now
        FROM (SELECT unnest($alerts, max_depth := 2)) a
        WHERE a.alert_id NOT IN (SELECT alert_id FROM alert_outbox)
          AND NOT EXISTS (SELECT 1 FROM alert_outbox o WHERE o.kind = a.kind AND o.subject = a.subject)""",
        {"now": _now(), "alerts": [
            {"alert_id": a.alert_id, "kind": a.kind, "subject": a.subject, "round_id": a.round_id,
             "payload": json.dumps(a.payload, ensure_ascii=False), "raised_at": a.raised_at, "source_hash": a.source_hash}
            for a in firsts.values()]},
    )


def raise_alerts(con: duckdb.DuckDBPyConnection, alerts: Sequence[OutboxAlert]) -> int:
    """:func:`record_alerts` in a transaction of its own (alerts judged at a time, not raised by
    one file's facts); returns how many were found."""
    with transaction(con):
        record_alerts(con, alerts)
    return len(alerts)


@dataclass(frozen=True)
class PendingAlert:
    alert_id: str
    kind: str
    subject: str
    round_id: str | None
    payload: dict
    raised_at: datetime
    attempts: int


def pending_alerts(con: duckdb.DuckDBPyConnection) -> list[PendingAlert]:
    """The outbox's pending alerts, oldest first (a read)."""
    return [
        PendingAlert(alert_id, kind, subject, round_id, json.loads(payload), raised_at, attempts)
        for alert_id, kind, subject, round_id, payload, raised_at, attempts in con.execute(
            "SELECT alert_id, kind, subject, round_id, payload, raised_at, attempts FROM alert_outbox"
            " WHERE state = 'pending' ORDER BY raised_at, alert_id"
        ).fetchall()
    ]


def warehouse_id(con: duckdb.DuckDBPyConnection) -> str:
    """This warehouse's own id (migration 5): tells its alerts apart from another warehouse's
    on a shared Prefect server."""
    return con.execute("SELECT value FROM warehouse_settings WHERE name = 'warehouse_id'").fetchall()[0][0]


def count_pending_alerts(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(*) FROM alert_outbox WHERE state = 'pending'").fetchall()[0][0]


def record_alert_attempts(con: duckdb.DuckDBPyConnection, alert_ids: Sequence[str]) -> None:
    """Count a publishing attempt before it starts: an alert found pending with attempts > 0 may
    have been published by a run that died before marking it."""
    if alert_ids:
        con.execute("UPDATE alert_outbox SET attempts = attempts + 1 WHERE state = 'pending' AND alert_id IN"
                    " (SELECT unnest(?::VARCHAR[]))", [list(alert_ids)])


def mark_alert_published(con: duckdb.DuckDBPyConnection, alert_id: str, run_id: str | None) -> None:
    con.execute("UPDATE alert_outbox SET state = 'published', published_at = ?, flow_run_id = ?"
                " WHERE alert_id = ? AND state = 'pending'", [_now(), run_id, alert_id])


STAGE = "stage"


def attach_stage(con: duckdb.DuckDBPyConnection) -> None:
    """Attach a batch's staging database (from :mod:`ingest.take`) as ``stage``: in memory, so
    its rows are never compressed, written or checkpointed (issue 15: a file-backed stage cost a
    tenth of a scans batch); beyond the session's ``memory_limit`` DuckDB spills it to the
    session's ``temp_directory`` (the batch's staging folder)."""
    con.execute(f"ATTACH ':memory:' AS {STAGE}")


def detach_stage(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"DETACH {STAGE}")


def apply_stage_rule(con: duckdb.DuckDBPyConnection, rule: StageRule,
                     before_full_rule: Callable[[], None] | None = None) -> None:
    """Run a rule that needs the warehouse over the staged rows: rows it leaves without
    ``rule.required_column`` move to the staged quarantine (a scratch database, not the warehouse).
    ``before_full_rule`` runs first when the rule's quick path does not apply (the derived views
    the full rule reads: a batch of scans inside the round's window defines none).

    The rule reads ``incoming``, a view of the staged rows with their ``person_key`` (the HMAC
    computed once a row, inside the rule's own pass), and writes its rows straight into the
    stage as its new ``accepted`` table: no copy of the rows before the rule, none after it
    (issue 15: the two copies and a sort were a third of a scans batch). The rule's rows come out
    nearly, not exactly, in ``_line`` order; :func:`record_batch`'s inserts write each file's
    rows in its line order (``staged_order``)."""
    columns = [c for c in con.sql(f"SELECT * FROM {STAGE}.accepted LIMIT 0").columns]
    data = [c for c in columns if c != LINE and not c.startswith(WARNING_PREFIX)]
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW incoming AS
        SELECT *, CASE WHEN id_type IS NOT NULL THEN person_key(id_type, id_number) END AS person_key
        FROM {STAGE}.accepted"""
    )
    try:
        if rule.quick_sql and rule.quick_when_sql and con.sql(rule.quick_when_sql).fetchall()[0][0]:
            sql = rule.quick_sql
        else:
            if before_full_rule is not None:
                before_full_rule()
            sql = rule.sql(con) if callable(rule.sql) else rule.sql
        con.execute(f"CREATE OR REPLACE TABLE {STAGE}.ruled AS {sql}")
    finally:
        con.execute("DROP VIEW incoming")
    packed = ", ".join(f'"{c}" := "{c}"' for c in data)
    kept = f'"{rule.required_column}" IS NOT NULL' + (f' OR coalesce("{rule.hold_column}", FALSE)' if rule.hold_column else "")
    con.execute(
        f"""INSERT INTO {STAGE}.quarantined SELECT {LINE}, ?, ?, to_json(struct_pack({packed}))
        FROM {STAGE}.ruled WHERE NOT ({kept})""",
        [rule.column, rule.reason],
    )
    con.execute(f"DELETE FROM {STAGE}.ruled WHERE NOT ({kept})")
    con.execute(f"DROP TABLE {STAGE}.accepted; ALTER TABLE {STAGE}.ruled RENAME TO accepted")


def flag_staged(con: duckdb.DuckDBPyConnection, warning: StageWarning) -> int:
    """Mark the staged rows (a scratch database, not the warehouse) that get a warning needing
    the warehouse: a ``warning: <name>`` column, true where ``warning.condition`` holds. The rows
    are kept. Returns how many got it."""
    column = f"{WARNING_PREFIX}{warning.name}".replace('"', "'")
    con.execute(f"""CREATE OR REPLACE TABLE {STAGE}.accepted AS
                    SELECT *, coalesce(({warning.condition}), FALSE) AS "{column}" FROM {STAGE}.accepted ORDER BY {LINE}""")
    return int(con.sql(f'SELECT count(*) FILTER (WHERE "{column}") FROM {STAGE}.accepted').fetchall()[0][0])


#: a batch's staged rows carry their file in ``_line``: ``file index << FILE_LINE_SHIFT | line``
FILE_LINE_SHIFT = 32
LINE_MASK = (1 << FILE_LINE_SHIFT) - 1


@dataclass(frozen=True)
class StagedFile:
    """One file of a batch staged in ``stage`` (``ingest.take``): its rows are those of
    ``stage.accepted`` and ``stage.quarantined`` whose ``_line`` carries ``index``; a refused
    file has ``refusal`` (its message) and ``alerts`` instead of rows."""

    index: int
    content_hash: str
    kind: str
    file_name: str
    size_bytes: int
    file_format: str = ""
    rows_read: int = 0
    warnings: dict[str, int] = field(default_factory=dict)
    refusal: str | None = None
    alerts: Sequence[OutboxAlert] = ()


def ledger_entries(con: duckdb.DuckDBPyConnection, content_hashes: Sequence[str]) -> dict[str, tuple]:
    """:func:`ledger_entry` for many files in one query: content hash → (status, file name, …)."""
    rows = con.execute(
        "SELECT content_hash, status, file_name, rows_read, rows_accepted, rows_quarantined FROM ingest_ledger"
        " WHERE content_hash IN (SELECT unnest(?::VARCHAR[]))",
        [list(content_hashes)],
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def staged_file_of(column: str = LINE) -> str:
    """SQL: the file index of a staged row."""
    return f"({column} >> {FILE_LINE_SHIFT})"


def record_batch(
    con: duckdb.DuckDBPyConnection,
    files: Sequence[StagedFile],
    *,
    apply: Callable[[duckdb.DuckDBPyConnection, str | None], None],
    run_id: str | None,
    announce: Callable[[duckdb.DuckDBPyConnection, Sequence[str]], Sequence[Sequence[OutboxAlert]]] | None = None,
    settle: Callable[[duckdb.DuckDBPyConnection, Sequence[str], str | None], object] | None = None,
    apart: Callable[[duckdb.DuckDBPyConnection], bool] | None = None,
    appends: bool = False,
) -> list[FileOutcome]:
    """Take a staged batch (attached as ``stage``) in one transaction: every file's facts,
    quarantine rows, ledger entry and alerts commit together or not at all, file after file in
    the batch's order, exactly as when taken one by one. ``apply(con, run_id)`` writes accepted
    rows, which it finds in the temporary view ``staged``: the file columns, ``source_hash`` (the
    row's file), ``source_line`` and ``staged_order``, the order to write them in (file after
    file, each in line order: a stage rule's output holds them nearly so, not exactly, so every
    insert orders by it). ``settle(con, content_hashes, run_id)`` runs after their
    ledger entries (:func:`waiting_scans_settler`); ``announce(con, content_hashes)`` says what
    their facts raise, a list of alerts per file. A refused file gets its ledger entry and
    alerts; a file the ledger holds already (an earlier attempt of this batch) is skipped.

    Settle and announce run once for the batch, after all its facts, when ``apart(con)`` (asked
    once, before any fact is written) says the staged files are apart: their facts concern
    different tubes, plates and waiting people, so that one settle and one announce give what
    file after file gives (the same scans placed, audit rows in the same order, the same alerts);
    else (or without ``apart``) file after file, each right after its own facts.

    ``apply`` sees one file's rows at a time, unless the feed ``appends`` (its rows are facts
    appended in ``staged_order``, so one insert of several files' rows writes what file after
    file writes) and its files raise nothing (no settle, no announce) or are apart: then
    ``staged`` holds every file taken now and ``apply`` runs once. Issue 15: a collect batch of
    243 scan files wrote 5.2 M scans in 243 inserts of 42 ms each.

    A batch that wrote counts towards the next vacuum (:func:`note_vacuum_debt`), which sets
    whether the session's closing checkpoint merges."""
    taken = [f for f in files if f.refusal is None]
    accepted_by: dict[int, int] = {}
    quarantined_by: dict[int, dict[str, int]] = {}
    columns: list[str] = []
    if taken:
        accepted_by = dict(con.sql(f"SELECT {staged_file_of()}, count(*) FROM {STAGE}.accepted GROUP BY ALL").fetchall())
        for index, reason, n in con.sql(
                f"SELECT {staged_file_of()}, reason, count(*) FROM {STAGE}.quarantined GROUP BY ALL ORDER BY 1, 2").fetchall():
            quarantined_by.setdefault(index, {})[reason] = n
        columns = con.sql(f"SELECT * FROM {STAGE}.accepted LIMIT 0").columns
    for f in taken:
        accepted, quarantined = accepted_by.get(f.index, 0), sum(quarantined_by.get(f.index, {}).values())
        if accepted + quarantined != f.rows_read:
            raise AssertionError(f"{f.file_name}: rows read {f.rows_read} != accepted {accepted} + quarantined {quarantined}")
    exclude = ", ".join(f'"{c}"' for c in [LINE, *(c for c in columns if c.startswith(WARNING_PREFIX))])
    # feeds whose files raise nothing (no settle, no announce), and batches whose files are apart:
    # quarantine and ledger entries in one statement each for the batch; the others file after
    # file, in each file's order
    per_file = settle is not None or announce is not None
    outcomes: list[FileOutcome] = []
    ledger_rows: list[list] = []
    now = _now()
    with ExitStack() as afterwards, transaction(con):
        seen = ledger_entries(con, [f.content_hash for f in files])
        together = per_file and bool(taken) and apart is not None and apart(con)
        at_once = appends and (not per_file or together)  # one ``apply`` for every file taken now
        writing = [f for f in taken if f.content_hash not in seen]
        if writing:
            _define_staged(con, afterwards, writing, exclude)
        if at_once and writing:
            _narrow_staged(con, 0, _STAGED_ALL)
            apply(con, run_id)
        settled: list[str] = []  # the files taken now, in order: settled and announced together
        for f in files:
            now = _now()
            if f.content_hash in seen:  # taken by an earlier attempt of this batch
                outcomes.append(FileOutcome(f.kind, f.file_name, f.content_hash, "skipped", message="seen before"))
                continue
            if f.refusal is not None:
                con.execute(
                    "INSERT INTO ingest_ledger (content_hash, kind, file_name, size_bytes, status, rows_read,"
                    " rows_accepted, rows_quarantined, message, ingested_at, flow_run_id)"
                    " VALUES (?, ?, ?, ?, 'refused', 0, 0, 0, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [f.content_hash, f.kind, f.file_name, f.size_bytes, f.refusal, now, run_id],
                )
                record_alerts(con, f.alerts)
                outcomes.append(FileOutcome(f.kind, f.file_name, f.content_hash, "refused", message=f.refusal))
                continue
            if not at_once:
                _narrow_staged(con, f.index << FILE_LINE_SHIFT, (f.index + 1) << FILE_LINE_SHIFT)
                apply(con, run_id)
            accepted = accepted_by.get(f.index, 0)
            by_reason = quarantined_by.get(f.index, {})
            quarantined = sum(by_reason.values())
            ledger_rows.append([f.content_hash, f.kind, f.file_name, f.file_format, f.size_bytes, f.rows_read, accepted,
                                quarantined, json.dumps(f.warnings, ensure_ascii=False) if f.warnings else None, now,
                                run_id])
            seen[f.content_hash] = ("accepted", f.file_name)
            settled.append(f.content_hash)
            if per_file and not together:
                _record_taken(con, [f], ledger_rows, run_id, now)
                ledger_rows = []
                if settle is not None:  # after the ledger entry: the derived calls read the file's facts through it
                    settle(con, [f.content_hash], run_id)
                if announce is not None:
                    record_alerts(con, announce(con, [f.content_hash])[0])
            outcomes.append(FileOutcome(f.kind, f.file_name, f.content_hash, "accepted", rows_read=f.rows_read,
                                        rows_accepted=accepted, rows_quarantined=quarantined,
                                        quarantined_by_reason=_fold_reasons(by_reason), warnings=dict(f.warnings)))
        if ledger_rows:
            taken_now = {row[0] for row in ledger_rows}
            _record_taken(con, [f for f in taken if f.content_hash in taken_now], ledger_rows, run_id, now)
        if together and settled:  # once for the batch, after every file's facts and ledger entry
            if settle is not None:
                settle(con, settled, run_id)
            if announce is not None:
                record_alerts(con, [a for alerts in announce(con, settled) for a in alerts])
        written = [o for o in outcomes if o.status != "skipped"]
        vacuum = note_vacuum_debt(con, sum(o.rows_read for o in written)) if written else None
    if vacuum is not None:
        vacuum_at_close(con, vacuum)
    return outcomes


#: the upper end of ``_line`` for :func:`_narrow_staged` over every file of a batch
_STAGED_ALL = (1 << 63) - 1


def _define_staged(con: duckdb.DuckDBPyConnection, afterwards: ExitStack, files: Sequence[StagedFile],
                   exclude: str) -> None:
    """The view ``staged`` (see :func:`record_batch`) over the staged rows of ``files``, narrowed
    to a range of ``_line`` (:func:`_narrow_staged`: one file's, or every file's); the stage keeps
    them in file order, or nearly, so row groups of other files are skipped. Dropped when
    ``afterwards`` closes, after the commit or the rollback."""
    hashes = pl.DataFrame({"staged_file": [f.index for f in files], "source_hash": [f.content_hash for f in files]},
                          schema={"staged_file": pl.Int64, "source_hash": pl.Utf8})
    afterwards.enter_context(registered(con, "staged_hashes", hashes.to_arrow()))
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW staged AS SELECT a.* EXCLUDE ({exclude}), h.source_hash,"
        f" a.{LINE} & {LINE_MASK} AS source_line, a.{LINE} AS staged_order"
        f" FROM {STAGE}.accepted a JOIN staged_hashes h ON h.staged_file = {staged_file_of(f'a.{LINE}')}"
        f" WHERE a.{LINE} >= getvariable('ingest_lo') AND a.{LINE} < getvariable('ingest_hi')")
    afterwards.callback(con.execute, "DROP VIEW IF EXISTS staged")


def _narrow_staged(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> None:
    """The rows the view ``staged`` holds: ``lo <= _line < hi``."""
    con.execute(f"SET VARIABLE ingest_lo = {lo}::BIGINT; SET VARIABLE ingest_hi = {hi}::BIGINT")


#: issue 15: the checkpoint at a batch's close vacuums (merges the partly filled row groups at
#: the tails of the tables) when the batches since the last one that did, this one included,
#: are this many ...
VACUUM_EVERY_BATCHES = 4
#: ... or have read this many rows (:func:`note_vacuum_debt`)
VACUUM_FROM_ROWS = 1_000_000
#: the ``warehouse_settings`` row holding the batches and rows since the last vacuum
VACUUM_DEBT = "vacuum_debt"


def note_vacuum_debt(con: duckdb.DuckDBPyConnection, rows_read: int) -> bool:
    """Whether this batch's closing checkpoint vacuums; in the batch's transaction, so the count
    moves with the facts (issue 15).

    DuckDB's checkpoint merges a table's partly filled tail row groups into full ones. After a
    small batch that rewrite is most of the batch: a 50,000-scan micro-batch into the 25.7 M
    city's ``scans`` rewrote about 360,000 rows at its close, 0.5 s of 1.0 s (measured
    2026-12-01). Never vacuuming small batches left a partly filled row group per batch in every
    table it wrote, and the whole 25.7 M round was 3 % slower for it (the later reads and merges).
    So a batch vacuums when the batches since the last vacuum, this one included, reach
    :data:`VACUUM_EVERY_BATCHES` or have read :data:`VACUUM_FROM_ROWS` rows: at most three
    small batches' row groups wait, and the merge's cost is shared. The facts are the same
    either way; only their layout on disk differs. 真空合并：每几批一次。"""
    row = con.execute("SELECT value FROM warehouse_settings WHERE name = ?", [VACUUM_DEBT]).fetchall()
    debt = json.loads(row[0][0]) if row else {"batches": 0, "rows": 0}
    batches, rows = debt["batches"] + 1, debt["rows"] + rows_read
    vacuum = batches >= VACUUM_EVERY_BATCHES or rows >= VACUUM_FROM_ROWS
    if vacuum:
        batches, rows = 0, 0
    _set_vacuum_debt(con, batches, rows)
    return vacuum


def _set_vacuum_debt(con: duckdb.DuckDBPyConnection, batches: int, rows: int) -> None:
    con.execute("INSERT INTO warehouse_settings VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [VACUUM_DEBT, json.dumps({"batches": batches, "rows": rows})])


def merge_tail_row_groups(con: duckdb.DuckDBPyConnection) -> None:
    """Merge now what small batches left (a checkpoint that vacuums) and clear their count: a
    settled layout, so that what a measurement times is its own batches' cost, not the merge of
    the batches before it (``bench.city``'s steps)."""
    with transaction(con):
        _set_vacuum_debt(con, 0, 0)
    vacuum_at_close(con, True)
    con.execute("CHECKPOINT")


def vacuum_at_close(con: duckdb.DuckDBPyConnection, vacuum: bool) -> None:
    """The session's closing checkpoint vacuums (DuckDB's default) or not (``max_vacuum_tasks = 0``)."""
    con.execute("RESET max_vacuum_tasks" if vacuum else "SET max_vacuum_tasks = 0")


def _record_taken(con: duckdb.DuckDBPyConnection, files: Sequence[StagedFile], ledger_rows: list[list],
                  run_id: str | None, now: datetime) -> None:
    """The quarantine rows and ledger entries of taken files (in the batch's transaction); the
    rows file after file, each in line order (the join alone gives them in the order its
    threads finish: two runs of one inbox stored the register's quarantine in two orders)."""
    con.execute(
        f"""INSERT INTO quarantine
            SELECT f.content_hash, f.kind, f.file_name, q.{LINE} & {LINE_MASK}, q."column", q.reason, q.raw, ?, ?
            FROM {STAGE}.quarantined q
            JOIN (SELECT unnest(?::BIGINT[]) AS i, unnest(?::VARCHAR[]) AS content_hash, unnest(?::VARCHAR[]) AS kind,
                         unnest(?::VARCHAR[]) AS file_name) f ON q.{LINE} >> {FILE_LINE_SHIFT} = f.i
            ORDER BY q.{LINE}""",
        [now, run_id, [f.index for f in files], [f.content_hash for f in files], [f.kind for f in files],
         [f.file_name for f in files]],
    )
    con.executemany("INSERT INTO ingest_ledger VALUES (?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?, NULL, ?, ?)", ledger_rows)


def _fold_reasons(by_reason: dict[str, int]) -> dict[str, int]:
    folded: dict[str, int] = {}
    for reason, count in by_reason.items():
        key = reason.split(" (", 1)[0] if reason.startswith(("duplicate row", "conflicting duplicate")) else reason
        folded[key] = folded.get(key, 0) + count
    return folded


#: A file with up to ``INDEX_LOOKUP_MAX_KEYS`` keys (``kernel.sql``) — or up to this share of the
#: table's rows, when that is more — finds its rows through the table's unique index: an IN list
#: of its keys (``kernel.sql.sql_key_lookup``; DuckDB's own rule: ``index_scan_max_count`` 2048,
#: ``index_scan_percentage`` 0.001). A bigger file joins the table once (the file is the hash
#: join's build side). At 25.7 M people an update file of 2,954 rows cost 6.1 s of CPU by the
#: join (every column of the register read) and ≈ 1 s through the index.
INDEX_LOOKUP_SHARE = 0.001


def upsert_with_audit(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str,
    source_sql: str,
    columns: Sequence[str],
    run_id: str | None,
    reason: str,
) -> None:
    """Insert new rows of ``source_sql`` (the rows of the view ``staged``, which holds one file's:
    with their ``source_hash``, ``source_line`` and ``staged_order``) into ``table``; amend changed rows (later file wins) and
    append each amendment to ``audit`` with its before and after values; an exact repeat of a row
    is left as it is (not audited, its ``source_hash`` and ``updated_at`` kept).

    Set-based and in proportion to the file, not the table: the source is computed once (the
    register's person key: one HMAC per row); the table's rows for the file's keys are found once
    (``upsert_found``), through the key's unique index when the file is small, else by one hash
    join over the key column; when none is found (a new district's register) the rows are
    simply appended. The audit, the DELETE of amended rows and the insert then work on the
    file's rows and the rows found only. Tables with a unique index take rows in key order
    (cheap index upkeep)."""
    keys = UPSERT_KEYS[table]
    data = [c for c in columns if c not in keys]
    on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
    differs = " OR ".join(f"t.{c} IS DISTINCT FROM s.{c}" for c in data)
    key_text = " || '|' || ".join(f"coalesce(CAST(s.{k} AS VARCHAR), '')" for k in keys)
    if keys == ("person_key",):
        key_text = "lower(hex(s.person_key))"
    indexed = table in INDEXED_UPSERT_KEYS and len(keys) == 1
    key_order = ", ".join(f"s.{k}" for k in keys)
    all_columns = [*columns, "source_hash", "source_line", "updated_at"]

    def insert(where: str = "") -> None:
        """The source's rows (``where``: which), in key order where an index is kept, else in
        the file's line order."""
        con.execute(
            f"INSERT INTO {table} ({', '.join(all_columns)})"
            f" SELECT {', '.join(f's.{c}' for c in columns)}, ?, s.source_line, ? FROM upsert_source s"
            f" {where} ORDER BY {key_order if indexed else 's.staged_order'}",
            [file_hash, _now()],
        )

    # the file's hash once, not a copy a row (a register file's 135,000 rows: 2 s of 50 at 5 M)
    file_hash = con.execute("SELECT source_hash FROM staged LIMIT 1").fetchall()
    file_hash = file_hash[0][0] if file_hash else None
    con.execute(f"CREATE OR REPLACE TEMP TABLE upsert_source AS SELECT * EXCLUDE (source_hash) FROM ({source_sql})")
    (rows,) = con.execute("SELECT count(*) FROM upsert_source").fetchall()[0]
    def by_index(n: int) -> bool:
        """Are ``n`` keys looked up through the index (else a join over the table)?"""
        return indexed and (n <= INDEX_LOOKUP_MAX_KEYS or n <= INDEX_LOOKUP_SHARE * _estimated_rows(con, table))

    found_sql: str | None = None
    if rows and by_index(rows):
        found_sql = f"SELECT * FROM {table} t WHERE {sql_key_lookup(con, table, keys[0], 'upsert_source')}"
    elif rows:
        # the table's key column only, probed against the file's keys (the hash join's build side)
        (hits,) = con.execute(f"SELECT count(*) FROM {table} t SEMI JOIN upsert_source s ON {on}").fetchall()[0]
        found_sql = f"SELECT t.* FROM {table} t SEMI JOIN upsert_source s ON {on}" if hits else None
    if found_sql is None:  # nobody of the file is known yet: append (nothing to audit, nothing to delete)
        if rows:
            insert()
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE upsert_found AS {found_sql}")
        # the amended rows, once: their keys, and their values before and after
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE upsert_changed AS
            SELECT {', '.join(f's.{k}' for k in keys)}, {key_text} AS entity_key,
                   to_json(struct_pack({', '.join(f't.{c}' for c in data)})) AS before,
                   to_json(struct_pack({', '.join(f's.{c}' for c in data)})) AS after
            FROM upsert_source s JOIN upsert_found t ON {on} WHERE {differs}"""
        )
        con.execute(
            f"""INSERT INTO audit (recorded_at, flow_run_id, entity, entity_key, action, reason, before, after)
            SELECT ?, ?, ?, entity_key, 'amend', ?, before, after FROM upsert_changed s ORDER BY {key_order}""",
            [_now(), run_id, table, reason],
        )
        (changed,) = con.execute("SELECT count(*) FROM upsert_changed").fetchall()[0]
        if changed and by_index(changed):
            con.execute(f"DELETE FROM {table} t WHERE {sql_key_lookup(con, table, keys[0], 'upsert_changed')}")
        elif changed:
            # DELETE … USING is a hash join: a correlated EXISTS here scanned the whole table per
            # row group (1.7 s against 0.16 s for a 24-row update file on a register of 2 M people)
            con.execute(f"DELETE FROM {table} t USING upsert_changed s WHERE {on}")
        # new and amended rows; an exact repeat of a row found stays as it is (joins on the key only)
        insert(f"WHERE NOT EXISTS (SELECT 1 FROM upsert_found t WHERE {on})"
               f" OR EXISTS (SELECT 1 FROM upsert_changed t WHERE {on})")
    # not in a ``finally``: after an error the caller's transaction is rolled back, the temp tables with it
    con.execute("DROP TABLE IF EXISTS upsert_source; DROP TABLE IF EXISTS upsert_found;"
                " DROP TABLE IF EXISTS upsert_changed")


def _estimated_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """The table's row count as the catalogue keeps it (no scan)."""
    rows = con.execute("SELECT estimated_size FROM duckdb_tables() WHERE database_name = current_database()"
                       " AND schema_name = 'main' AND table_name = ?", [table]).fetchall()
    return int(rows[0][0] or 0) if rows else 0


def apply_register(columns: Sequence[str]) -> Callable[[duckdb.DuckDBPyConnection, str | None], None]:
    """Upsert register rows by person key (later file wins, audited)."""

    def apply(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
        upsert_with_audit(
            con,
            table="register",
            source_sql="SELECT person_key(id_type, id_number) AS person_key, * FROM staged",
            columns=("person_key", *columns),
            run_id=run_id,
            reason="register row changed by a later file (later file wins)",
        )

    return apply


def apply_reference(table: str, columns: Sequence[str]) -> Callable[[duckdb.DuckDBPyConnection, str | None], None]:
    """Upsert reference rows (sites, labs, zones) by their key (later file wins, audited)."""

    def apply(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
        upsert_with_audit(
            con,
            table=table,
            source_sql="SELECT * FROM staged",
            columns=columns,
            run_id=run_id,
            reason=f"{table} row changed by a later file (later file wins)",
        )

    return apply


def apply_stock(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
    """Stock counts are facts keyed by holder, item and time (the feed's ``at``, a word SQL
    reserves, kept as ``counted_at``): a count sent again is taken once; a later file that gives
    it another quantity wins, and the amendment is audited."""
    upsert_with_audit(
        con,
        table="stock_counts",
        source_sql='SELECT "at" AS counted_at, holder, item, quantity, tests_per_unit, source_hash, source_line,'
                   ' staged_order FROM staged',
        columns=("counted_at", "holder", "item", "quantity", "tests_per_unit"),
        run_id=run_id,
        reason="a count sent again (same holder, item and time) with another quantity: the later file wins",
    )


#: a scan's facts as the stage holds them, in the order of ``scans`` (then its source columns)
#: and of ``waiting_scans`` (no round, no re-sample flag yet)
_SCAN_FACTS = ("round_id, scanned_at, site_id, collector_id, tube_barcode, event, person_key, id_type, id_number,"
               " name, phone, capacity, resample")
_WAITING_FACTS = "scanned_at, site_id, collector_id, tube_barcode, event, person_key, id_type, id_number, name, phone, capacity"


def apply_scans(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
    """Scan events are facts: appended, never changed (tubes and members are derived from them);
    their ``person_key`` is the round rule's (computed once a row, by :func:`apply_stage_rule`).
    A re-sample scan that no round holds yet (its order not raised yet) waits in
    ``waiting_scans`` until :func:`assign_waiting_scans` finds its order. Two statements for a
    batch's files (``record_batch``: the feed appends)."""
    con.execute(f"INSERT INTO scans SELECT {_SCAN_FACTS}, source_hash, source_line FROM staged"
                " WHERE round_id IS NOT NULL ORDER BY staged_order")
    con.execute(f"INSERT INTO waiting_scans SELECT {_WAITING_FACTS}, source_hash, source_line FROM staged"
                " WHERE round_id IS NULL ORDER BY staged_order")


def waiting_reach(con: duckdb.DuckDBPyConnection, file_tubes_sql: str) -> int:
    """The waiting tubes each file's tubes reach, into the temporary table ``waiting_reach``
    (``i``, ``tube_barcode``): ``file_tubes_sql`` gives each file's tubes (``i``, ``tube_barcode``);
    a file reaches the people waiting (``waiting_scans``) who have a stored scan of one of its
    tubes, and through them every waiting tube of theirs (an order is raised by the facts of a
    person's own tubes: a file about other tubes reaches nobody). Returns the waiting tubes
    reached from more than one file (0: the files' reaches are apart)."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE waiting_reach AS
        WITH file_tubes AS (SELECT DISTINCT i, tube_barcode FROM ({file_tubes_sql}) WHERE tube_barcode IS NOT NULL),
        touched AS (
            SELECT DISTINCT f.i, s.person_key FROM scans s JOIN file_tubes f USING (tube_barcode)
            WHERE s.person_key IN (SELECT person_key FROM waiting_scans WHERE person_key IS NOT NULL)
        )
        SELECT DISTINCT t.i, w.tube_barcode FROM waiting_scans w JOIN touched t USING (person_key)""")
    return con.execute("SELECT count(*) FROM (SELECT tube_barcode FROM waiting_reach GROUP BY ALL"
                       " HAVING count(DISTINCT i) > 1)").fetchall()[0][0]


def assign_waiting_scans(con: duckdb.DuckDBPyConnection, content_hashes: Sequence[str], run_id: str | None,
                         rule: StageRule, table: str = "receipts", tube_column: str = "tube_barcode") -> int:
    """Re-sample scans that waited for their order (DESIGN §8: a scan may reach the inbox before
    the results that order it) join the order's round once the facts of these files raise it: the
    scans feed's round rule (``rule``: ``sampling.rounds.ROUND_RULE``) run again over the waiting rows, in the files'
    transaction; the rows it places move to ``scans`` (with their own file and line) and the move
    is audited, one row per file whose tubes reached them, in the files' order. Only the waiting
    people these files' tubes (``<table>.<tube_column>`` of their rows) concern are looked at
    (:func:`waiting_reach`): an order is raised by the facts of a person's own tubes, so a file
    about other tubes costs one look-up, not the rule. Several files are settled at once only when
    their reaches are apart (no waiting tube reached from two of them: ``ValueError`` else; their
    facts then raise for each person what the one file reaching them raises). Needs the derived
    views. Returns the rows placed."""
    if not content_hashes or not con.execute("SELECT count(*) FROM waiting_scans").fetchall()[0][0]:
        return 0
    files = f"SELECT unnest(l) AS source_hash, unnest(range(1, len(l) + 1)) AS i FROM (SELECT {sql_text_list(content_hashes)} AS l)"
    shared = waiting_reach(con, f'SELECT f.i, trim(t."{tube_column}") AS tube_barcode FROM {table} t'
                                f" JOIN ({files}) f USING (source_hash)")
    if shared:
        raise ValueError(f"{shared} waiting tube(s) reached from several files: settle them file by file")
    # temporary tables dropped on the way out, not in a ``finally``: after an error the caller's
    # transaction is rolled back, the temporary tables with it
    con.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM waiting_scans"
                " WHERE tube_barcode IN (SELECT tube_barcode FROM waiting_reach)")
    if not con.execute("SELECT count(*) FROM incoming").fetchall()[0][0]:
        con.execute("DROP TABLE incoming; DROP TABLE waiting_reach")
        return 0
    con.execute(f"CREATE OR REPLACE TEMP TABLE ruled AS {rule.sql(con) if callable(rule.sql) else rule.sql}")
    placed = con.execute("SELECT count(*) FROM ruled WHERE round_id IS NOT NULL").fetchall()[0][0]
    if placed:
        con.execute(
            """INSERT INTO scans SELECT round_id, scanned_at, site_id, collector_id, tube_barcode, event, person_key,
                   id_type, id_number, name, phone, capacity, resample, source_hash, source_line
               FROM ruled WHERE round_id IS NOT NULL""")
        con.execute(
            """DELETE FROM waiting_scans w USING ruled r
               WHERE r.round_id IS NOT NULL AND w.source_hash = r.source_hash AND w.source_line = r.source_line""")
        by_file = [i for (i,) in con.execute(
            "SELECT DISTINCT w.i FROM ruled r JOIN waiting_reach w USING (tube_barcode)"
            " WHERE r.round_id IS NOT NULL ORDER BY 1").fetchall()]
        for i in by_file:  # one statement per file, in the files' order: the audit's order as file by file
            con.execute(
                """INSERT INTO audit (recorded_at, flow_run_id, entity, entity_key, action, reason, before, after)
                   SELECT ?, ?, 'scans', ?, 'assign_waiting',
                          're-sample scans that waited for their order joined its round', NULL,
                          to_json({rows: count(*), rounds: list(DISTINCT round_id ORDER BY round_id)})
                   FROM ruled r JOIN waiting_reach w USING (tube_barcode) WHERE r.round_id IS NOT NULL AND w.i = ?""",
                [_now(), run_id, content_hashes[i - 1], i])
    con.execute("DROP TABLE incoming; DROP TABLE ruled; DROP TABLE waiting_reach")
    return placed


@dataclass(frozen=True)
class WaitingScansSettler:
    """The ``settle`` step of the feeds whose facts raise re-sampling orders (receipts, results):
    :func:`assign_waiting_scans` for the files' tubes (``<table>.<tube_column>``), after their
    ledger entries; :meth:`apart` tells a staged batch whose files may settle at once."""

    rule: StageRule
    table: str
    tube_column: str

    def __call__(self, con: duckdb.DuckDBPyConnection, content_hashes: Sequence[str], run_id: str | None) -> int:
        return assign_waiting_scans(con, content_hashes, run_id, self.rule, self.table, self.tube_column)

    def idle(self, con: duckdb.DuckDBPyConnection) -> bool:
        """No scan waits: settling places nothing and reads no derived view."""
        return not con.execute("SELECT count(*) FROM waiting_scans").fetchall()[0][0]

    def apart(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Do the staged batch's files (``stage.accepted``, before their facts are written) reach
        waiting tubes apart, none from two files (:func:`waiting_reach`)? Then one settle after all
        of them places what settling each after its own facts places."""
        if self.idle(con):
            return True
        shared = waiting_reach(con, f'SELECT {staged_file_of()} AS i, trim("{self.tube_column}") AS tube_barcode'
                                    f" FROM {STAGE}.accepted")
        con.execute("DROP TABLE waiting_reach")
        return not shared


def waiting_scans_settler(rule: StageRule, table: str, tube_column: str) -> WaitingScansSettler:
    """The settle step of a feed whose facts raise re-sampling orders (:class:`WaitingScansSettler`)."""
    return WaitingScansSettler(rule, table, tube_column)


#: a box's facts as the stage holds them, in the order of ``manifests`` (then its source columns)
_MANIFEST_FACTS = "box_id, tube_barcode, site_id, packed_at, courier_id, departed_at, lab_id"


def apply_manifests(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
    """Manifest lines (装箱单) are facts: appended, never changed."""
    con.execute(f"INSERT INTO manifests SELECT {_MANIFEST_FACTS}, source_hash, source_line FROM staged"
                " ORDER BY staged_order")


#: a receipt's facts as the stage holds them, in the order of ``receipts`` (then its source columns)
_RECEIPT_FACTS = "lab_id, box_id, tube_barcode, received_at, condition"


def apply_receipts(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
    """Receipt lines (签收) are facts: appended, never changed."""
    con.execute(f"INSERT INTO receipts SELECT {_RECEIPT_FACTS}, source_hash, source_line FROM staged"
                " ORDER BY staged_order")


def open_round(
    con: duckdb.DuckDBPyConnection,
    *,
    round_id: str,
    starts_at: datetime,
    ends_at: datetime,
    districts: Sequence[str] | None,
    pool_size: int,
    run_id: str | None,
) -> None:
    with transaction(con):
        con.execute(
            "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
            [round_id, starts_at, ends_at, list(districts) if districts else None, pool_size, _now(), run_id],
        )
        con.execute(
            "INSERT INTO audit (recorded_at, flow_run_id, entity, entity_key, action, reason, before, after)"
            " VALUES (?, ?, 'rounds', ?, 'open', 'round opened', NULL, ?)",
            [_now(), run_id, round_id, json.dumps({"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                                                   "districts": list(districts) if districts else None,
                                                   "pool_size": pool_size})],
        )


#: the staged batch's plates that some other file reported or reports too (``stage``, so it lives
#: as long as the batch's stage): only their files look for the readings they supersede
REPORTED_AGAIN = f"{STAGE}.plates_reported_again"


def stage_plates_reported_again(con: duckdb.DuckDBPyConnection) -> int:
    """Once per results batch, before its transaction: the staged plates (lab, run, plate) that
    are stored already or staged from two files, into :data:`REPORTED_AGAIN`; returns how many.
    One look at the stored results for the batch, where each file looked at them all (at 25.7 M
    residents, 10 M readings a file)."""
    con.execute(
        f"""CREATE OR REPLACE TABLE {REPORTED_AGAIN} AS
        WITH s AS (SELECT DISTINCT {staged_file_of()} AS i, lab_id, run_id, plate_id FROM {STAGE}.accepted)
        SELECT lab_id, run_id, plate_id FROM s GROUP BY ALL HAVING count(*) > 1
        UNION
        SELECT DISTINCT r.lab_id, r.run_id, r.plate_id FROM results r SEMI JOIN s USING (lab_id, run_id, plate_id)""")
    return con.execute(f"SELECT count(*) FROM {REPORTED_AGAIN}").fetchall()[0][0]


def apply_results(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
    """Results are facts: appended, never changed (calls are derived from them). A file that
    reports a run and plate already reported by another file supersedes those readings (see
    ``lab.calling``); each such plate is appended to ``audit`` as an amendment, with the
    readings that changed counted before and after. A batch's file none of whose plates is in
    :data:`REPORTED_AGAIN` (when the batch staged it) supersedes nothing: no look at the stored
    results."""
    staged_again = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                               REPORTED_AGAIN.split(".")).fetchall()[0][0]
    if not staged_again or con.execute(
            f"SELECT count(*) FROM {REPORTED_AGAIN} SEMI JOIN staged USING (lab_id, run_id, plate_id)").fetchall()[0][0]:
        _audit_amended_plates(con, run_id)
    con.execute(
        """INSERT INTO results SELECT lab_id, run_id, plate_id, well, sample, target, ct, finished_at,
               source_format, source_hash, source_line FROM staged ORDER BY staged_order""")


def _audit_amended_plates(con: duckdb.DuckDBPyConnection, run_id: str | None) -> None:
    """One ``amend`` audit row per plate of the staged file that another file reported before."""
    con.execute(
        """INSERT INTO audit (recorded_at, flow_run_id, entity, entity_key, action, reason, before, after)
        WITH incoming AS (
            SELECT source_hash, lab_id, run_id, plate_id, count(*) AS readings,
                   count(ct) FILTER (WHERE ct IS NOT NULL) AS with_ct FROM staged GROUP BY ALL
        ), earlier AS (
            SELECT i.source_hash AS by_file, r.lab_id, r.run_id, r.plate_id, count(*) AS readings,
                   count(r.ct) AS with_ct, list(DISTINCT r.source_hash ORDER BY r.source_hash) AS files
            FROM results r JOIN incoming i USING (lab_id, run_id, plate_id)
            WHERE r.source_hash <> i.source_hash
            GROUP BY ALL
        )
        SELECT ?, ?, 'plate', e.lab_id || '|' || e.run_id || '|' || e.plate_id, 'amend',
               'results reported again by a later file: its readings supersede the earlier ones',
               to_json(struct_pack(readings := e.readings, with_ct := e.with_ct, files := e.files)),
               to_json(struct_pack(readings := i.readings, with_ct := i.with_ct, files := [i.source_hash]))
        FROM earlier e JOIN incoming i ON i.source_hash = e.by_file AND i.lab_id = e.lab_id AND i.run_id = e.run_id
                                          AND i.plate_id = e.plate_id""",
        [_now(), run_id],
    )


def record_planned_reminders(con: duckdb.DuckDBPyConnection, due: pl.DataFrame, provider: str,
                             run_id: str | None) -> int:
    """The outbox first, before any message leaves: one pending row per message id (planning
    twice in a cool-down window plans nothing new), planned at the plan's ``as_of`` (the
    ``planned_at`` column: the cool-down is judged in the event's time, never the clock's).
    Returns the rows added."""
    if due.is_empty():
        return 0
    with registered(con, "due_reminders", due.to_arrow()), transaction(con):
        before = con.execute("SELECT count(*) FROM sms_outbox").fetchall()[0][0]
        con.execute(
            """INSERT INTO sms_outbox (message_id, round_id, person_key, phone, body, params, planned_at, state,
                      attempts, provider, flow_run_id)
               SELECT message_id, round_id, person_key::UHUGEINT, phone, body, params, planned_at, 'pending', 0, ?, ?
               FROM due_reminders
               WHERE message_id NOT IN (SELECT message_id FROM sms_outbox)""",
            [provider, run_id],
        )
        added = con.execute("SELECT count(*) FROM sms_outbox").fetchall()[0][0] - before
    return added


#: the columns a sender needs of a claimed message (``notify.Message``'s order)
_CLAIMED = "message_id, phone, body, params::VARCHAR, claimed_at"


def claim_reminders(con: duckdb.DuckDBPyConnection, round_id: str, owner: str, lease_seconds: float,
                    limit: int, skip: Sequence[str] = ()) -> list[tuple]:
    """Up to ``limit`` pending messages of the round become ``sending``, owned by ``owner`` until
    the lease ends, in one transaction before any request: two senders never hold one message.
    ``skip``: messages this sender already gave up on in this run."""
    now = _now()
    return _claim(con, owner,
                  "SELECT message_id FROM sms_outbox WHERE round_id = ? AND state = 'pending'"
                  " AND message_id NOT IN (SELECT unnest(?::VARCHAR[])) ORDER BY planned_at, message_id LIMIT ?",
                  [round_id, list(skip), limit],
                  "UPDATE sms_outbox SET state = 'sending', claimed_by = ?, claimed_at = ?, lease_until = ?"
                  " WHERE message_id IN (SELECT unnest(?::VARCHAR[])) AND state = 'pending'",
                  [owner, now, now + timedelta(seconds=lease_seconds)])


def _claim(con: duckdb.DuckDBPyConnection, owner: str, select_sql: str, select_params: list, claim_sql: str,
           claim_params: list) -> list[tuple]:
    """One claiming transaction: the ids ``select_sql`` finds are claimed by ``claim_sql`` (its
    last parameter: the ids), and the rows ``owner`` now holds among them are returned."""
    with transaction(con):
        ids = [row[0] for row in con.execute(select_sql, select_params).fetchall()]
        if ids:
            con.execute(claim_sql, [*claim_params, ids])
        rows = con.execute(f"SELECT {_CLAIMED} FROM sms_outbox WHERE claimed_by = ? AND state = 'sending'"
                           " AND message_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY planned_at, message_id",
                           [owner, ids]).fetchall()
    return rows


def claim_unsettled(con: duckdb.DuckDBPyConnection, round_id: str, owner: str, lease_seconds: float,
                    settle_seconds: float) -> list[tuple]:
    """Messages that may have reached the provider, to look up (never to send): ``unknown`` ones
    older than ``settle_seconds``, and those of a sender whose lease ran out (it may have sent
    them before it died). They become ``sending`` under ``owner``'s lease, in one transaction;
    ``claimed_at`` keeps the start of the first claim (the lookup looks back to it)."""
    now = _now()
    return _claim(con, owner,
                  "SELECT message_id FROM sms_outbox WHERE round_id = ? AND ((state = 'sending' AND lease_until < ?)"
                  " OR (state = 'unknown' AND finished_at <= ?)) ORDER BY planned_at, message_id",
                  [round_id, now, now - timedelta(seconds=settle_seconds)],
                  "UPDATE sms_outbox SET state = 'sending', claimed_by = ?, claimed_at = coalesce(claimed_at, ?),"
                  " lease_until = ? WHERE message_id IN (SELECT unnest(?::VARCHAR[]))",
                  [owner, now, now + timedelta(seconds=lease_seconds)])


def record_reminder_results(con: duckdb.DuckDBPyConnection, results: pl.DataFrame, owner: str,
                            run_id: str | None = None, reconciled: bool = False) -> int:
    """What the provider answered (or, ``reconciled``, what looking it up found), per message
    claimed by ``owner``, in one transaction: ``sent``, ``failed``, ``unknown`` (may have reached
    the provider: never re-sent blindly), or ``pending`` (provably not taken: the claim is
    released, the next sender sends it under the same id). A message whose claim ``owner`` lost
    is left alone. An opted-out answer adds the person to ``sms_optouts``; a reconciled message is
    appended to ``audit``. Returns the messages recorded."""
    if results.is_empty():
        return 0
    now = _now()
    with registered(con, "sent_reminders", results.to_arrow()), transaction(con):
        con.execute("""CREATE OR REPLACE TEMP TABLE settled AS
                       SELECT r.*, o.state AS before_state, o.error AS before_error FROM sent_reminders r
                       JOIN sms_outbox o USING (message_id) WHERE o.state = 'sending' AND o.claimed_by = ?""",
                    [owner])
        if reconciled:
            con.execute(
                """INSERT INTO audit (recorded_at, flow_run_id, entity, entity_key, action, reason, before, after)
                   SELECT ?, ?, 'sms_outbox', message_id, 'reconcile',
                          'looked up at the provider: the message may have reached it',
                          to_json(struct_pack(was := coalesce(before_error, 'claimed by a sender whose lease ran out'))),
                          to_json(struct_pack(state := state, provider_message_id := provider_message_id))
                   FROM settled""",
                [now, run_id])
        con.execute(
            """UPDATE sms_outbox o SET state = r.state, attempts = o.attempts + r.attempts,
                      provider_message_id = coalesce(r.provider_message_id, o.provider_message_id),
                      error = r.error, finished_at = CASE WHEN r.state = 'pending' THEN NULL ELSE ? END,
                      claimed_by = NULL, lease_until = NULL,
                      claimed_at = CASE WHEN r.state = 'unknown' THEN o.claimed_at END
               FROM settled r WHERE o.message_id = r.message_id""",
            [now],
        )
        con.execute(
            """INSERT INTO sms_optouts SELECT DISTINCT o.person_key, ?, 'provider: opted out'
               FROM settled r JOIN sms_outbox o USING (message_id)
               WHERE r.opted_out AND o.person_key NOT IN (SELECT person_key FROM sms_optouts)""",
            [now],
        )
        recorded = con.execute("SELECT count(*) FROM settled").fetchall()[0][0]
        con.execute("DROP TABLE settled")
    return recorded


# --- result exports for the health-code platform (migration 9) ---------------------------------

@dataclass(frozen=True)
class ResultExport:
    """One recorded export: its window, rows, file and the hashes of its files' content."""

    export_id: int
    since: datetime
    until: datetime
    rows: int
    file_name: str
    content_sha256: str
    parquet_sha256: str
    created_at: datetime
    flow_run_id: str | None


_EXPORT = ("export_id, since, until, rows, file_name, content_sha256, parquet_sha256, created_at, flow_run_id")


def find_result_export(con: duckdb.DuckDBPyConnection, since: datetime) -> ResultExport | None:
    """The export recorded for ``since``, if any (a read)."""
    rows = con.execute(f"SELECT {_EXPORT} FROM result_exports WHERE since = ?", [since]).fetchall()
    return ResultExport(*rows[0]) if rows else None


def record_result_export(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    select_sql: str,
    render: Callable[[duckdb.DuckDBPyConnection, int], tuple[str, str, str]],
    run_id: str | None,
) -> ResultExport | None:
    """Record a new export in one transaction: the rows ``select_sql`` finds (parameters
    ``since`` and ``until``: the domain rule, ``reporting.exports.NEW_RESULTS_SQL``), then its
    header with the file name and the sha256 of the CSV and the Parquet file that
    ``render(con, export_id)`` makes from the rows just recorded. The caller holds the write
    slot; an export already recorded for ``since`` (by a concurrent run that got the slot first)
    is returned as it is. Nothing to export: nothing recorded, ``None``."""
    with transaction(con) as tx:
        found = find_result_export(con, since)
        if found is not None:
            tx.rollback()
            return found
        (export_id,) = con.execute("SELECT coalesce(max(export_id), 0) + 1 FROM result_exports").fetchall()[0]
        con.execute(f"INSERT INTO result_export_rows BY NAME SELECT $export_id AS export_id, * FROM ({select_sql})",
                    {"export_id": export_id, "since": since, "until": until})
        (rows,) = con.execute("SELECT count(*) FROM result_export_rows WHERE export_id = ?", [export_id]).fetchall()[0]
        if rows == 0:
            tx.rollback()
            return None
        file_name, csv_sha256, parquet_sha256 = render(con, export_id)
        con.execute(
            f"INSERT INTO result_exports ({_EXPORT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [export_id, since, until, rows, file_name, csv_sha256, parquet_sha256, _now(), run_id])
        export = find_result_export(con, since)
    return export
