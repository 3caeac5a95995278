"""The feeds of the inbox, wired to their rules (domain packages) and their writes (warehouse).

:func:`take_file` is one file's whole path: hash → ledger → read → rules → one transaction.
Reading and checking run outside the warehouse lock; only the ledger look-up and the final
transaction hold it (``write_guard`` adds the Prefect global concurrency limit in flows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from lab.custody import MANIFEST_REQUIRED, RECEIPT_REQUIRED, check_manifests, check_receipts
from lab.instruments import UnrecognisedExport, parse_export
from lab.labs import LAB_COLUMNS, LAB_REQUIRED, check_labs
from lab.results import check_results
from reporting.alerts import OutboxAlert, file_refused_alert, positive_alerts_of_file
from reporting.stock import STOCK_REQUIRED, STOCK_UNIQUE_KEY, UNKNOWN_HOLDER, check_stock
from sampling.register import REQUIRED as REGISTER_REQUIRED
from sampling.register import COLUMNS as REGISTER_COLUMNS
from sampling.register import UNIQUE_KEY as REGISTER_KEY
from sampling.register import check_register
from sampling.rounds import ROUND_RULE
from sampling.scans import REQUIRED as SCAN_REQUIRED
from sampling.scans import check_scans
from sampling.sites import SITE_COLUMNS, SITE_REQUIRED, ZONE_COLUMNS, ZONE_REQUIRED, check_sites, check_zones
from tubetrail.config import Config
from tubetrail.rules import LINE, Checked, StageRule, StageWarning
from tubetrail.secrets import id_hash_key
from tubetrail.views import define_views
from warehouse.connection import open_configured
from warehouse.inbox import (InboxFile, RefusedFile, content_hash, export_written_at, stage_file, stage_records,
                             is_hidden, staging_in, staging_root_of)
from warehouse.writer import (
    FileOutcome,
    apply_manifests,
    apply_receipts,
    apply_reference,
    apply_register,
    apply_results,
    apply_scans,
    apply_stage_rule,
    apply_stock,
    flag_staged,
    waiting_scans_settler,
    attach_stage,
    detach_stage,
    ledger_entry,
    record_file,
    record_refusal,
)


@dataclass(frozen=True)
class Feed:
    kind: str
    required: tuple[str, ...]
    check: Callable[[pl.DataFrame, Config, str], Checked]
    apply: Callable[[duckdb.DuckDBPyConnection, str, str | None], None]
    #: within one file, the last line per key wins (None: every row is an event)
    unique_key: tuple[str, ...] | None = None
    #: a last rule that needs the warehouse (run under the lock, with the derived views defined)
    stage_rule: StageRule | None = None
    #: after the file's ledger entry, in its transaction: its facts may raise re-sampling orders
    #: that scans waiting for them join (``waiting_scans_settler``)
    settle: Callable[[duckdb.DuckDBPyConnection, str, str | None], object] | None = None
    #: what the file's facts raise (``reporting.alerts``), recorded in the file's transaction
    announce: Callable[[duckdb.DuckDBPyConnection, Config, str], list[OutboxAlert]] | None = None
    #: a warning that needs the warehouse (run under the lock, with the derived views defined):
    #: the rows are kept, the ledger counts them (``warehouse.writer.flag_staged``)
    stage_warning: StageWarning | None = None


FEEDS: dict[str, Feed] = {
    "sites": Feed("sites", SITE_REQUIRED, lambda raw, cfg, label: check_sites(raw), apply_reference("sites", SITE_COLUMNS), ("site_id",)),
    "labs": Feed("labs", LAB_REQUIRED, lambda raw, cfg, label: check_labs(raw), apply_reference("labs", LAB_COLUMNS), ("lab_id",)),
    "zones": Feed(
        "zones",
        ZONE_REQUIRED,
        lambda raw, cfg, label: check_zones(raw, timezone=cfg.city.timezone),
        apply_reference("zones", ZONE_COLUMNS),
        ("grid", "since"),
    ),
    "register": Feed(
        "register",
        REGISTER_REQUIRED,
        lambda raw, cfg, label: check_register(raw, phone_region=cfg.city.phone_region),
        apply_register(REGISTER_COLUMNS),
        REGISTER_KEY,
    ),
    "stock": Feed(
        "stock",
        STOCK_REQUIRED,
        lambda raw, cfg, label: check_stock(raw, timezone=cfg.city.timezone),
        apply_stock,
        STOCK_UNIQUE_KEY,
        stage_warning=UNKNOWN_HOLDER,
    ),
    "scans": Feed(
        "scans",
        SCAN_REQUIRED,
        lambda raw, cfg, label: check_scans(raw, timezone=cfg.city.timezone),
        apply_scans,
        stage_rule=ROUND_RULE,
    ),
    "manifests": Feed(
        "manifests",
        MANIFEST_REQUIRED,
        lambda raw, cfg, label: check_manifests(raw, timezone=cfg.city.timezone),
        apply_manifests,
    ),
    "receipts": Feed(
        "receipts",
        RECEIPT_REQUIRED,
        lambda raw, cfg, label: check_receipts(raw, timezone=cfg.city.timezone),
        apply_receipts,
        settle=waiting_scans_settler(ROUND_RULE, "receipts", "tube_barcode"),
    ),
    "results": Feed(
        "results",
        (),
        lambda records, cfg, label: check_results(records, label),
        apply_results,
        settle=waiting_scans_settler(ROUND_RULE, "results", "sample"),
        announce=positive_alerts_of_file,
    ),
}


def stage_export(path: Path, label: str, memory_limit: str, timezone: str, staging_root: Path | None = None):
    """An instrument export, read by its parser and staged like any other file; a reading
    without run time takes the export's write time (CFX Maestro exports carry none)."""
    try:
        with staging_in(staging_root):  # the generic table's parser stages its file too
            parsed = parse_export(path, timezone=timezone)
    except UnrecognisedExport as exc:
        raise RefusedFile(str(exc) if str(exc).startswith(label) else f"{label}: {exc}") from exc
    written = pl.lit(export_written_at(path)).dt.convert_time_zone("UTC")
    records = parsed.records.rename({"line": LINE}).with_columns(
        pl.lit(parsed.format).alias("source_format"),
        pl.col("finished_at").fill_null(written.cast(parsed.records.schema["finished_at"])))
    return stage_records(records, parsed.rejects.rename({"line": LINE}), parsed.format, memory_limit, staging_root)

