"""The feeds of the inbox: one declaration each, wiring its domain rules (``sampling``, ``lab``,
``reporting``) to its writes (``warehouse.writer``).

The order of :data:`FEEDS` is the dependency order: reference data, the register, then the chain
(stock counts after labs and the register, whose lab ids and districts name their holders).
:data:`KINDS` and :data:`EVENT_TIME` are derived from it: the feed kinds are listed here only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl

from lab.custody import MANIFEST_REQUIRED, RECEIPT_REQUIRED, check_manifests, check_receipts
from lab.labs import LAB_COLUMNS, LAB_REQUIRED, check_labs
from lab.results import check_results
from reporting.alerts import OutboxAlert, positive_alerts_of_files, results_files_apart
from reporting.stock import STOCK_REQUIRED, STOCK_UNIQUE_KEY, UNKNOWN_HOLDER, check_stock
from sampling.register import COLUMNS as REGISTER_COLUMNS
from sampling.register import REQUIRED as REGISTER_REQUIRED
from sampling.register import UNIQUE_KEY as REGISTER_KEY
from sampling.register import check_register
from sampling.rounds import ROUND_RULE
from sampling.scans import REQUIRED as SCAN_REQUIRED
from sampling.scans import check_scans
from sampling.sites import SITE_COLUMNS, SITE_REQUIRED, ZONE_COLUMNS, ZONE_REQUIRED, check_sites, check_zones
from kernel.config import Config
from kernel.rules import Checked, StageRule, StageWarning
from warehouse.writer import (
    STAGE,
    apply_manifests,
    apply_receipts,
    apply_reference,
    apply_register,
    apply_results,
    apply_scans,
    apply_stock,
    stage_plates_reported_again,
    staged_file_of,
    waiting_scans_settler,
)


@dataclass(frozen=True)
class Feed:
    kind: str
    required: tuple[str, ...]
    #: the feed's row rules over text rows (``_line`` opaque: a batch's rows carry their file in it),
    #: given the file's label (an export's) and the take's ``as_of`` (rules with no time of their row)
    check: Callable[[pl.DataFrame, Config, str, datetime], Checked]
    #: the insert (``warehouse.writer``) of the rows of the view ``staged``: one file's, or, when the
    #: feed ``appends``, every file's of a batch at once (``warehouse.writer.record_batch``)
    apply: Callable[[duckdb.DuckDBPyConnection, str | None], None]
    #: within one file, the last line per key wins (None: every row is an event)
    unique_key: tuple[str, ...] | None = None
    #: a last rule that needs the warehouse (run under the lock, with the derived views defined)
    stage_rule: StageRule | None = None
    #: after the files' ledger entries, in their transaction: their facts may raise re-sampling
    #: orders that scans waiting for them join (``waiting_scans_settler``; the files' content hashes)
    settle: Callable[[duckdb.DuckDBPyConnection, Sequence[str], str | None], object] | None = None
    #: what the files' facts raise (``reporting.alerts``), a list per file, recorded in their transaction
    announce: Callable[[duckdb.DuckDBPyConnection, Config, Sequence[str]], list[list[OutboxAlert]]] | None = None
    #: may a staged batch's files settle and announce together, once after all their facts (what
    #: each file's own settle and announce would give)? None: file after file
    apart: Callable[[duckdb.DuckDBPyConnection, Config], bool] | None = None
    #: a warning that needs the warehouse (run under the lock, with the derived views defined):
    #: the rows are kept, the ledger counts them (``warehouse.writer.flag_staged``)
    stage_warning: StageWarning | None = None
    #: the chain's event time, by which its files are ordered (``ingest.discover``); None:
    #: reference data, taken first in feed order
    event_time: str | None = None
    #: once per batch, after the stage rule and warning, before its transaction: what the inserts
    #: look up, staged beside the rows (results: ``warehouse.writer.stage_plates_reported_again``)
    prepare: Callable[[duckdb.DuckDBPyConnection], object] | None = None
    #: the rows come from an instrument export's parser (``lab.instruments``), not a table reader;
    #: the check sees one file at a time (its label names the lab, run and plate)
    export: bool = False
    #: the feed's rows are facts appended in their files' line order (no key, no amendment): a
    #: batch's files are written by one ``apply`` when they raise nothing or are apart (issue 15)
    appends: bool = False

    def needs_views(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Must the derived views be defined for this batch before its stage rule? Announce and
        the stage warning read them; a settle only when it has work (``idle``: no scan waits, so
        it places nothing and reads no view); a stage rule alone defines them only when its quick
        path does not apply (``warehouse.writer.apply_stage_rule``)."""
        if self.announce is not None or self.stage_warning is not None:
            return True
        if self.settle is None:
            return False
        idle = getattr(self.settle, "idle", None)
        return idle is None or not idle(con)


