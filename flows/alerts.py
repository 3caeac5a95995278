"""Alerts in the Prefect UI, published from the alert outbox, and the automation that turns
a positive pool's event into a notification (created by ``tubetrail demo`` and by
``ensure_alert_automations``). Masked and aggregate only.

The outbox (``alert_outbox``, migration 5) is written in the transaction of the facts that
raise an alert (``warehouse.writer.record_batch``), so a crash after that
transaction loses nothing: :func:`publish_alerts` publishes every ``pending`` row, by kind,

* ``pool_positive``: the markdown artifact ``positive-pool-<tube>`` and the event
  ``tubetrail.pool.positive`` (resource ``tubetrail.tube.<barcode>``, payload counts only);
* ``positive_single``: a single tube called positive, a person positive (a single sample, a
  re-sample): the artifact ``positive-single-<tube>`` and the event ``tubetrail.single.positive``;
* ``urgent_overdue``: a positive pool's urgent re-samples past their due time with people not
  re-sampled, judged at an ``as_of`` (:func:`raise_timed_alerts_at`): ``overdue-<tube>`` and
  ``tubetrail.order.overdue``;
* ``file_refused``: the markdown artifact ``file-refused-<hash>`` and the event
  ``tubetrail.file.refused`` (resource ``tubetrail.file.<content hash>``, name and size);

and marks each ``published``. It runs after each results file and refusal (``ingest-feed``)
and at the start and end of every ``ingest-inbox`` run, so what a crashed run left pending is
published by the next one even when every file is skipped as seen. It holds the warehouse write
slot from reading the pending rows to marking them, so concurrent runs never publish one alert
twice; it counts an attempt before publishing, so a row found pending with attempts > 0 (its
publisher died between publishing and marking) is published again only where it is missing:

* **the event** carries a deterministic id, uuid5 of the warehouse's own id (migration 5) and
  the alert id, so a re-publish sends the same id. What Prefect 3.8's server does with a second
  event of one id (``prefect/server``): storage drops it (``events/storage/database.py``:
  SQLite skips ids already stored, PostgreSQL ``ON CONFLICT DO NOTHING``), so the event feed
  shows it once. Automations are guarded differently: the reactive trigger handler
  (``events/triggers.py``) skips an id its causal-ordering module has seen; the default module
  (``events/ordering/memory.py``) remembers ids in a per-process TTL cache of 10,000 ids for
  30 minutes (``SEEN_EXPIRATION``). So a repeated id does not notify twice when it comes back
  within 30 minutes to the same server process; after a server restart, on another server
  replica, or later than that, the automation would fire again (the stored event stays single).
  The window for that is only a publisher killed between the event and its mark.
* **the artifact** has no client-given id; a re-publish first looks for an artifact of the key
  whose description carries the event id, and creates none if it is there.

Emitting: ``prefect.events.emit_event`` only queues the event for the ``EventsWorker`` thread;
``EventsWorker.instance().wait_until_empty()`` (or ``drain()``) waits for the queue, but a send
that fails there is logged and dropped (``QueueService._main_loop``), so the outbox could mark an
event that never left. The publisher therefore sends with its own events client
(``get_events_client(checkpoint_every=1)``): ``emit`` returns only after a websocket ping/pong
behind the event, i.e. once the server has read it, and raises when it cannot; then the row is
marked. A failure leaves the row pending for the next run (logged, counts only).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.limits import warehouse_session
from reporting.alerts import (
    FILE_REFUSED,
    FILE_REFUSED_EVENT,
    POOL_POSITIVE,
    POOL_POSITIVE_EVENT,
    POSITIVE_SINGLE,
    POSITIVE_SINGLE_EVENT,
    URGENT_OVERDUE,
    URGENT_OVERDUE_EVENT,
    OutboxAlert,
    PoolAlert,
    file_refused_markdown,
    GENERIC_KINDS,
    artifact_slug,
    city_value,
    generic_alert_markdown,
    overdue_markdown,
    pool_alert_from_payload,
    pool_alert_markdown,
)
from reporting.timed_alerts import timed_alerts
from kernel.config import Config
from warehouse.session import WarehouseSession
from warehouse.writer import (
    PendingAlert,
    count_pending_alerts,
    mark_alert_published,
    pending_alerts,
    record_alert_attempts,
    raise_alerts,
    warehouse_id,
)

AUTOMATION_NAME = "tubetrail: positive pool -> notify the coordinator"
NOTIFICATION_BLOCK = "tubetrail-pool-alerts"
#: the namespace of alert event ids (uuid5 of warehouse id and alert id)
ALERT_EVENT_NAMESPACE = uuid.UUID("5f0c1e8a-7d3b-4c52-9a61-2b9e4f7d1c30")


def artifact_key(tube_barcode: str, prefix: str = "positive-pool-") -> str:
    """Artifact keys are lower-case letters, digits and dashes."""
    return prefix + artifact_slug(tube_barcode)


def single_artifact_key(tube_barcode: str) -> str:
    return artifact_key(tube_barcode, "positive-single-")


def refused_artifact_key(content_hash: str) -> str:
    return "file-refused-" + content_hash[:16].lower()


def alert_event_id(warehouse: str, alert_id: str) -> uuid.UUID:
    """The same alert of the same warehouse always has the same event id."""
    return uuid.uuid5(ALERT_EVENT_NAMESPACE, f"{warehouse}|{alert_id}")


def event_payload(alert: PoolAlert, timezone_name: str) -> dict:
    """Counts and places, never a person; times in the city's time zone."""
    zone = ZoneInfo(timezone_name)
    return {"round_id": alert.round_id, "call": alert.call, "lab_id": alert.lab_id, "run_id": alert.run_id,
            "plate_id": alert.plate_id, "people": alert.people, "grids": alert.grids,
            "pooled": alert.pooled, "resample": alert.resample,
            "called_at": alert.called_at.astimezone(zone).isoformat(timespec="minutes"),
            "due_by": alert.due_by.astimezone(zone).isoformat(timespec="minutes") if alert.due_by else None}


