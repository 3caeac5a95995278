"""``report.html``: the nightly report a command centre would print. Aggregates and masked
figures only (no ID, name, phone or address); charts as inline SVG (matplotlib), the page from
a jinja2 template (``reporting/templates/report.html.j2``). It links ``report.xlsx``, the same
tables for Excel (``reporting.workbook``), by a relative link: the report server serves it
beside the page.

For every reader, not only the sighted ones with colour vision:

* the page is ``lang="en"`` (its text is English); Chinese names and terms (district,
  subdistrict, community names 区、街道、居委) sit in ``<span lang="zh">`` (the ``zh`` filter), and
  the chart texts in Chinese carry ``lang="zh"`` too;
* every chart is an ``<svg role="img">`` with a ``<title>`` and an ``aria-label`` naming it;
* colour is never the only signal: bars carry their value as text, the grid heat table's cells
  carry their coverage as a number (the colour repeats it);
* hourly throughput is drawn on a real time axis in city time (an hour without sampling, a
  night, is a gap), coverage by district is sorted by coverage, worst first, on an axis zoomed
  to the data with the 100 % line marked.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import duckdb
import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402
from markupsafe import Markup  # noqa: E402

from reporting.coverage import worst_grids  # noqa: E402
from reporting.tat import LINKS  # noqa: E402
from reporting.workbook import WORKBOOK  # noqa: E402
from kernel.config import Config  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path

    from reporting.figures import ReportFigures

#: the sections every report has (the browser check looks for each heading)
SECTIONS = ("Headline", "Workbook", "Coverage by district", "Worst grids", "Grid heat table",
            "Sampling throughput by hour", "Turnaround time per link", "Key-group cycles", "Lab load against capacity",
            "Anomalies by kind", "Positive pools", "Overdue urgent re-samples")
# stock and capacity, pool-size advice (reporting/plan.py: ``figures.plan``)
SECTIONS = (*SECTIONS, "Stock and capacity", "Pool-size advice")
HEAT_CELLS_PER_DISTRICT = 80
#: issue 14: the daily and zero report (日报告、零报告); "Lab load against capacity" is per day
SECTIONS = SECTIONS + ("Daily report",)
#: the heat table's bands: red (and bold) below 80 % coverage, amber below 95 %, green above
HEAT_RED_BELOW, HEAT_AMBER_BELOW = 0.8, 0.95
WORST_GRIDS_SHOWN = 15
#: a Chinese character: text holding one is marked ``lang="zh"``
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
BAR_COLOUR = "#2b6cb0"


def zh(value) -> Markup | str:
    """``value`` as page text; inside ``<span lang="zh">`` when it holds Chinese (a district's
    name: the page is English, screen readers and fonts need to know)."""
    if value is None:
        return ""
    text = str(value)
    return Markup('<span lang="zh">%s</span>') % text if CJK.search(text) else text


def _svg(fig, title: str | None = None) -> str:
    """The figure as inline SVG: ``role="img"``, ``aria-label`` and a ``<title>`` naming the
    chart (``title``, else the axes' title), Chinese texts marked ``lang="zh"``."""
    title = title or next((ax.get_title() for ax in fig.axes if ax.get_title()), "chart")
    buffer = io.StringIO()
    with warnings.catch_warnings():  # text stays text (svg.fonttype none): the browser's fonts draw 中文
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        # no date in the metadata and fixed element ids: the same figures give the same bytes
        with matplotlib.rc_context({"svg.hashsalt": "tubetrail"}):
            fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    head_end = text.index(">") + 1
    label = escape(title, quote=True)
    text = (text[:head_end - 1] + f' role="img" aria-label="{label}">' + f"\n <title>{escape(title)}</title>"
            + text[head_end:])
    return re.sub(r"<text\b(?=[^>]*>[^<]*" + CJK.pattern + ")", '<text lang="zh"', text)


def coverage_chart(districts: list[str], coverage: list[float | None]) -> str:
    """Coverage by district (ratios), sorted by coverage, worst at the top, each bar labelled
    with its value; the axis starts a little below the lowest district (said in the axis
    label) and the 100 % line is marked."""
    # a district with nobody registered has no coverage: no bar, "–", and no say in the zoom
    pairs = sorted(((None if c is None else 100 * c, d) for d, c in zip(districts, coverage)),
                   key=lambda p: (p[0] is not None, p[0] or 0, p[1]))
    values, labels = [v for v, _ in pairs], [d for _, d in pairs]
    low = max(0.0, math.floor((min((v for v in values if v is not None), default=100) - 2) / 5) * 5)
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.32 * len(labels) + 0.9)))
    ax.barh(labels[::-1], [v or 0 for v in values[::-1]], color=BAR_COLOUR)
    for y, v in enumerate(values[::-1]):  # the value as text beside its bar (white behind it: legible on the line)
        ax.text(low if v is None else v, y, " – nobody registered" if v is None else f" {v:.1f} %", va="center",
                fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    ax.axvline(100, color="#1a202c", linestyle="--", linewidth=1)
    ax.text(100, 1.0, "100 %", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    ax.set_xlim(low, 100 + 0.16 * (100 - low))
    ax.set_title("Coverage by district, lowest first", pad=14)
    ax.set_xlabel("sampled / registered (%)" + (f"; the axis starts at {low:.0f} %" if low > 0 else ""))
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return _svg(fig)


def throughput_chart(hours: list[datetime], people: list[int], zone: ZoneInfo, offset: str) -> str:
    """People sampled per hour: one bar per hour on a real time axis (ticks are city dates and
    hours), so an hour without sampling, or a night between a round and its re-samples, is a
    gap of its true length."""
    fig, ax = plt.subplots(figsize=(8, 2.8))
    starts = [h.astimezone(zone) for h in hours]
    ax.bar(starts, people, width=1 / 24, align="edge", color=BAR_COLOUR, edgecolor="white", linewidth=0.5)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=zone, minticks=3, maxticks=9))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=zone))
    ax.set_title("People sampled per hour")
    ax.set_ylabel("people")
    ax.set_xlabel(f"hour, city time (UTC{offset})")
    fig.autofmt_xdate(rotation=45)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return _svg(fig)