#: the waiting scans that receipts and results files may place (their orders' facts)
RECEIPTS_SETTLE = waiting_scans_settler(ROUND_RULE, "receipts", "tube_barcode")
RESULTS_SETTLE = waiting_scans_settler(ROUND_RULE, "results", "sample")
#: a staged batch's rows with their file (``i``), before they are taken
STAGED_ROWS = f"SELECT {staged_file_of()} AS i, * FROM {STAGE}.accepted"


def _results_apart(con: duckdb.DuckDBPyConnection, cfg: Config) -> bool:
    return RESULTS_SETTLE.apart(con) and results_files_apart(con, STAGED_ROWS)


FEEDS: dict[str, Feed] = {feed.kind: feed for feed in (
    Feed("sites", SITE_REQUIRED, lambda raw, cfg, label, as_of: check_sites(raw), apply_reference("sites", SITE_COLUMNS),
         ("site_id",)),
    Feed("labs", LAB_REQUIRED, lambda raw, cfg, label, as_of: check_labs(raw), apply_reference("labs", LAB_COLUMNS),
         ("lab_id",)),
    Feed("zones", ZONE_REQUIRED, lambda raw, cfg, label, as_of: check_zones(raw, timezone=cfg.city.timezone),
         apply_reference("zones", ZONE_COLUMNS), ("grid", "since")),
    Feed("register", REGISTER_REQUIRED,
         lambda raw, cfg, label, as_of: check_register(raw, judged_on=cfg.city.local_day(as_of),
                                                        phone_region=cfg.city.phone_region),
         apply_register(REGISTER_COLUMNS), REGISTER_KEY),
    # a count is a fact of its time: a delivery counted at noon is taken in the noon of a replay
    Feed("stock", STOCK_REQUIRED, lambda raw, cfg, label, as_of: check_stock(raw, timezone=cfg.city.timezone),
         apply_stock, STOCK_UNIQUE_KEY, stage_warning=UNKNOWN_HOLDER, event_time="at"),
    Feed("scans", SCAN_REQUIRED, lambda raw, cfg, label, as_of: check_scans(raw, timezone=cfg.city.timezone),
         apply_scans, stage_rule=ROUND_RULE, event_time="scanned_at", appends=True),
    Feed("manifests", MANIFEST_REQUIRED, lambda raw, cfg, label, as_of: check_manifests(raw, timezone=cfg.city.timezone),
         apply_manifests, event_time="packed_at", appends=True),
    Feed("receipts", RECEIPT_REQUIRED, lambda raw, cfg, label, as_of: check_receipts(raw, timezone=cfg.city.timezone),
         apply_receipts, settle=RECEIPTS_SETTLE, apart=lambda con, cfg: RECEIPTS_SETTLE.apart(con),
         event_time="received_at", appends=True),
    Feed("results", (), lambda records, cfg, label, as_of: check_results(records, label), apply_results,
         settle=RESULTS_SETTLE, announce=positive_alerts_of_files, apart=_results_apart,
         prepare=stage_plates_reported_again, event_time="finished_at", export=True),
)}

#: feed kinds in dependency order
KINDS: tuple[str, ...] = tuple(FEEDS)
#: the event time of each chain kind, by which its files are ordered
EVENT_TIME: dict[str, str] = {kind: feed.event_time for kind, feed in FEEDS.items() if feed.event_time is not None}