def _publication(alert: PendingAlert, cfg: Config) -> tuple[str, str, str, dict, dict]:
    """(artifact key, markdown, description, event resource, event payload) of one alert."""
    if alert.kind in (POOL_POSITIVE, POSITIVE_SINGLE):
        call = pool_alert_from_payload(alert.payload)
        key, description = ((artifact_key(call.tube_barcode), f"Positive pool {call.tube_barcode}: {call.people} people to re-sample")
                            if call.pooled else
                            (single_artifact_key(call.tube_barcode), f"Positive single tube {call.tube_barcode}: a person positive"))
        return (key, pool_alert_markdown(call, cfg.city.timezone), description,
                {"prefect.resource.id": f"tubetrail.tube.{call.tube_barcode}",
                 "prefect.resource.name": call.tube_barcode, "tubetrail.lab": call.lab_id},
                event_payload(call, cfg.city.timezone))
    if alert.kind == URGENT_OVERDUE:
        p = alert.payload
        outbox = OutboxAlert(alert.kind, alert.subject, alert.raised_at, p)
        return (artifact_key(alert.subject, "overdue-"), overdue_markdown(outbox, cfg.city.timezone),
                f"Urgent re-samples overdue: pool {alert.subject}, {p['people_overdue']} people",
                {"prefect.resource.id": f"tubetrail.tube.{alert.subject}", "prefect.resource.name": alert.subject},
                {"round_id": p["round_id"], "people_overdue": p["people_overdue"], "districts": p["districts"],
                 "due_by": datetime.fromisoformat(p["due_by"]).astimezone(ZoneInfo(cfg.city.timezone))
                 .isoformat(timespec="minutes")})
    if alert.kind == FILE_REFUSED:
        outbox = OutboxAlert(alert.kind, alert.subject, alert.raised_at, alert.payload)
        p = alert.payload
        return (refused_artifact_key(alert.subject), file_refused_markdown(outbox),
                f"File refused: {p['file_name']}",
                {"prefect.resource.id": f"tubetrail.file.{alert.subject}", "prefect.resource.name": p["file_name"],
                 "tubetrail.kind": p["kind"]},
                {"file_name": p["file_name"], "kind": p["kind"], "size_bytes": p["size_bytes"]})
    if kind := GENERIC_KINDS.get(alert.kind):
        p = alert.payload
        outbox = OutboxAlert(alert.kind, alert.subject, alert.raised_at, p)
        facts = {name: city_value(value, cfg.city.timezone) for name, value in p["facts"].items()}
        return (artifact_key(alert.subject, kind.artifact_prefix), generic_alert_markdown(outbox, cfg.city.timezone),
                p["title"],
                {"prefect.resource.id": f"tubetrail.{kind.resource_type}.{p['resource']}",
                 "prefect.resource.name": p["resource"]},
                {"title": p["title"], "summary": p["summary"], **facts})
    raise ValueError(f"alert kind {alert.kind!r} has no publisher")


