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
from flows.limits import ensure_concurrency_limits
from reporting.districts import report_districts
from reporting.daily import ROUND_TAIL_DAYS
from reporting.report import write_report
from kernel.config import load_config
from reporting.html import report_link
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_configured


#: a nightly report follows a round until this long after its window closed (its re-samples):
#: the days the daily report gives a round
REPORT_AFTER_ROUND = f"{ROUND_TAIL_DAYS} days"


def current_round(con, when: datetime) -> str:
    """The round a nightly report is about: the latest whose window has started and that ended
    no more than two days before ``when`` (a schedule never reports a round long over, e.g. a
    replayed one, as of the wall clock)."""
    rows = con.execute(f"SELECT round_id FROM rounds WHERE starts_at <= ? AND ends_at + INTERVAL '{REPORT_AFTER_ROUND}' > ?"
                       " ORDER BY starts_at DESC LIMIT 1", [when, when]).fetchall()
    if not rows:
        raise ValueError(f"no round is current at {when.isoformat(timespec='minutes')}")
    return rows[0][0]


def _run_name() -> str:
    return f"report {flow_run.parameters.get('round_id') or 'current round'}"


@flow(name="round-report", flow_run_name=_run_name)
def round_report(round_id: str | None, out: str, as_of: datetime | None = None, config_path: str | None = None,
                 warehouse: str | None = None, dated: bool = False) -> dict:
    """``round_id`` None: the current round (the nightly deployment). ``dated``: write into
    ``out/<round>/<date in city time>`` so each night keeps its report."""
    cfg = load_config(config_path).with_warehouse(warehouse)
    when = as_of or datetime.now(timezone.utc)
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        round_id = round_id or current_round(con, when)
        folder = Path(out) / round_id / f"{when.astimezone(ZoneInfo(cfg.city.timezone)):%Y-%m-%d}" if dated else Path(out)
        figures = write_report(con, cfg, round_id, when, folder)
    # coverage per district as the report computed it (issue 15: not derived a second time)
    districts = [tuple(row.values()) for row in figures.districts]
    ensure_concurrency_limits(cfg)  # the overdue alerts below are a write
    raise_timed_alerts(when, config_path, warehouse)  # overdue, lost, silent, over capacity at the report's time
    publish_alerts("after the report", config_path, warehouse)
    publish_dashboard(when, [round_id], config_path, warehouse)  # the live dashboard at the report's time
    packs = district_packs.with_options(task_runner=dask_task_runner(cfg.scale))(
        str(folder), report_districts(folder))
    worklists = sum(p["worklists"] for p in packs)
    create_table_artifact(
        key="coverage-by-district",
        table=[{"district": d, "registered": r, "sampled": s, "resulted": res, "untested": u,
                "coverage %": round(100 * (c or 0), 2)} for d, r, s, res, u, c in districts],
        description=f"Coverage of round {round_id} by district",
    )
    city = figures.city
    page = (folder / "report.html").resolve()
    link = report_link(cfg.report.link_base, page) if cfg.report.link_base else None
    if link:
        create_link_artifact(key="report-link", link=link, link_text=f"report.html of {round_id}",
                             description=f"Round {round_id}: the report page (aggregate, no personal data)")
    lines = [f"# Round {round_id}: nightly report", "",
             f"As of {when.isoformat(timespec='minutes')}. Report: " + (f"[report.html]({link})" if link else f"`{page}`"), "",
             "| registered | sampled | coverage | resulted | untested |", "|---:|---:|---:|---:|---:|",
             f"| {city.get('registered', 0):,} | {city.get('sampled', 0):,} | {100 * (city.get('coverage') or 0):.2f} % "
             f"| {city.get('resulted', 0):,} | {city.get('untested', 0):,} |", "",
             "| person status | people |", "|---|---:|", *[f"| {k} | {v:,} |" for k, v in figures.statuses.items()], "",
             "| re-sampling orders | orders |", "|---|---:|", *[f"| {k} | {v:,} |" for k, v in figures.orders.items()], "",
             "| district pack | untested | orders | worklists |", "|---|---:|---:|---:|",
             *[f"| {p['district']} | {p['untested']:,} | {sum(p['orders'].values()):,} | {p['worklists']:,} |"
               for p in packs], "",
             f"Door-to-door worklists: {worklists} grid(s) in `districts/<district>/worklists/`. "
             f"Files: {', '.join(figures.files)}."]
    create_markdown_artifact(key="round-report", markdown="\n".join(lines), description=f"Round {round_id} report")
    get_run_logger().info("report of %s written to %s: %d files, coverage %.2f %%", round_id, folder,
                          len(figures.files), 100 * (city.get("coverage") or 0))
    return {"round_id": round_id, "out": str(folder), "link": link, "files": figures.files,
            "coverage": city.get("coverage"), "worklists": worklists, "districts": packs}
