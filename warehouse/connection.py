"""Opening the warehouse: one process at a time holds the DuckDB file.

DuckDB takes one read-write process per file. :func:`open_warehouse` therefore takes an
exclusive OS lock beside the file before connecting, waiting (up to the configured timeout)
while another writer works, so concurrent runs serialise instead of failing on DuckDB's lock.
Flows additionally hold the Prefect global concurrency limit named in the config, which makes
the queue visible in the UI. On open, pending migrations are applied and the person-key macro
is defined with the ID-hash key (kept in the session only, never stored).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from kernel.config import WarehouseConfig
from warehouse.schema import MIGRATIONS


class WarehouseLocked(TimeoutError):
    """Another process held the warehouse for longer than the lock timeout."""


class WrongIdHashKey(RuntimeError):
    """The ID-hash key differs from the one the warehouse's person keys were made with."""


@contextmanager
def file_lock(path: Path, timeout: float) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseLocked(f"warehouse {path} stayed locked for {timeout:.0f} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class Transaction(AbstractContextManager["Transaction"]):
    """One warehouse transaction (事务): ``BEGIN`` on entry, ``COMMIT`` when the block ends,
    ``ROLLBACK`` when it raises (the error goes on up) or when the block calls :meth:`rollback`.
    A failed ``COMMIT`` raises its own error (DuckDB has already ended that transaction). Nothing of the block is in the file
    until the commit: a process killed inside it leaves nothing half-written (DuckDB's WAL)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.open = False

    def __enter__(self) -> Transaction:
        self.con.begin()
        self.open = True
        return self

    def rollback(self) -> None:
        """End the transaction now, keeping nothing of it (the block then only returns)."""
        if self.open:
            self.open = False
            self.con.rollback()

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.open:
            return None
        self.open = False
        if exc_type is not None:
            self.con.rollback()
            return None
        try:
            self.con.commit()
        except BaseException:
            try:
                self.con.rollback()
            except duckdb.TransactionException:  # DuckDB ended the transaction whose commit failed
                pass
            raise  # the commit's own error (a conflict, a full disk), not "no transaction is active"
        return None


def transaction(con: duckdb.DuckDBPyConnection) -> Transaction:
    """``with transaction(con): ...``: the block in one transaction (see :class:`Transaction`)."""
    return Transaction(con)


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, data: object) -> Iterator[None]:
    """``data`` (an Arrow table, a frame) readable as the view ``name`` of ``con`` inside the block."""
    con.register(name, data)
    try:
        yield
    finally:
        con.unregister(name)


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in sorted(MIGRATIONS):  # by version, whatever order branches merged them in
        if version in done:
            continue
        with transaction(con):
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, datetime.now(timezone.utc)]
            )
        applied.append(version)
    return applied


def define_person_key(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """``person_key(id_type, id_number)``: HMAC-SHA256 (RFC 2104) computed set-based in SQL,
    its first 128 bits as UHUGEINT. The key lives only in this session's temporary macro."""
    block = key.ljust(64, b"\0")
    inner = bytes(b ^ 0x36 for b in block).hex()
    outer = bytes(b ^ 0x5C for b in block).hex()
    con.execute(
        f"""CREATE OR REPLACE TEMP MACRO person_key(id_type, id_number) AS
        ('0x' || substr(sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}')
            || encode(id_type || '|' || id_number)))), 1, 32))::UHUGEINT"""
    )
    fingerprint = key_fingerprint(key)
    rows = con.execute("SELECT value FROM warehouse_settings WHERE name = 'id_hash_key_check'").fetchall()
    stored = rows[0] if rows else None
    if stored is None:
        con.execute("INSERT INTO warehouse_settings VALUES ('id_hash_key_check', ?)", [fingerprint])
    elif stored[0] != fingerprint:
        raise WrongIdHashKey(WRONG_KEY_MESSAGE)


WRONG_KEY_MESSAGE = "the ID-hash key differs from the one this warehouse was built with; person joins would break"


def key_fingerprint(key: bytes) -> str:
    """What the warehouse keeps to recognise its ID-hash key (an HMAC of a constant, not the key)."""
    return hmac.new(key, b"tubetrail person key check", hashlib.sha256).hexdigest()


def check_id_hash_key(cfg: WarehouseConfig, key: bytes) -> None:
    """Raise :class:`WrongIdHashKey` before any work when the warehouse was built with another
    key (a read under the file lock; nothing to check for a warehouse not created yet)."""
    path = Path(cfg.path)
    if not path.exists():
        return
    with file_lock(path, cfg.lock_timeout_seconds):
        con = duckdb.connect(str(path), read_only=True)
        try:
            made = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'warehouse_settings'").fetchone()
            rows = con.execute("SELECT value FROM warehouse_settings WHERE name = 'id_hash_key_check'").fetchall() \
                if made and made[0] else []
        finally:
            con.close()
    if rows and rows[0][0] != key_fingerprint(key):
        raise WrongIdHashKey(WRONG_KEY_MESSAGE)


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def bound_memory(con: duckdb.DuckDBPyConnection, memory_limit: str, temp_directory: str | Path,
                 max_temp_directory_size: str = "") -> None:
    """Issue 15: DuckDB's working memory under ``memory_limit``, spilling beyond it into
    ``temp_directory`` (created here; at most ``max_temp_directory_size`` when given)."""
    Path(temp_directory).mkdir(parents=True, exist_ok=True)
    con.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
    con.execute(f"SET temp_directory = {sql_literal(str(temp_directory))}")
    if max_temp_directory_size:
        con.execute(f"SET max_temp_directory_size = {sql_literal(max_temp_directory_size)}")


@contextmanager
def open_warehouse(path: str | Path, key: bytes, *, lock_timeout: float = 600.0,
                   memory_limit: str = "3.5GB", temp_directory: str | Path | None = None,
                   max_temp_directory_size: str = "") -> Iterator[duckdb.DuckDBPyConnection]:
    """Lock, connect, bound memory (spilling to ``temp_directory``, default ``<warehouse>.tmp``
    beside the file), migrate, define the person key; close and unlock on exit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path, lock_timeout):
        con = duckdb.connect(str(path))
        try:
            con.execute("SET TimeZone = 'UTC'")
            bound_memory(con, memory_limit, temp_directory or path.with_name(path.name + ".tmp"),
                         max_temp_directory_size)
            migrate(con)
            define_person_key(con, key)
            yield con
        finally:
            con.close()


def open_configured(cfg: WarehouseConfig, key: bytes) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    """:func:`open_warehouse` with the configured path, lock timeout, memory limit and spill folder."""
    return open_warehouse(cfg.path, key, lock_timeout=cfg.lock_timeout_seconds, memory_limit=cfg.memory_limit,
                          temp_directory=cfg.spill_directory(), max_temp_directory_size=cfg.max_temp_directory_size)
