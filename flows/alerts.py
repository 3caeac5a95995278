"""Positive-pool alerts in the Prefect UI: one markdown artifact per positive pool and one
Prefect event ``tubetrail.pool.positive``, published right after the results file that called
it was taken; and the automation that turns the event into a notification (created by
``tubetrail demo`` and by ``ensure_pool_alert_automation``). Masked and aggregate only."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from reporting.alerts import POOL_POSITIVE_EVENT, PoolAlert, pool_alert_markdown, positive_pools
from tubetrail.config import load_config
from tubetrail.secrets import id_hash_key
from tubetrail.views import define_views
from warehouse.connection import open_configured

AUTOMATION_NAME = "tubetrail: positive pool -> notify the coordinator"
NOTIFICATION_BLOCK = "tubetrail-pool-alerts"


def artifact_key(tube_barcode: str) -> str:
    """Artifact keys are lower-case letters, digits and dashes."""
    return "positive-pool-" + re.sub(r"[^a-z0-9-]+", "-", tube_barcode.lower()).strip("-")


def event_payload(alert: PoolAlert, timezone_name: str) -> dict:
    """Counts and places, never a person; times in the city's time zone."""
    zone = ZoneInfo(timezone_name)
    return {"round_id": alert.round_id, "call": alert.call, "lab_id": alert.lab_id, "run_id": alert.run_id,
            "plate_id": alert.plate_id, "people": alert.people, "grids": alert.grids,
            "called_at": alert.called_at.astimezone(zone).isoformat(timespec="minutes"),
            "due_by": alert.due_by.astimezone(zone).isoformat(timespec="minutes") if alert.due_by else None}


@task(task_run_name="alert positive pools of {file_label}")
def publish_pool_alerts(file_label: str, content_hash: str, config_path: str | None, warehouse: str | None) -> int:
    """The pools this results file turned positive: an artifact and an event each."""
    cfg = load_config(config_path).with_warehouse(warehouse)
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        define_views(con, cfg)
        alerts = positive_pools(con, cfg, [content_hash], datetime.now(timezone.utc))
    logger = get_run_logger()
    for alert in alerts:
        create_markdown_artifact(key=artifact_key(alert.tube_barcode), markdown=pool_alert_markdown(alert, cfg.city.timezone),
                                 description=f"Positive pool {alert.tube_barcode}: {alert.people} people to re-sample")
        emit_event(
            event=POOL_POSITIVE_EVENT,
            resource={"prefect.resource.id": f"tubetrail.tube.{alert.tube_barcode}",
                      "prefect.resource.name": alert.tube_barcode, "tubetrail.lab": alert.lab_id},
            payload=event_payload(alert, cfg.city.timezone),
        )
        logger.warning("positive pool %s (lab %s, plate %s): %d people flagged, urgent home re-sampling",
                       alert.tube_barcode, alert.lab_id, alert.plate_id, alert.people)
    return len(alerts)


def ensure_pool_alert_automation(webhook_url: str) -> str:
    """Create (or replace) the automation: every ``tubetrail.pool.positive`` event sends a
    notification through a custom-webhook block to ``webhook_url``. Returns the automation id."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="tubetrail pool alerts", url=webhook_url, method="POST", allow_private_urls=True,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    block_id = block.save(NOTIFICATION_BLOCK, overwrite=True)
    try:
        Automation.read(name=AUTOMATION_NAME).delete()
    except ValueError:
        pass
    automation = Automation(
        name=AUTOMATION_NAME,
        description="A pooled tube turned positive: notify the lab coordinator (counts only, no personal data).",
        trigger=EventTrigger(expect={POOL_POSITIVE_EVENT}, match={"prefect.resource.id": "tubetrail.tube.*"},
                             posture=Posture.Reactive, threshold=1, within=0),
        actions=[SendNotification(
            block_document_id=block_id,
            subject="Positive pool {{ event.resource.name }}",
            body=("Positive pool {{ event.resource.name }} ({{ event.payload.call }}) at lab {{ event.payload.lab_id }}, "
                  "plate {{ event.payload.plate_id }}: {{ event.payload.people }} people in {{ event.payload.grids }} grid(s) "
                  "to re-sample at home by {{ event.payload.due_by }}."),
        )],
    ).create()
    return str(automation.id)
