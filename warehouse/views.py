"""The derived views of every link, defined on a warehouse connection in dependency order.

Each view or table macro is a named rule of one domain package; together they turn the stored
facts (events, receipts, results) into tubes, custody, calls, orders and status without writing.

A read session over a whole city (a report, a benchmark, a summary) passes ``snapshot=True``:
the base views every later rule reads several times (``tube_members``, ``tubes``, ``custody``,
``plate_qc``, ``tube_runs``) are then computed once into temporary tables of the session and the views read
those. Without it DuckDB recomputes each view wherever a rule names it, which at 24 M people
holds many large aggregates at once and runs out of memory. A snapshot is of the facts at that
moment: a session that writes afterwards defines the views again."""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from kernel.config import Config
from lab.calling import define_calling_views, snapshot_plates
from lab.custody import define_custody_views
from lab.orders import define_order_views
from reporting.status import define_status_views
from reporting.stock import define_stock_views
from sampling.need import define_need_views
from sampling.routes import define_route_views
from sampling.tubes import define_tube_views

#: every domain's view rules, in dependency order: (name, definer, the config section it reads)
VIEW_RULES: tuple[tuple[str, Callable[..., None], Callable[[Config], object] | None], ...] = (
    ("tubes", define_tube_views, lambda cfg: cfg.pool_policy),
    ("routes", define_route_views, None),
    ("custody", define_custody_views, lambda cfg: cfg.tat),
    ("calling", define_calling_views, lambda cfg: cfg.assay),
    ("orders", define_order_views, lambda cfg: cfg.resample),
    ("status", define_status_views, None),
    ("need", define_need_views, lambda cfg: cfg.pool_policy),
    ("stock", define_stock_views, lambda cfg: cfg.stock),
)

#: the base views a snapshot materialises, in dependency order (``plate_qc`` before ``tube_runs``,
#: which reads it: the city's readings are ranked for the plates once)
SNAPSHOT_VIEWS = ("tube_members", "tubes", "custody", "plate_qc", "tube_runs")


def define_views(con: duckdb.DuckDBPyConnection, cfg: Config, *, snapshot: bool = False) -> None:
    for _name, define, section in VIEW_RULES:
        define(con) if section is None else define(con, section(cfg))
    if snapshot:
        for name in SNAPSHOT_VIEWS:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {name}_snapshot AS SELECT * FROM {name}")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {name}_snapshot")
            if name == "plate_qc":
                snapshot_plates(con, cfg.assay, f"{name}_snapshot")
