"""The feeds of the inbox, wired to their rules (domain packages) and their writes (warehouse).

:func:`take_file` is one file's whole path: hash → ledger → read → rules → one transaction.
Reading and checking run outside the warehouse lock; only the ledger look-up and the final
transaction hold it (``write_guard`` adds the Prefect global concurrency limit in flows).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from lab.labs import LAB_COLUMNS, LAB_REQUIRED, check_labs
from sampling.register import REQUIRED as REGISTER_REQUIRED
from sampling.register import check_register
from sampling.sites import SITE_COLUMNS, SITE_REQUIRED, ZONE_COLUMNS, ZONE_REQUIRED, check_sites, check_zones
from tubetrail.config import Config
from tubetrail.rules import Checked
from tubetrail.secrets import id_hash_key
from warehouse.connection import open_warehouse
from warehouse.inbox import InboxFile, RefusedFile, content_hash, read_table
from warehouse.writer import FileOutcome, apply_reference, apply_register, ledger_entry, record_file, record_refusal


@dataclass(frozen=True)
class Feed:
    kind: str
    required: tuple[str, ...]
    check: Callable[[pl.DataFrame, Config], Checked]
    apply: Callable[[duckdb.DuckDBPyConnection, str, str | None], None]


FEEDS: dict[str, Feed] = {
    "sites": Feed("sites", SITE_REQUIRED, lambda raw, cfg: check_sites(raw), apply_reference("sites", SITE_COLUMNS)),
    "labs": Feed("labs", LAB_REQUIRED, lambda raw, cfg: check_labs(raw), apply_reference("labs", LAB_COLUMNS)),
    "zones": Feed(
        "zones",
        ZONE_REQUIRED,
        lambda raw, cfg: check_zones(raw, timezone=cfg.city.timezone),
        apply_reference("zones", ZONE_COLUMNS),
    ),
    "register": Feed(
        "register",
        REGISTER_REQUIRED,
        lambda raw, cfg: check_register(raw, phone_region=cfg.city.phone_region),
        apply_register,
    ),
}

#: kinds of the chain that later work implements; ingest says plainly that it skipped them
NOT_YET_IMPLEMENTED = ("scans", "manifests", "receipts", "results")

WriteGuard = Callable[[], AbstractContextManager[object]]


def take_file(
    file: InboxFile,
    cfg: Config,
    *,
    run_id: str | None = None,
    write_guard: WriteGuard = nullcontext,
) -> FileOutcome:
    feed = FEEDS[file.kind]
    path = Path(file.path)
    digest = content_hash(path)
    size = path.stat().st_size
    key = id_hash_key()
    warehouse = cfg.warehouse

    with write_guard(), open_warehouse(warehouse.path, key, lock_timeout=warehouse.lock_timeout_seconds) as con:
        seen = ledger_entry(con, digest)
    if seen is not None:
        return FileOutcome(file.kind, file.label, digest, "skipped", message=f"seen before as {seen[1]} ({seen[0]})")

    try:
        raw = read_table(path, feed.required, label=file.label)
    except RefusedFile as refusal:
        with write_guard(), open_warehouse(warehouse.path, key, lock_timeout=warehouse.lock_timeout_seconds) as con:
            return record_refusal(
                con,
                content_hash=digest,
                kind=file.kind,
                file_name=file.label,
                size_bytes=size,
                message=str(refusal),
                run_id=run_id,
            )
    checked = feed.check(raw.frame, cfg)
    with write_guard(), open_warehouse(warehouse.path, key, lock_timeout=warehouse.lock_timeout_seconds) as con:
        return record_file(
            con,
            content_hash=digest,
            kind=file.kind,
            file_name=file.label,
            file_format=raw.file_format,
            size_bytes=size,
            raw=raw.frame,
            rejects=raw.rejects,
            checked=checked,
            apply=feed.apply,
            run_id=run_id,
        )