def _heat(value: float | None) -> str:
    """Red below 80 %, amber to 95 %, green above (light shades: the cell's number stays legible)."""
    if value is None:
        return "#e2e8f0"
    if value < HEAT_RED_BELOW:
        return "#feb2b2"
    if value < HEAT_AMBER_BELOW:
        return "#fbd38d"
    return "#9ae6b4"


def _heat_label(value: float | None) -> str:
    """A heat cell's text: coverage in whole per cent, rounded down (a grid at 99.6 % is not
    done: it shows 99), or ``–`` for a grid with nobody registered."""
    return "–" if value is None else str(math.floor(100 * value + 1e-9))


def render_report(con: duckdb.DuckDBPyConnection, cfg: Config, figures: ReportFigures,
                  frames: dict[str, pl.DataFrame]) -> str:
    zone = ZoneInfo(cfg.city.timezone)
    coverage = frames["coverage"]
    # lowest coverage first: the districts to chase (the chart and the table alike)
    districts = coverage.filter(pl.col("level") == "district").sort("coverage", "district", nulls_last=False)
    grids = coverage.filter(pl.col("level") == "grid")
    worst = worst_grids(grids, WORST_GRIDS_SHOWN)
    heat = []
    for (district,), part in grids.sort("grid").partition_by("district", as_dict=True, maintain_order=True).items():
        cells = [{"grid": g, "coverage": c, "colour": _heat(c), "label": _heat_label(c),
                  "low": c is not None and c < HEAT_RED_BELOW}
                 for g, c in part.select("grid", "coverage").head(HEAT_CELLS_PER_DISTRICT).iter_rows()]
        heat.append({"district": district, "cells": cells, "more": max(part.height - HEAT_CELLS_PER_DISTRICT, 0)})
    p = {"rid": figures.round_id, "as_of": figures.as_of}
    hourly = con.sql(
        """SELECT date_trunc('hour', added_at) AS hour, count(*) AS people FROM tube_members
           WHERE round_id = $rid AND added_at <= $as_of GROUP BY 1 ORDER BY 1""", params=p).fetchall()
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
        "districts": coverage_chart(districts["district"].to_list(), districts["coverage"].to_list())
        if districts.height else "",
        "hourly": throughput_chart([h for h, _ in hourly], [n for _, n in hourly], zone,
                                   city_offset(figures.as_of, zone)) if hourly else "",
    }
    env = Environment(loader=PackageLoader("reporting", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["zh"] = zh
    return env.get_template("report.html.j2").render(
        figures=figures, city=figures.city, as_of=figures.as_of.astimezone(zone), timezone=cfg.city.timezone,
        districts=districts.to_dicts(), worst=worst.to_dicts(), heat=heat, charts=charts, percentiles=percentiles,
        breaches=breaches, tat_target=cfg.tat, key_group_cycles=cfg.key_groups, pools=pools, zone=zone, sections=SECTIONS,
        offset=city_offset(figures.as_of, zone), overdue=overdue.to_dicts(), workbook=WORKBOOK, sheets=figures.sheets,
        bands={"red": round(100 * HEAT_RED_BELOW), "amber": round(100 * HEAT_AMBER_BELOW)},
        **daily_context(frames, cfg),
    )


# --- issue 14: the daily and zero report and the labs' load per day ---------------------------------

def daily_context(frames: dict[str, pl.DataFrame], cfg: Config) -> dict:
    """The template's ``daily`` (per day × district and per day × lab, silent units first and
    named in words) and ``lab_days`` (per lab and day, over capacity named in words) with the
    lab load chart, from the report's ``daily`` and ``lab_load`` frames."""
    daily = frames["daily"].with_columns(pl.col("last_heard_at").dt.strftime("%m-%d %H:%M").alias("heard"),
                                         (pl.col("last_heard_at").dt.date() == pl.col("day")).fill_null(False)
                                         .alias("heard_that_day"))
    order = [pl.col("day"), ~pl.col("silent"), pl.col("unit")]
    levels = {level: daily.filter(pl.col("level") == level).sort(order).to_dicts() for level in ("district", "lab")}
    silent = daily.filter(pl.col("silent")).sort("level", "last_heard_at", "unit", nulls_last=False).to_dicts()
    load = frames["lab_load"].with_columns(
        (pl.col("daily_capacity").is_not_null() & (pl.col("received") > pl.col("daily_capacity"))).alias("over"))
    return {"daily": levels, "silent_units": silent, "silent_hours": cfg.alerts.silent_hours,
            "lab_days": load.to_dicts(), "lab_load_chart": _lab_load_chart(load)}


def _lab_load_chart(load: pl.DataFrame) -> str:
    """Tubes received per lab and day (one bar per day, grouped per lab) against each lab's
    daily capacity (a dashed line over its group): an over-capacity day stands above the line
    and is hatched, not told by colour alone."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not load.height or not load["received"].sum():
        return ""
    labs = load["lab_id"].unique(maintain_order=True).to_list()
    days = load["day"].unique().sort().to_list()
    width = 0.8 / max(len(days), 1)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    colours = [BAR_COLOUR, "#63b3ed", "#2c7a7b", "#81e6d9", "#6b46c1"]
    for j, day in enumerate(days):
        part = {r["lab_id"]: r for r in load.filter(pl.col("day") == day).iter_rows(named=True)}
        xs = [i + (j - (len(days) - 1) / 2) * width for i in range(len(labs))]
        values = [part[lab]["received"] if lab in part else 0 for lab in labs]
        bars = ax.bar(xs, values, width, color=colours[j % len(colours)])
        for bar, lab in zip(bars, labs):
            if lab in part and part[lab]["over"]:
                bar.set_hatch("//")
                bar.set_edgecolor("#9b2c2c")
    for i, lab in enumerate(labs):
        capacity = load.filter(pl.col("lab_id") == lab)["daily_capacity"].max()
        if capacity:
            ax.hlines(capacity, i - 0.45, i + 0.45, colors="#1a202c", linestyles="dashed")
    ax.set_xticks(range(len(labs)), labs)
    ax.set_title("Lab load against daily capacity")
    ax.set_ylabel("tubes received per day\n(hatched: over capacity)")
    # below the axes, clear of the bars and capacity lines; one key per day, the line, the hatch
    keys = [Patch(facecolor=colours[j % len(colours)], label=f"{day:%m-%d}") for j, day in enumerate(days)]
    keys += [Line2D([], [], color="#1a202c", linestyle="dashed", label="daily capacity"),
             Patch(facecolor="white", edgecolor="#9b2c2c", hatch="//", label="over capacity")]
    ax.legend(handles=keys, fontsize=8, frameon=False, ncol=len(keys), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return _svg(fig)


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


def report_link(link_base: str, page: Path) -> str:
    """The URL of ``page`` (a report.html) on the report server at ``link_base``
    (``tubetrail.report_server``: pages are addressed by their absolute path)."""
    from urllib.parse import quote

    return link_base.rstrip("/") + quote(str(page.resolve()))
