"""District packs: what one district's command post and grid workers need, cut from a written
report (``reporting.report.write_report``) without the warehouse.

``write_district_pack(report, district)`` reads only that district's rows of the report's
Parquet files (a polars scan with a filter: the predicate is pushed into the Parquet reader,
row groups of other districts are skipped) and writes ``districts/<district>/``:

* ``untested.csv``: the report's untested people of the district (same columns, same order);
* ``resample_orders.csv``: the re-sampling orders of the district's people (same columns);
* ``worklists/<grid>.csv``: the door-to-door lists (上门采样), the rule below, per grid;
* ``summary.json``: counts only.

The district of an order is its person's on the register; a visitor outside the register is
routed to the district of the site that sampled them (their grid stays unknown:
``unknown-grid``); only an order with neither goes to the pack ``unknown-district``. A pack is written into a temporary folder
and then put in place, so writing it again (a retry, a re-run) leaves exactly one pack.

Packs hold personal data (for authorised staff); ``DistrictPack`` (returned) is counts only.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from reporting.people_csv import iso_times, write_people_csv, write_people_csv_parts
from reporting.report import DOOR_TO_DOOR, ORDER_COLUMNS, UNTESTED_COLUMNS, WORKLIST_COLUMNS

#: the pack of rows without a district (orders of people outside the register)
UNKNOWN_DISTRICT = "unknown-district"
#: the report file the fan-out reads orders from: ``resample_orders`` plus district and fulfilled
DISTRICT_ORDERS = "district_orders.parquet"
PACKS = "districts"


@dataclass
class DistrictPack:
    """What a district's pack holds, in counts: safe for task results, logs and artifacts."""

    district: str
    untested: int = 0
    orders: dict[str, int] = field(default_factory=dict)
    worklists: int = 0
    worklist_rows: int = 0
    registered: int = 0
    sampled: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def safe_name(value: object, fallback: str) -> str:
    """A file or folder name for a grid or district (letters of any script, digits, . and -)."""
    return re.sub(r"[^\w.-]+", "_", str(value)).strip(".") or fallback


def _in_district(district: str) -> pl.Expr:
    return pl.col("district").is_null() if district == UNKNOWN_DISTRICT else pl.col("district") == district


def _scan(report: Path, name: str, district: str) -> pl.DataFrame:
    return pl.scan_parquet(report / name).filter(_in_district(district)).collect()


def report_districts(report: Path) -> list[str]:
    """Every district with a pack to write: of the coverage, the untested and the orders."""
    names = pl.concat([pl.scan_parquet(report / f).select(pl.col("district").cast(pl.Utf8))
                       for f in ("coverage.parquet", "untested.parquet", DISTRICT_ORDERS)]).unique().collect()
    return sorted(UNKNOWN_DISTRICT if d is None else d for d in names["district"])


#: the worklist task of an untested person by ``sampling_route``'s door-to-door reason
DOOR_TO_DOOR_TASKS = {
    "sealed_zone": "home sampling (untested, sealed zone)",
    "mobility_limited": "home sampling (untested, limited mobility)",
    "controlled_no_site_in_community": "home sampling (untested, controlled zone, no site in the community)",
}


def worklist_rows(door_to_door: pl.DataFrame, orders: pl.DataFrame) -> pl.DataFrame:
    """The door-to-door rule (上门采样): the untested whom ``sampling_route`` sends to no site
    (sealed zone, limited mobility, controlled zone without a site in their community) and open
    home re-sampling orders (``home_visit`` and not ``fulfilled``), urgent first, per grid
    (``unknown-grid`` for people outside the register). Times as ISO text."""
    home_untested = door_to_door.select(
        pl.col("door_to_door_reason").replace_strict(DOOR_TO_DOOR_TASKS, default="home sampling (untested)",
                                                     return_dtype=pl.Utf8).alias("task"),
        "grid", "name", "id_type", "id_number",
        "phone", "address", pl.lit("untested").alias("reason"), pl.lit("normal").alias("priority"),
        pl.lit(None, dtype=pl.Utf8).alias("due_by"), pl.lit(None, dtype=pl.Utf8).alias("source_tube"))
    home_orders = iso_times(orders.filter(pl.col("home_visit") & ~pl.col("fulfilled"))).select(
        pl.lit("home re-sampling").alias("task"), "grid", "name", "id_type", "id_number", "phone", "address",
        "reason", "priority", pl.col("due_by").cast(pl.Utf8), "source_tube")
    return pl.concat([home_orders, home_untested], how="vertical_relaxed").with_columns(
        pl.col("grid").fill_null("unknown-grid")).sort(
        "grid", pl.col("priority") != "urgent", "due_by", "id_number", nulls_last=True, maintain_order=True
    ).select(WORKLIST_COLUMNS)


def write_worklists(work: pl.DataFrame, folder: Path) -> int:
    """One CSV per grid of ``worklist_rows``; returns the number of lists written."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_people_csv_parts(work, "grid", lambda grid: folder / f"{safe_name(grid, 'grid')}.csv")


def write_district_pack(report: Path, district: str) -> DistrictPack:
    """Write (or replace) ``report/districts/<district>/`` from the report's files."""
    untested = _scan(report, "untested.parquet", district).select(UNTESTED_COLUMNS)
    orders = _scan(report, DISTRICT_ORDERS, district)
    door_to_door = _scan(report, DOOR_TO_DOOR, district)
    rollup = pl.scan_parquet(report / "coverage_rollup.parquet").filter(
        (pl.col("level") == "district") & _in_district(district)).collect()
    work = worklist_rows(door_to_door, orders)

    packs = report / PACKS
    packs.mkdir(parents=True, exist_ok=True)
    name = safe_name(district, "district")
    staging = packs / f".{name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    try:
        write_people_csv(untested, staging / "untested.csv")
        write_people_csv(orders.select(ORDER_COLUMNS), staging / "resample_orders.csv")
        pack = DistrictPack(
            district=district, untested=untested.height,
            orders=dict(orders.group_by("reason").len().sort("reason").iter_rows()),
            worklists=write_worklists(work, staging / "worklists"), worklist_rows=work.height,
            registered=int(rollup["registered"].sum()), sampled=int(rollup["sampled"].sum()))
        (staging / "summary.json").write_text(json.dumps(pack.as_dict(), ensure_ascii=False, indent=1),
                                              encoding="utf-8")
        _put_in_place(staging, packs / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return pack


def _put_in_place(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging``: an earlier pack is moved aside first (a folder cannot
    be renamed over a non-empty one), then removed."""
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
