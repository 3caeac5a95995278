"""The ``round-report`` flow: every report file of a round (``reporting.report``), then one
pack per district fanned out on Dask (subflow ``district-packs``, ``flows.districts``: the
door-to-door worklists, untested and orders of each district), then the coordinator's
artifacts: coverage per district (table), the headline (markdown, with where the report lies).
Aggregate only. A read: it holds the warehouse file lock (not the write slot) while it writes
the report files, and releases it before the fan-out, which reads only those files."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.alerts import publish_alerts, raise_timed_alerts
from flows.dashboard import publish_dashboard
from flows.districts import dask_task_runner, district_packs
from flows.limits import ensure_concurrency_limits, warehouse_session
from reporting.districts import report_districts
from reporting.report import coverage_by_district_rows, current_round, round_report_markdown, write_report
from reporting.html import report_link


def _run_name() -> str:
    return f"report {flow_run.parameters.get('round_id') or 'current round'}"


@flow(name="round-report", flow_run_name=_run_name)
def round_report(round_id: str | None, out: str, as_of: datetime | None = None, config_path: str | None = None,
                 warehouse: str | None = None, dated: bool = False) -> dict:
    """``round_id`` None: the current round (the nightly deployment). ``dated``: write into
    ``out/<round>/<date in city time>`` so each night keeps its report."""
    session = warehouse_session(config_path, warehouse)
    cfg = session.cfg
    when = as_of or datetime.now(timezone.utc)
    with session.read(snapshot=True) as con:
        round_id = round_id or current_round(con, when)
        folder = Path(out) / round_id / f"{when.astimezone(ZoneInfo(cfg.city.timezone)):%Y-%m-%d}" if dated else Path(out)
        figures = write_report(con, cfg, round_id, when, folder)
    ensure_concurrency_limits(cfg)  # the overdue alerts below are a write
    raise_timed_alerts(when, config_path, warehouse)  # overdue, lost, silent, over capacity at the report's time
    publish_alerts("after the report", config_path, warehouse)
    publish_dashboard(when, [round_id], config_path, warehouse)  # the live dashboard at the report's time
    packs = district_packs.with_options(task_runner=dask_task_runner(cfg.scale))(
        str(folder), report_districts(folder))
    worklists = sum(p["worklists"] for p in packs)
    create_table_artifact(key="coverage-by-district", table=coverage_by_district_rows(figures),
                          description=f"Coverage of round {round_id} by district")
    city = figures.city
    page = (folder / "report.html").resolve()
    link = report_link(cfg.report.link_base, page) if cfg.report.link_base else None
    if link:
        create_link_artifact(key="report-link", link=link, link_text=f"report.html of {round_id}",
                             description=f"Round {round_id}: the report page (aggregate, no personal data)")
    where = f"[report.html]({link})" if link else f"`{page}`"
    create_markdown_artifact(key="round-report", markdown=round_report_markdown(figures, packs, where),
                             description=f"Round {round_id} report")
    get_run_logger().info("report of %s written to %s: %d files, coverage %.2f %%", round_id, folder,
                          len(figures.files), 100 * (city.get("coverage") or 0))
    return {"round_id": round_id, "out": str(folder), "link": link, "files": figures.files,
            "coverage": city.get("coverage"), "worklists": worklists, "districts": packs}
