"""Ingest flows: ``ingest-inbox`` takes every new file of an inbox, one ``ingest-feed`` subflow
per stretch of one kind in discover's order, one task per batch of files (``ingest.take``;
retried: writes are idempotent through the ledger). Each run publishes a per-file summary
artifact: counts and reasons, no personal data.
Alerts are recorded with the facts that raise them (the alert outbox) and published by
``flows.alerts.publish_alerts``: after each results batch and refusal, so a positive pool is seen
within seconds, and at the start and end of every ``ingest-inbox`` run, so what a crashed run
left pending goes out with the next run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run, task_run

from flows.alerts import publish_alerts, raise_timed_alerts
from flows.dashboard import publish_dashboard
from flows.limits import ensure_concurrency_limits, warehouse_session
from reporting.stock import stock_judged_at, stock_low_alerts
from reporting.summary import chain_summary, chain_summary_markdown, latest_fact_time
from ingest.discover import InboxFile, discover, is_hidden
from ingest.summary import ingest_counts, ingest_files_rows, ingest_summary_markdown
from kernel.tables import staging_in, staging_root_of
from ingest.take import plan_batches, take_batch
from warehouse.writer import FileOutcome, raise_alerts


def _batch_run_name() -> str:
    """``take <kind> ×<n>``: the kind and the file count (file names stay in the artifacts)."""
    params = task_run.parameters
    files = params.get("files") or []
    return f"take {params.get('kind')} ×{len(files)}"


@task(retries=2, retry_delay_seconds=2, task_run_name=_batch_run_name)
def take_batch_task(kind: str, files: list[InboxFile], config_path: str | None,
                    warehouse: str | None, as_of: datetime | None = None) -> list[FileOutcome]:
    """One batch (``ingest.take.take_batch``): one outcome per file. A retry re-runs the batch:
    the ledger skips the files already taken."""
    session = warehouse_session(config_path, warehouse)
    return take_batch(files, session.cfg, run_id=str(flow_run.get_id()), write_guard=session.write_guard,
                      as_of=as_of)


@flow(name="ingest-feed", flow_run_name="ingest {kind}")
def ingest_feed(kind: str, files: list[InboxFile], config_path: str | None = None, warehouse: str | None = None,
                as_of: datetime | None = None) -> list[FileOutcome]:
    """One stretch of one feed, in discover's order (a later file wins over an earlier one),
    batch by batch (``[ingest] batch_files`` / ``batch_bytes``); ``as_of``: see ``ingest_inbox``."""
    logger = get_run_logger()
    outcomes = []
    for batch in plan_batches(files, warehouse_session(config_path, warehouse).cfg):
        taken = take_batch_task(kind, batch, config_path, warehouse, as_of)
        outcomes.extend(taken)
        _progress.advance(len(taken))
        for outcome in taken:
            if outcome.status == "refused":
                logger.warning("refused %s", outcome.message)
            elif is_hidden(outcome.file_name):
                logger.warning("skipped %s", outcome.message)
            else:
                logger.info(
                    "%s %s: read %d, accepted %d, quarantined %d",
                    outcome.status, outcome.file_name, outcome.rows_read, outcome.rows_accepted,
                    outcome.rows_quarantined,
                )
        if any(o.status == "refused" or (kind == "results" and o.status == "accepted") for o in taken):
            # the coordinator sees a positive pool within seconds of the batch that called it
            publish_alerts(f"after {len(taken)} {kind} file(s)", config_path, warehouse)
    return outcomes


CHAIN_KINDS = ("scans", "manifests", "receipts", "results")
#: feeds of counts (reagents and consumables in hand): a run that takes them alone judges the stock rule
STOCK_KINDS = ("stock",)


@task(task_run_name="raise stock alerts")
def raise_stock_alerts(config_path: str | None, warehouse: str | None) -> int:
    """After stock files taken without chain files: the stock rule (``reporting.stock.stock_low_alerts``,
    one of the timed rules) judged at the latest fact or count (``stock_judged_at``), its alerts
    recorded in the outbox in one transaction under the write slot. Returns the alerts found."""
    session = warehouse_session(config_path, warehouse)
    with session.write() as con:
        as_of = stock_judged_at(con)
        if as_of is None:
            return 0
        session.define_views(con)
        alerts = stock_low_alerts(con, session.cfg, as_of)
        raise_alerts(con, alerts)
    return len(alerts)


@task(task_run_name="summarise collect, deliver and test")
def publish_chain_summary(config_path: str | None, warehouse: str | None) -> datetime:
    """Tubes, people sampled, calls, positive pools and anomalies after the chain feeds:
    aggregate, no personal data.
    A read: the warehouse file lock is enough, no write slot is taken."""
    session = warehouse_session(config_path, warehouse)
    with session.read() as con:
        # judged at the latest fact ingested, never the wall clock (a replayed round is not lost)
        as_of = latest_fact_time(con) or datetime.now(timezone.utc)
        session.define_views(con, snapshot=True)  # a read over the whole city
        summary = chain_summary(con, as_of)
    create_markdown_artifact(key="chain-summary",
                             markdown=chain_summary_markdown(summary, as_of, session.cfg.city.timezone),
                             description="Collect, deliver and test: tubes, people sampled, calls, positive pools, anomalies")
    return as_of


def _inbox_run_name() -> str:
    params = flow_run.parameters
    return f"ingest {params.get('label') or 'inbox ' + str(params.get('inbox'))}"


@flow(name="ingest-inbox", flow_run_name=_inbox_run_name)
def ingest_inbox(inbox: str, config_path: str | None = None, warehouse: str | None = None,
                 label: str | None = None, as_of: datetime | None = None) -> list[FileOutcome]:
    """Take every new file under ``inbox``: reference data, the register, then the chain.
    ``label`` names the run (the demo: the hour of the round a wave holds). ``as_of`` judges the
    rules a row's own time cannot (a register row's birth date: not after that day); default:
    when the run starts, once for all its batches and their retries."""
    logger = get_run_logger()
    cfg = warehouse_session(config_path, warehouse).cfg  # fails fast, before any file, when the key is missing
    ensure_concurrency_limits(cfg)
    left_pending = publish_alerts("left pending", config_path, warehouse)  # by a run that died before publishing
    with staging_in(staging_root_of(cfg.warehouse.path)):  # an export read for its run time stages there too
        found = discover(Path(inbox), timezone_name=cfg.city.timezone)
    _progress.start(len(found))
    judged_at = as_of or datetime.now(timezone.utc)  # the run's clock, read once
    outcomes: list[FileOutcome] = []
    # one ingest-feed run per consecutive stretch of one kind, in the order discover gives
    for kind, stretch in groupby(found, key=lambda f: f.kind):
        outcomes.extend(ingest_feed(kind, list(stretch), config_path, warehouse, judged_at))
    logger.info("took %(taken)d file(s), %(seen_before)d seen before, %(refused)d refused, %(hidden)d hidden "
                "(not taken)", ingest_counts(outcomes))
    publish_ingest_summary(outcomes)
    latest_fact = None
    if any(o.kind in CHAIN_KINDS and o.status == "accepted" for o in outcomes):
        latest_fact = publish_chain_summary(config_path, warehouse)
        raise_timed_alerts(latest_fact, config_path, warehouse)  # overdue, lost, silent, over capacity: at the latest fact
    elif any(o.kind in STOCK_KINDS and o.status == "accepted" for o in outcomes):
        raise_stock_alerts(config_path, warehouse)  # a count alone may put an item under the minimum days
    published = publish_alerts("at the end", config_path, warehouse)
    if left_pending or published or any(o.status == "accepted" for o in outcomes):
        # the live dashboard of every round with facts, as of the latest fact (nothing new: unchanged)
        publish_dashboard(latest_fact, None, config_path, warehouse)
    return outcomes


# --- progress of a run for a person at a terminal (`tubetrail ingest`'s bar; issue 16.6) --------------
class _Progress:
    """Files taken of those found by the ``ingest-inbox`` run of this process, told to the
    listeners of :func:`ingest_progress` (none when a worker runs the flow: nothing is told)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[int, int], None]] = []
        self.found = self.taken = 0

    def start(self, found: int) -> None:
        self.found, self.taken = found, 0
        self._tell()

    def advance(self, files: int) -> None:
        self.taken += files
        self._tell()

    def _tell(self) -> None:
        for listener in list(self.listeners):
            listener(self.taken, self.found)


_progress = _Progress()


@contextmanager
def ingest_progress(listener: Callable[[int, int], None]) -> Iterator[None]:
    """While open, ``listener(files taken, files found)`` after discovery and after each batch."""
    _progress.listeners.append(listener)
    try:
        yield
    finally:
        _progress.listeners.remove(listener)


def publish_ingest_summary(outcomes: list[FileOutcome]) -> None:
    """The per-file table and the summary (``ingest.summary``): counts and reasons only."""
    create_table_artifact(key="ingest-files", table=ingest_files_rows(outcomes),
                          description="Files taken by this ingest run")
    create_markdown_artifact(key="ingest-summary", markdown=ingest_summary_markdown(outcomes),
                             description="Ingest summary")
