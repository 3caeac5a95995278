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

from lab.custody import MANIFEST_REQUIRED, RECEIPT_REQUIRED, check_manifests, check_receipts
from lab.labs import LAB_COLUMNS, LAB_REQUIRED, check_labs
from sampling.register import REQUIRED as REGISTER_REQUIRED
from sampling.register import check_register
from sampling.rounds import assign_rounds
from sampling.scans import REQUIRED as SCAN_REQUIRED
from sampling.scans import check_scans
from sampling.sites import SITE_COLUMNS, SITE_REQUIRED, ZONE_COLUMNS, ZONE_REQUIRED, check_sites, check_zones
from tubetrail.config import Config
from tubetrail.rules import Checked
from tubetrail.secrets import id_hash_key
from tubetrail.views import define_views
from warehouse.connection import open_warehouse
from warehouse.inbox import InboxFile, RefusedFile, content_hash, read_table
from warehouse.writer import (
    FileOutcome,
    apply_manifests,
    apply_receipts,
    apply_reference,
    apply_register,
    apply_scans,
    ledger_entry,
    record_file,
    record_refusal,
)


@dataclass(frozen=True)
class Feed:
    kind: str
    required: tuple[str, ...]
    check: Callable[[pl.DataFrame, Config], Checked]
    apply: Callable[[duckdb.DuckDBPyConnection, str, str | None], None]
    #: a last rule that needs the warehouse (run under the lock, with the derived views defined)
    prepare: Callable[[duckdb.DuckDBPyConnection, Checked], Checked] | None = None


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
    "scans": Feed(
        "scans",
        SCAN_REQUIRED,
        lambda raw, cfg: check_scans(raw, timezone=cfg.city.timezone),
        apply_scans,
        prepare=assign_rounds,
    ),
    "manifests": Feed(
        "manifests",
        MANIFEST_REQUIRED,
        lambda raw, cfg: check_manifests(raw, timezone=cfg.city.timezone),
        apply_manifests,
    ),
    "receipts": Feed(
        "receipts",
        RECEIPT_REQUIRED,
        lambda raw, cfg: check_receipts(raw, timezone=cfg.city.timezone),
        apply_receipts,
    ),
}

#: kinds of the chain that later work implements; ingest says plainly that it skipped them
NOT_YET_IMPLEMENTED = ("results",)

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
        if feed.prepare is not None:
            define_views(con, cfg)
            checked = feed.prepare(con, checked)
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
