"""``report.html``: the nightly report a command centre would print. Aggregates and masked
figures only (no ID, name, phone or address); charts as inline SVG (matplotlib), the page from
a jinja2 template (``reporting/templates/report.html.j2``)."""

from __future__ import annotations

import io
import warnings
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import duckdb
import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from reporting.tat import LINKS  # noqa: E402
from tubetrail.config import Config  # noqa: E402

if TYPE_CHECKING:
    from reporting.report import ReportFigures

#: the sections every report has (the browser check looks for each heading)
SECTIONS = ("Headline", "Coverage by district", "Worst grids", "Grid heat table", "Sampling throughput by hour",
            "Turnaround time per link", "Key-group cycles", "Lab load against capacity", "Anomalies by kind", "Positive pools",
            "Overdue urgent re-samples")
# stock and capacity, pool-size advice (reporting/plan.py: ``figures.plan``)
SECTIONS = (*SECTIONS, "Stock and capacity", "Pool-size advice")
HEAT_CELLS_PER_DISTRICT = 80


def _svg(fig) -> str:
    buffer = io.StringIO()
    with warnings.catch_warnings():  # text stays text (svg.fonttype none): the browser's fonts draw 中文
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        # no date in the metadata and fixed element ids: the same figures give the same bytes
        with matplotlib.rc_context({"svg.hashsalt": "tubetrail"}):
            fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _bar_chart(labels: list[str], values: list[float], title: str, xlabel: str, percent: bool = False) -> str:
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.32 * len(labels) + 0.8)))
    ax.barh(labels[::-1], values[::-1], color="#2b6cb0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if percent:
        ax.set_xlim(0, 100)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return _svg(fig)


def _line_chart(x: list, y: list[int], title: str, ylabel: str) -> str:
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.plot(x, y, marker="o", color="#2b6cb0")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=45)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return _svg(fig)


def _heat(value: float | None) -> str:
    """Red below 80 %, amber to 95 %, green above."""
    if value is None:
        return "#ddd"
    if value < 0.8:
        return "#e53e3e"
    if value < 0.95:
        return "#dd6b20"
    return "#38a169"


def render_report(con: duckdb.DuckDBPyConnection, cfg: Config, figures: ReportFigures,
                  frames: dict[str, pl.DataFrame]) -> str:
    zone = ZoneInfo(cfg.city.timezone)
    coverage = frames["coverage"]
    districts = coverage.filter(pl.col("level") == "district").sort("district")
    grids = coverage.filter(pl.col("level") == "grid")
    worst = grids.filter(pl.col("registered") > 0).sort("coverage", "registered", descending=[False, True]).head(15)
    heat = []
    for (district,), part in grids.sort("grid").partition_by("district", as_dict=True, maintain_order=True).items():
        cells = [{"grid": g, "coverage": c, "colour": _heat(c)}
                 for g, c in part.select("grid", "coverage").head(HEAT_CELLS_PER_DISTRICT).iter_rows()]
        heat.append({"district": district, "cells": cells, "more": max(part.height - HEAT_CELLS_PER_DISTRICT, 0)})
    p = {"rid": figures.round_id, "as_of": figures.as_of}
    hourly = con.sql(
        """SELECT date_trunc('hour', added_at) AS hour, count(*) AS people FROM tube_members
           WHERE round_id = $rid AND added_at <= $as_of GROUP BY 1 ORDER BY 1""", params=p).fetchall()
    lab_load = con.sql(
        """SELECT c.lab_id, any_value(l.name), any_value(l.daily_capacity_tubes), count(*) AS received,
                  count(*) FILTER (WHERE c.refused) AS refused
           FROM custody c LEFT JOIN labs l USING (lab_id)
           WHERE c.round_id = $rid AND c.received_at <= $as_of GROUP BY c.lab_id ORDER BY c.lab_id""", params=p).fetchall()
    pools = con.sql(
        """SELECT o.source_tube, any_value(o.reason), count(DISTINCT o.person_key) AS people,
                  min(o.raised_at) AS called_at, min(o.due_by) AS due_by,
                  count(DISTINCT o.person_key) FILTER (WHERE o.fulfilled) AS resampled,
                  any_value(k.lab_id), any_value(k.plate_id)
           FROM report_orders o LEFT JOIN tube_calls($as_of) k ON k.tube_barcode = o.source_tube
           WHERE urgent_reason(o.reason)
           GROUP BY o.source_tube ORDER BY called_at, o.source_tube""", params={"as_of": figures.as_of}).fetchall()
    overdue = overdue_urgent_by_district(frames["resample_orders"], figures.as_of)
    tat = frames["tat"]
    percentiles = []
    for link in (*LINKS, "total_hours"):
        values = tat[link].drop_nulls()
        percentiles.append({"link": link.replace("_", " "), "n": values.len(),
                            **{q: (round(values.quantile(v, "linear"), 2) if values.len() else None)
                               for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}})
    breaches = {"tubes": tat.height, "breached": int(tat["breach"].sum()) if tat.height else 0,
                "key_group_breached": int(tat.filter(pl.col("key_group"))["breach"].sum()) if tat.height else 0}
    charts = {
        "districts": _bar_chart(districts["district"].to_list(), [100 * (c or 0) for c in districts["coverage"].to_list()],
                                "Coverage by district", "sampled / registered (%)", percent=True) if districts.height else "",
        "hourly": _line_chart([h.astimezone(zone).strftime("%m-%d %H:00") for h, _ in hourly], [n for _, n in hourly],
                              "People sampled per hour", "people") if hourly else "",
        "labs": _bar_chart([f"{lab} received" for lab, *_ in lab_load] + [f"{lab} capacity" for lab, *_ in lab_load],
                           [r[3] for r in lab_load] + [r[2] or 0 for r in lab_load],
                           "Lab load against daily capacity", "tubes") if lab_load else "",
    }
    env = Environment(loader=PackageLoader("reporting", "templates"), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2").render(
        figures=figures, city=figures.city, as_of=figures.as_of.astimezone(zone), timezone=cfg.city.timezone,
        districts=districts.to_dicts(), worst=worst.to_dicts(), heat=heat, charts=charts, percentiles=percentiles,
        breaches=breaches, tat_target=cfg.tat, key_group_cycles=cfg.key_groups, lab_load=lab_load, pools=pools, zone=zone, sections=SECTIONS,
        offset=city_offset(figures.as_of, zone), overdue=overdue.to_dicts(),
    )


def overdue_urgent_by_district(orders: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Urgent orders (``priority`` urgent) not fulfilled whose ``due_by`` has passed at ``as_of``,
    counted per district (most first): orders, pools (source tubes), the oldest due time."""
    due = pl.col("due_by").dt.convert_time_zone("UTC")
    late = orders.filter((pl.col("priority") == "urgent") & ~pl.col("fulfilled")
                         & (due < pl.lit(as_of).dt.convert_time_zone("UTC")))
    return (late.group_by("district").agg(pl.len().alias("orders"), pl.col("source_tube").n_unique().alias("pools"),
                                          pl.col("due_by").min().alias("oldest_due"))
            .sort(["orders", "district"], descending=[True, False], nulls_last=True))


def city_offset(at: datetime, zone) -> str:
    """``+08:00``: the city's UTC offset at ``at``, shown beside every time people read. The
    report carries no wall-clock time of its own: two runs of one inbox as of one time give the
    same page, byte for byte."""
    return at.astimezone(zone).strftime("%z")[:3] + ":" + at.astimezone(zone).strftime("%z")[3:]
