"""The ``sms-reminders`` flow: plan the due reminders into the outbox (one transaction, under
the write slot), then send the outbox's pending messages in batches without holding the
warehouse, recording each batch's answers (write slot again). A retry, a re-run or a sender
killed halfway sends nothing twice that the outbox knows was sent, and re-sends a pending
message under the same id (the webhook provider's idempotency key). Counts only in logs and
artifacts."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime, timezone

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.limits import ensure_concurrency_limits, warehouse_write_guard
from flows.report import current_round
from reporting.reminders import plan_reminders
from reporting.sms import Message, provider_for, send_messages
from tubetrail.config import load_config
from tubetrail.secrets import id_hash_key
from tubetrail.views import define_views
from warehouse.connection import open_configured
from warehouse.writer import record_planned_reminders, record_reminder_results

BATCH = 500


def _run_name() -> str:
    dry = " (dry run)" if flow_run.parameters.get("dry_run") else ""
    return f"sms reminders {flow_run.parameters.get('round_id') or 'current round'}{dry}"


@flow(name="sms-reminders", flow_run_name=_run_name)
def sms_reminders(round_id: str | None = None, dry_run: bool = False, as_of: datetime | None = None,
                  config_path: str | None = None, warehouse: str | None = None) -> dict:
    cfg = load_config(config_path).with_warehouse(warehouse)
    when = as_of or datetime.now(timezone.utc)
    logger = get_run_logger()
    provider = None if dry_run else provider_for(cfg.sms)
    guard = warehouse_write_guard(cfg)
    if not dry_run:
        ensure_concurrency_limits(cfg)
    with (guard() if not dry_run else nullcontext()), open_configured(cfg.warehouse, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        round_id = round_id or current_round(con, when)
        plan = plan_reminders(con, cfg.sms, cfg.city.timezone, round_id, when)
        planned = 0 if dry_run else record_planned_reminders(con, plan.due, provider.name, str(flow_run.get_id()))
    counts = {**plan.counts, "planned_now": planned}
    if dry_run:
        logger.info("dry run for %s: %s", round_id, counts)
        return {"round_id": round_id, "counts": counts, "sent": 0, "failed": 0}
    sent = failed = later = 0
    tried: list[str] = []  # each pending message once per run; one the provider kept refusing waits for the next
    while True:
        with open_configured(cfg.warehouse, id_hash_key()) as con:
            pending = con.execute(
                "SELECT message_id, phone, body, params::VARCHAR FROM sms_outbox WHERE round_id = ? AND state = 'pending'"
                " AND message_id NOT IN (SELECT unnest(?::VARCHAR[])) ORDER BY planned_at, message_id LIMIT ?",
                [round_id, tried, BATCH]).fetchall()
        if not pending:
            break
        tried += [row[0] for row in pending]
        results = send_messages([Message(*row) for row in pending], provider, cfg.sms)
        frame = pl.DataFrame([asdict(r) for r in results], schema={
            "message_id": pl.Utf8, "state": pl.Utf8, "attempts": pl.Int32, "provider_message_id": pl.Utf8,
            "error": pl.Utf8, "opted_out": pl.Boolean})
        with guard(), open_configured(cfg.warehouse, id_hash_key()) as con:
            record_reminder_results(con, frame)
        sent += sum(r.state == "sent" for r in results)
        failed += sum(r.state == "failed" for r in results)
        later += sum(r.state == "pending" for r in results)
        logger.info("batch of %d: %d sent, %d failed, %d left for the next run", len(results), sent, failed, later)
    counts.update(sent=sent, failed=failed, retry_next_run=later)
    create_markdown_artifact(
        key="sms-reminders",
        markdown="\n".join([f"# SMS reminders, round {round_id}", "", "| outcome | people |", "|---|---:|",
                            *[f"| {k} | {v:,} |" for k, v in counts.items()]]),
        description=f"SMS reminders of {round_id}: counts only")
    return {"round_id": round_id, "counts": counts, "sent": sent, "failed": failed, "retry_next_run": later}

