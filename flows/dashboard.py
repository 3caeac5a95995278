"""The live round dashboard in the Prefect UI: ``publish_dashboard`` rebuilds
``reporting.dashboard.round_dashboard`` for each live round and writes it under one fixed key per
round, ``round-dashboard-<round>`` (Prefect keeps every version of a key; the Artifacts page
shows one entry, the latest), with the table of the round's positive pools,
``positive-pools-<round>``, beside it. Run at the end of every ingest run that took a file or
published an alert (as of the latest fact: the rounds with facts that are live then) and of every
report run (its round, as of the report's time). A read: the warehouse file lock, no write slot.
Aggregate and masked only."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.limits import warehouse_session
from reporting.alerts import city_time_text
from reporting.dashboard import (
    dashboard_key,
    dashboard_rounds,
    positive_pool_rows,
    positive_pools_key,
    round_dashboard,
)
from reporting.summary import latest_fact_time


def _dashboard_run_name() -> str:
    from prefect.runtime import task_run

    rounds = task_run.parameters.get("round_ids")
    return "publish the live dashboard" + (f" of {', '.join(rounds)}" if rounds else "")


@task(task_run_name=_dashboard_run_name)
def publish_dashboard(as_of: datetime | None, round_ids: list[str] | None, config_path: str | None,
                      warehouse: str | None) -> list[str]:
    """Publish the dashboard of ``round_ids`` (None: every round live at ``as_of``) as of
    ``as_of`` (None: the latest fact ingested). Returns the artifact keys written."""
    session = warehouse_session(config_path, warehouse)
    cfg = session.cfg
    with session.read() as con:
        as_of = as_of or latest_fact_time(con)
        if as_of is None:  # nothing happened yet: no round has a dashboard
            return []
        rounds = round_ids if round_ids is not None else dashboard_rounds(con, as_of)
        if not rounds:
            return []
        session.define_views(con, snapshot=True)  # a read over the whole city
        pages = [(rid, round_dashboard(con, cfg, rid, as_of), positive_pool_rows(con, cfg, rid, as_of))
                 for rid in rounds]
    when = city_time_text(as_of, cfg.city.timezone)
    keys = []
    for rid, markdown, pools in pages:
        create_markdown_artifact(
            key=dashboard_key(rid), markdown=markdown,
            description=f"Live dashboard of round {rid}, as of {when}: headline, labs, invalid plates, "
                        "anomalies to chase, alerts")
        keys.append(dashboard_key(rid))
        if pools:  # a pool never stops being positive: with none there is nothing to show or leave stale
            create_table_artifact(
                key=positive_pools_key(rid), table=pools,
                description=f"Positive pools of round {rid}, as of {when}: {len(pools)} pool(s), "
                            f"{sum(p['people'] for p in pools)} people flagged (one row per pool; masked cards "
                            "under positive-pool-<tube>)")
            keys.append(positive_pools_key(rid))
    get_run_logger().info("live dashboard of %s as of %s", ", ".join(rounds), when)
    return keys
