"""The single writer: every INSERT, UPDATE and DELETE of the warehouse is in this module.

A file is taken in one transaction: its accepted rows, its quarantined rows and its ledger entry
commit together or not at all, so a retry, a re-run or a kill -9 halfway leaves the warehouse as
one clean run would. A later file that changes a row amends it and the amendment is appended to
``audit`` with when, by which flow run and why; nothing is overwritten silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import polars as pl

from tubetrail.rules import LINE, Checked
from warehouse.schema import UPSERT_KEYS


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
    return con.execute(
        "SELECT status, file_name, rows_read, rows_accepted, rows_quarantined FROM ingest_ledger"
        " WHERE content_hash = ?",
        [content_hash],
    ).fetchone()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def record_refusal(
    con: duckdb.DuckDBPyConnection,
    *,
    content_hash: str,
    kind: str,
    file_name: str,
    size_bytes: int,
    message: str,
    run_id: str | None,
) -> FileOutcome:
    con.execute(
        "INSERT INTO ingest_ledger (content_hash, kind, file_name, size_bytes, status, rows_read, rows_accepted,"
        " rows_quarantined, message, ingested_at, flow_run_id) VALUES (?, ?, ?, ?, 'refused', 0, 0, 0, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        [content_hash, kind, file_name, size_bytes, message, _now(), run_id],
    )
    return FileOutcome(kind, file_name, content_hash, "refused", message=message)


def quarantine_rows(raw: pl.DataFrame, rejects: pl.DataFrame, checked: Checked) -> pl.DataFrame:
    """Quarantined rows with the raw row as JSON: unreadable rows as their text, rule breakers as
    their fields."""
    data_columns = [c for c in raw.columns if c != LINE]
    broken = checked.quarantined.join(
        raw.select(LINE, pl.struct(data_columns).struct.json_encode().alias("raw")), on=LINE, how="left"
    )
    return pl.concat(
        [rejects.select(LINE, "column", "reason", "raw"), broken.select(LINE, "column", "reason", "raw")]
    ).sort(LINE)


def record_file(
    con: duckdb.DuckDBPyConnection,
    *,
    content_hash: str,
    kind: str,
    file_name: str,
    file_format: str,
    size_bytes: int,
    raw: pl.DataFrame,
    rejects: pl.DataFrame,
    checked: Checked,
    apply: Callable[[duckdb.DuckDBPyConnection, str, str | None], None],
    run_id: str | None,
) -> FileOutcome:
    """Take one file in one transaction. ``apply(con, content_hash, run_id)`` writes the accepted
    rows, which it finds in the temporary view ``staged``."""
    quarantined = quarantine_rows(raw, rejects, checked)
    rows_read = raw.height + rejects.height
    accepted = checked.accepted.height
    if accepted + quarantined.height != rows_read:
        raise AssertionError(
            f"{file_name}: rows read {rows_read} != accepted {accepted} + quarantined {quarantined.height}"
        )
    by_reason = (
        dict(quarantined.group_by("reason").len().sort("reason").iter_rows()) if quarantined.height else {}
    )
    # Quarantine reasons name line numbers for duplicates; count them under one reason.
    by_reason = _fold_reasons(by_reason)
    now = _now()
    con.begin()
    try:
        if ledger_entry(con, content_hash) is not None:  # taken by an earlier attempt of this run
            con.rollback()
            return FileOutcome(kind, file_name, content_hash, "skipped", message="seen before")
        staged = checked.accepted.drop(LINE).with_columns(checked.accepted[LINE].alias("source_line"))
        con.register("staged_arrow", staged.to_arrow())
        con.execute("CREATE OR REPLACE TEMP VIEW staged AS SELECT * FROM staged_arrow")
        apply(con, content_hash, run_id)
        con.execute("DROP VIEW staged")
        con.unregister("staged_arrow")
        if quarantined.height:
            con.register("quarantined_arrow", quarantined.to_arrow())
            con.execute(
                "INSERT INTO quarantine SELECT ?, ?, ?, _line, \"column\", reason, raw, ?, ? FROM quarantined_arrow",
                [content_hash, kind, file_name, now, run_id],
            )
            con.unregister("quarantined_arrow")
        con.execute(
            "INSERT INTO ingest_ledger VALUES (?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?, NULL, ?, ?)",
            [
                content_hash,
                kind,
                file_name,
                file_format,
                size_bytes,
                rows_read,
                accepted,
                quarantined.height,
                json.dumps(checked.warnings, ensure_ascii=False) if checked.warnings else None,
                now,
                run_id,
            ],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return FileOutcome(
        kind,
        file_name,
        content_hash,
        "accepted",
        rows_read=rows_read,
        rows_accepted=accepted,
        rows_quarantined=quarantined.height,
        quarantined_by_reason=by_reason,
        warnings=dict(checked.warnings),
    )


def _fold_reasons(by_reason: dict[str, int]) -> dict[str, int]:
    folded: dict[str, int] = {}
    for reason, count in by_reason.items():
        key = reason.split(" (", 1)[0] if reason.startswith(("duplicate row", "conflicting duplicate")) else reason
        folded[key] = folded.get(key, 0) + count
    return folded


def upsert_with_audit(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str,
    source_sql: str,
    columns: Sequence[str],
    content_hash: str,
    run_id: str | None,
    reason: str,
) -> None:
    """Insert new rows of ``source_sql`` into ``table``; amend changed rows (later file wins) and
    append each amendment to ``audit`` with its before and after values."""
    keys = UPSERT_KEYS[table]
    data = [c for c in columns if c not in keys]
    on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
    differs = " OR ".join(f"t.{c} IS DISTINCT FROM s.{c}" for c in data)
    key_text = " || '|' || ".join(f"coalesce(CAST(s.{k} AS VARCHAR), '')" for k in keys)
    if keys == ("person_key",):
        key_text = "lower(hex(s.person_key))"
    con.execute(f"CREATE OR REPLACE TEMP TABLE upsert_source AS {source_sql}")
    con.execute(
        f"""INSERT INTO audit (recorded_at, flow_run_id, entity, entity_key, action, reason, before, after)
        SELECT ?, ?, ?, {key_text}, 'amend', ?,
               to_json(struct_pack({', '.join(f't.{c}' for c in data)})),
               to_json(struct_pack({', '.join(f's.{c}' for c in data)}))
        FROM upsert_source s JOIN {table} t ON {on} WHERE {differs}""",
        [_now(), run_id, table, reason],
    )
    con.execute(
        f"""DELETE FROM {table} t WHERE EXISTS (
            SELECT 1 FROM upsert_source s WHERE {on} AND ({differs}))"""
    )
    all_columns = [*columns, "source_hash", "source_line", "updated_at"]
    con.execute(
        f"""INSERT INTO {table} ({', '.join(all_columns)})
        SELECT {', '.join(f's.{c}' for c in columns)}, ?, s.source_line, ?
        FROM upsert_source s WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {on})""",
        [content_hash, _now()],
    )
    con.execute("DROP TABLE upsert_source")


REGISTER_COLUMNS = (
    "person_key",
    "id_type",
    "id_number",
    "name",
    "phone",
    "district",
    "subdistrict",
    "community",
    "grid",
    "address",
    "household_id",
    "mobility_limited",
    "key_group",
)


def apply_register(con: duckdb.DuckDBPyConnection, content_hash: str, run_id: str | None) -> None:
    upsert_with_audit(
        con,
        table="register",
        source_sql="SELECT person_key(id_type, id_number) AS person_key, * FROM staged",
        columns=REGISTER_COLUMNS,
        content_hash=content_hash,
        run_id=run_id,
        reason="register row changed by a later file (later file wins)",
    )


def apply_reference(table: str, columns: Sequence[str]) -> Callable[[duckdb.DuckDBPyConnection, str, str | None], None]:
    def apply(con: duckdb.DuckDBPyConnection, content_hash: str, run_id: str | None) -> None:
        upsert_with_audit(
            con,
            table=table,
            source_sql="SELECT * FROM staged",
            columns=columns,
            content_hash=content_hash,
            run_id=run_id,
            reason=f"{table} row changed by a later file (later file wins)",
        )

    return apply


def apply_scans(con: duckdb.DuckDBPyConnection, content_hash: str, run_id: str | None) -> None:
    """Scan events are facts: appended, never changed (tubes and members are derived from them)."""
    con.execute(
        """INSERT INTO scans SELECT round_id, scanned_at, site_id, collector_id, tube_barcode, event,
               CASE WHEN id_type IS NOT NULL THEN person_key(id_type, id_number) END,
               id_type, id_number, name, phone, capacity, resample, ?, source_line
           FROM staged""",
        [content_hash],
    )


def apply_manifests(con: duckdb.DuckDBPyConnection, content_hash: str, run_id: str | None) -> None:
    con.execute(
        """INSERT INTO manifests SELECT box_id, tube_barcode, site_id, packed_at, courier_id, departed_at,
               lab_id, ?, source_line FROM staged""",
        [content_hash],
    )


def apply_receipts(con: duckdb.DuckDBPyConnection, content_hash: str, run_id: str | None) -> None:
    con.execute(
        """INSERT INTO receipts SELECT lab_id, box_id, tube_barcode, received_at, condition, ?, source_line
           FROM staged""",
        [content_hash],
    )


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
    con.begin()
    try:
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
        con.commit()
    except BaseException:
        con.rollback()
        raise