WriteGuard = Callable[[], AbstractContextManager[object]]

#: the outcome's message for a hidden file (``warehouse.inbox.is_hidden``), reported, not taken
HIDDEN_FILE = "{label}: hidden file (a name starting with '.'), not taken: a partial upload? rename it when complete"


def take_file(
    file: InboxFile,
    cfg: Config,
    *,
    run_id: str | None = None,
    write_guard: WriteGuard = nullcontext,
) -> FileOutcome:
    feed = FEEDS[file.kind]
    if is_hidden(file.label):
        return FileOutcome(file.kind, file.label, "", "skipped", message=HIDDEN_FILE.format(label=file.label))
    path = Path(file.path)
    digest = content_hash(path)
    size = path.stat().st_size
    key = id_hash_key()

    @contextmanager
    def session(guarded: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """The warehouse, under its file lock; writes also hold the write guard (one
        acquisition per file: a slot released and at once re-acquired can wait on its lease)."""
        with write_guard() if guarded else nullcontext(), open_configured(cfg.warehouse, key) as con:
            yield con

    with session(guarded=False) as con:  # a read: the file lock is enough
        seen = ledger_entry(con, digest)
    if seen is not None:
        return FileOutcome(file.kind, file.label, digest, "skipped", message=f"seen before as {seen[1]} ({seen[0]})")

    try:
        # staged beside the warehouse (its protection), never in $TMPDIR; swept after a kill
        root = staging_root_of(cfg.warehouse.path)
        stager = (stage_export(path, file.label, cfg.warehouse.memory_limit, cfg.city.timezone, root) if file.kind == "results"
                  else stage_file(path, feed.required, label=file.label, memory_limit=cfg.warehouse.memory_limit,
                                  staging_root=root))
        with stager as raw:
            for batch in raw.batches():
                raw.keep(batch, feed.check(batch, cfg, file.label))
            warnings = raw.settle(feed.unique_key)
            rows_read, file_format = raw.rows_read, raw.file_format
            stage_path = raw.release()
            with session() as con:
                attach_stage(con, stage_path)
                try:
                    if (feed.stage_rule is not None or feed.announce is not None or feed.settle is not None
                            or feed.stage_warning is not None):
                        define_views(con, cfg)
                    if feed.stage_rule is not None:
                        apply_stage_rule(con, feed.stage_rule)
                    if feed.stage_warning is not None and (flagged := flag_staged(con, feed.stage_warning)):
                        warnings = {**warnings, feed.stage_warning.name: flagged}
                    return record_file(
                        con,
                        content_hash=digest,
                        kind=file.kind,
                        file_name=file.label,
                        file_format=file_format,
                        size_bytes=size,
                        rows_read=rows_read,
                        warnings=warnings,
                        apply=feed.apply,
                        run_id=run_id,
                        settle=feed.settle,
                        announce=(None if feed.announce is None
                                  else lambda c, h: feed.announce(c, cfg, h)),
                    )
                finally:
                    detach_stage(con)
    except RefusedFile as refusal:
        with session() as con:
            return record_refusal(
                con,
                content_hash=digest,
                kind=file.kind,
                file_name=file.label,
                size_bytes=size,
                message=str(refusal),
                run_id=run_id,
                alerts=[file_refused_alert(content_hash=digest, kind=file.kind, file_name=file.label,
                                           size_bytes=size, received_at=export_written_at(path))],
            )
