"""The derived views of every link, defined on a warehouse connection in dependency order.

Each view or table macro is a named rule of one domain package; together they turn the stored
facts (events, receipts, calls) into tubes, custody, orders and status without writing."""

from __future__ import annotations

import duckdb

from lab.custody import define_custody_views
from lab.orders import define_order_views
from reporting.status import define_status_views
from sampling.tubes import define_tube_views
from tubetrail.config import Config


def define_views(con: duckdb.DuckDBPyConnection, cfg: Config) -> None:
    define_tube_views(con, cfg.pool_policy)
    define_custody_views(con, cfg.tat)
    define_order_views(con, cfg.resample)
    define_status_views(con)