EVENT_NAMES = {POOL_POSITIVE: POOL_POSITIVE_EVENT, POSITIVE_SINGLE: POSITIVE_SINGLE_EVENT,
               URGENT_OVERDUE: URGENT_OVERDUE_EVENT, FILE_REFUSED: FILE_REFUSED_EVENT,
               **{k.kind: k.event for k in GENERIC_KINDS.values()}}


def _artifact_published(key: str, marker: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return any(marker in (a.description or "") for a in found)


def _send_event(event) -> None:
    """Send one event and return once the server has read it (raises when it cannot)."""
    from prefect.events.clients import get_events_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def send() -> None:
        async with get_events_client(reconnection_attempts=3, checkpoint_every=1) as client:
            await client.emit(event)

    run_coro_as_sync(send())


def publish_pending_alerts(session: WarehouseSession, *, run_id: str | None, logger) -> int:
    """Publish every pending alert of the outbox and mark it; returns how many were published."""
    from prefect.events import Event

    cfg = session.cfg
    with session.read() as con:  # a read: most calls find nothing to do
        if not count_pending_alerts(con):
            return 0
    published = failed = 0
    with session.write() as con:
        pending = pending_alerts(con)
        this_warehouse = warehouse_id(con)
        record_alert_attempts(con, [a.alert_id for a in pending])
        for alert in pending:
            event_id = alert_event_id(this_warehouse, alert.alert_id)
            marker = f"alert {event_id}"
            try:
                artifact, markdown, description, resource, payload = _publication(alert, cfg)
                # attempts > 0: a run may have published it and died before marking it
                if alert.attempts == 0 or not _artifact_published(artifact, marker):
                    create_markdown_artifact(key=artifact, markdown=markdown, description=f"{description} ({marker})")
                _send_event(Event(id=event_id, event=EVENT_NAMES[alert.kind], resource=resource, payload=payload))
            except Exception as exc:  # left pending: the next run publishes it
                failed += 1
                logger.warning("alert %s not published (%s); it stays pending for the next run",
                               alert.alert_id, type(exc).__name__)
                continue
            mark_alert_published(con, alert.alert_id, run_id)
            published += 1
            if alert.kind == POOL_POSITIVE:
                logger.warning("positive pool %s (lab %s, plate %s): %d people flagged, urgent home re-sampling",
                               alert.subject, alert.payload["lab_id"], alert.payload["plate_id"],
                               alert.payload["people"])
            elif alert.kind == POSITIVE_SINGLE:
                logger.warning("positive single tube %s (lab %s, plate %s): a person positive",
                               alert.subject, alert.payload["lab_id"], alert.payload["plate_id"])
            elif alert.kind == FILE_REFUSED:
                logger.warning("file refused: %s", alert.payload.get("file_name"))
            elif alert.kind in GENERIC_KINDS:
                logger.warning("%s", alert.payload["title"])
    if failed:
        logger.warning("%d alert(s) left pending", failed)
    return published


@task(task_run_name="publish alerts {when}")
def publish_alerts(when: str, config_path: str | None, warehouse: str | None) -> int:
    """Publish what the outbox holds pending (``when`` names the moment in the run name)."""
    return publish_pending_alerts(warehouse_session(config_path, warehouse), run_id=str(flow_run.get_id()),
                                  logger=get_run_logger())


#: one automation per alert event (DESIGN §8: an event and an automation each), all notifying
#: the coordinator through one webhook block: (name, description, subject, body)
AUTOMATIONS: dict[str, tuple[str, str, str, str]] = {
    POOL_POSITIVE_EVENT: (
        AUTOMATION_NAME,
        "A pooled tube turned positive: notify the lab coordinator (counts only, no personal data).",
        "Positive pool {{ event.resource.name }}",
        "Positive pool {{ event.resource.name }} ({{ event.payload.call }}) at lab {{ event.payload.lab_id }}, "
        "plate {{ event.payload.plate_id }}: {{ event.payload.people }} people in {{ event.payload.grids }} grid(s) "
        "to re-sample at home by {{ event.payload.due_by }}."),
    POSITIVE_SINGLE_EVENT: (
        "tubetrail: positive single tube -> notify the coordinator",
        "A single tube (a single sample or a re-sample) turned positive: a person is positive (no personal data).",
        "Positive single tube {{ event.resource.name }}",
        "Positive single tube {{ event.resource.name }} ({{ event.payload.call }}; re-sample: "
        "{{ event.payload.resample }}) at lab {{ event.payload.lab_id }}, plate {{ event.payload.plate_id }}, "
        "called {{ event.payload.called_at }}: one person positive, hand over to the CDC now."),
    URGENT_OVERDUE_EVENT: (
        "tubetrail: urgent re-samples overdue -> notify the coordinator",
        "A positive pool's urgent home re-samples are past their due time (counts only).",
        "Urgent re-samples overdue: pool {{ event.resource.name }}",
        "{{ event.payload.people_overdue }} people of the positive pool {{ event.resource.name }} were due for home "
        "re-sampling by {{ event.payload.due_by }} and are not re-sampled yet ({{ event.payload.districts }})."),
    FILE_REFUSED_EVENT: (
        "tubetrail: file refused -> notify the coordinator",
        "An inbox file could not be read and was refused whole (name and size only).",
        "File refused: {{ event.resource.name }}",
        "The {{ event.payload.kind }} file {{ event.resource.name }} ({{ event.payload.size_bytes }} bytes) was "
        "refused whole; the reason is in the ingest summary. Fix it at the source and send it again."),
    # the generic kinds: their title and summary are written by the rule that raises them
    **{k.event: (k.automation, k.description, "{{ event.payload.title }}", "{{ event.payload.summary }}")
       for k in GENERIC_KINDS.values()},
}


def ensure_alert_automations(webhook_url: str) -> dict[str, str]:
    """Create (or replace) one automation per alert event (:data:`AUTOMATIONS`): each event
    sends a notification through a custom-webhook block to ``webhook_url``. Returns the
    automation id per event."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="tubetrail pool alerts", url=webhook_url, method="POST", allow_private_urls=True,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    block_id = block.save(NOTIFICATION_BLOCK, overwrite=True)
    created = {}
    for event, (name, description, subject, body) in AUTOMATIONS.items():
        try:
            Automation.read(name=name).delete()
        except ValueError:
            pass
        automation = Automation(
            name=name, description=description,
            trigger=EventTrigger(expect={event}, match={"prefect.resource.id": "tubetrail.*"},
                                 posture=Posture.Reactive, threshold=1, within=0),
            actions=[SendNotification(block_document_id=block_id, subject=subject, body=body)],
        ).create()
        created[event] = str(automation.id)
    return created


def raise_timed_alerts_at(session: WarehouseSession, as_of: datetime) -> int:
    """Record the alerts judged at ``as_of`` (``reporting.timed_alerts.timed_alerts``: urgent
    re-samples overdue, ...) in the outbox, one transaction under the write slot;
    :func:`publish_pending_alerts` sends them. Returns how many rules' alerts were found (an
    alert recorded before is not recorded again)."""
    with session.write(views=True) as con:
        alerts = timed_alerts(con, session.cfg, as_of)
        raise_alerts(con, alerts)
    return len(alerts)


@task(task_run_name="raise timed alerts as of {as_of}")
def raise_timed_alerts(as_of: datetime, config_path: str | None, warehouse: str | None) -> int:
    """The alerts judged at ``as_of`` (the latest fact ingested, or a report's time)."""
    return raise_timed_alerts_at(warehouse_session(config_path, warehouse), as_of)
