"""The ``capacity-plan`` flow (``tubetrail plan``, deployment ``capacity-plan``): the plan of
``reporting.plan`` judged at an explicit ``as_of``, the ``stock_low`` alerts it finds recorded in
the outbox in the same session (one per holder, item and count: a second plan of the same counts
records nothing new) and published, and the plan as the markdown artifact ``capacity-plan``.
Aggregate only. It writes (the alerts), so it holds the warehouse writer slot while it judges."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.alerts import publish_alerts
from flows.limits import ensure_concurrency_limits, warehouse_session
from reporting.plan import capacity_plan, plan_markdown
from reporting.stock import stock_alerts
from warehouse.writer import raise_alerts


@task(task_run_name="judge capacity and stock as of {as_of}")
def judge_plan(round_id: str | None, as_of: datetime, config_path: str | None, warehouse: str | None) -> dict:
    """The plan's figures; its ``stock_low`` alerts go to the outbox in one transaction."""
    session = warehouse_session(config_path, warehouse)
    cfg = session.cfg
    with session.write(views=True) as con:
        plan = capacity_plan(con, cfg, round_id, as_of)
        alerts = stock_alerts(plan.stock, cfg, plan.figures["round_id"], as_of)
        raise_alerts(con, alerts)
    return plan.figures


def _run_name() -> str:
    return f"capacity plan {flow_run.parameters.get('round_id') or 'of the round in view'}"


@flow(name="capacity-plan", flow_run_name=_run_name)
def plan_capacity(round_id: str | None = None, as_of: datetime | None = None, config_path: str | None = None,
                  warehouse: str | None = None) -> dict:
    """``round_id`` None: the round open at ``as_of``, else the latest. ``as_of`` None (a
    deployment run from the UI): now, the one place the wall clock enters."""
    cfg = warehouse_session(config_path, warehouse).cfg
    when = as_of or datetime.now(timezone.utc)
    ensure_concurrency_limits(cfg)
    figures = judge_plan(round_id, when, config_path, warehouse)
    publish_alerts("after the plan", config_path, warehouse)
    create_markdown_artifact(key="capacity-plan", markdown=plan_markdown(figures),
                             description=f"Capacity and stock of round {figures['round_id'] or '(none)'}")
    under = figures["under_minimum"]
    get_run_logger().log(30 if under else 20, "round %s: %s tubes, %s h to test everyone; %d item(s) under %g days",
                         figures["round_id"], f"{figures['tubes']:,}", figures["hours_to_test"], len(under),
                         cfg.stock.min_days)
    return figures
