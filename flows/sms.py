"""The ``sms-reminders`` flow: plan the due reminders into the outbox (one transaction, under
the write slot), then send the outbox's pending messages in batches without holding the
warehouse. Before any request a sender claims its batch in the warehouse (owner and lease, one
transaction, write slot), so concurrent senders never send one message; each batch's answers
are recorded under the write slot again, for the sender's own claims only. Messages that may
have reached the provider (``unknown``, or claimed by a sender whose lease ran out) are looked
up at the provider first, never re-sent blindly. A refusal of the account stops the send: its
messages stay pending and the run fails with one line (no traceback). Counts only in logs and
artifacts."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.limits import ensure_concurrency_limits, warehouse_session
from reporting.reminders import plan_reminders, reminders_markdown
from sampling.rounds import round_open_at
from notify import AccountRefused, Message, MissingCredentials, SendResult, provider_for
from notify.sending import lookup_messages, send_messages
from warehouse.writer import claim_reminders, claim_unsettled, record_planned_reminders, record_reminder_results

BATCH = 500


def _run_name() -> str:
    dry = " (dry run)" if flow_run.parameters.get("dry_run") else ""
    return f"sms reminders {flow_run.parameters.get('round_id') or 'current round'}{dry}"


def _frame(results: list[SendResult]) -> pl.DataFrame:
    return pl.DataFrame([asdict(r) for r in results], schema={
        "message_id": pl.Utf8, "state": pl.Utf8, "attempts": pl.Int32, "provider_message_id": pl.Utf8,
        "error": pl.Utf8, "opted_out": pl.Boolean})


def _tally(results: list[SendResult]) -> dict[str, int]:
    return {state: sum(r.state == state for r in results) for state in ("sent", "failed", "pending", "unknown")}


@flow(name="sms-reminders", flow_run_name=_run_name)
def sms_reminders(round_id: str | None = None, dry_run: bool = False, as_of: datetime | None = None,
                  config_path: str | None = None, warehouse: str | None = None) -> dict:
    session = warehouse_session(config_path, warehouse)
    cfg = session.cfg
    when = as_of or datetime.now(timezone.utc)
    logger = get_run_logger()
    try:
        provider = None if dry_run else provider_for(cfg.sms)
    except MissingCredentials as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc), data=exc)
    if not dry_run:
        ensure_concurrency_limits(cfg)
    run_id = str(flow_run.get_id())
    with (session.read() if dry_run else session.write()) as con:  # a dry run writes nothing
        round_id = round_id or round_open_at(con, when)
        if round_id is None:  # the served sweep between rounds, or over a replayed round: nobody is due
            logger.info("no round is open at %s: no reminders", when.isoformat(timespec="minutes"))
            return {"round_id": None, "counts": {}, "sent": 0, "failed": 0}
        session.define_views(con, snapshot=True)
        plan = plan_reminders(con, cfg.sms, cfg.city.timezone, round_id, when, cfg.key_groups)
        planned = 0 if dry_run else record_planned_reminders(con, plan.due, provider.name, run_id)
    if plan.counts.get("after_deadline"):
        logger.info("round %s: its deadline has passed at %s; nobody is reminded (%d untested)", round_id,
                    when.isoformat(timespec="minutes"), plan.counts["after_deadline"])
    counts = {**plan.counts, "planned_now": planned}
    if dry_run:
        logger.info("dry run for %s: %s", round_id, counts)
        return {"round_id": round_id, "counts": counts, "sent": 0, "failed": 0}
    owner = f"{run_id}/{uuid.uuid4().hex[:12]}"  # this sender; a retried run is another sender
    lease = cfg.sms.lease_seconds

    # what may have reached the provider: looked up there, never sent again blindly
    with session.write() as con:
        unsettled = claim_unsettled(con, round_id, owner, lease, cfg.sms.settle_seconds)
    looked_up = _tally([])
    if unsettled:
        found = lookup_messages([Message(*row) for row in unsettled], provider, cfg.sms)
        with session.write() as con:
            record_reminder_results(con, _frame(found), owner, run_id, reconciled=True)
        looked_up = _tally(found)
        logger.info("looked up %d messages that may have reached the provider: %d taken, %d not taken (sent "
                    "again below), %d it could not tell", len(found), looked_up["sent"], looked_up["pending"],
                    looked_up["unknown"])

    sent = failed = later = unknown = 0
    refused: AccountRefused | None = None
    tried: list[str] = []  # each pending message once per run; one the provider kept refusing waits for the next
    while refused is None:
        with session.write() as con:
            started = time.monotonic()  # before the claim's clock: the lease ends no earlier than this says
            claimed = claim_reminders(con, round_id, owner, lease, BATCH, tried)
        if not claimed:
            break
        try:
            results = send_messages([Message(*row) for row in claimed], provider, cfg.sms, deadline=started + lease)
        except AccountRefused as exc:
            results, refused = exc.results, exc
        # given up on for now (tried): the next run's; never tried (the lease ran out): claimed again
        tried += [r.message_id for r in results if r.state == "pending" and r.attempts > 0]
        with session.write() as con:
            record_reminder_results(con, _frame(results), owner, run_id)
        tally = _tally(results)
        sent, failed, later, unknown = (sent + tally["sent"], failed + tally["failed"], later + tally["pending"],
                                        unknown + tally["unknown"])
        logger.info("batch of %d: %d sent, %d failed, %d left for the next run, %d unknown so far",
                    len(results), sent, failed, later, unknown)
    counts.update(sent=sent, failed=failed, retry_next_run=later, unknown=unknown,
                  looked_up_taken=looked_up["sent"], looked_up_not_taken=looked_up["pending"],
                  looked_up_unknown=looked_up["unknown"])
    create_markdown_artifact(key="sms-reminders",
                             markdown=reminders_markdown(round_id, counts, str(refused) if refused else None),
                             description=f"SMS reminders of {round_id}: counts only")
    if refused is not None:
        logger.error("%s", refused)
        return Failed(message=str(refused), data=refused)
    return {"round_id": round_id, "counts": counts, "sent": sent, "failed": failed, "retry_next_run": later,
            "unknown": unknown, "looked_up": looked_up}
