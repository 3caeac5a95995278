"""The ``open-round`` flow: a round's window, scope and default pool size."""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.limits import ensure_concurrency_limits, warehouse_session
from sampling.rounds import Round, check_round
from warehouse.writer import open_round as write_round


@flow(name="open-round", flow_run_name="open round {round_id}")
def open_round(
    round_id: str,
    starts_at: datetime,
    ends_at: datetime,
    districts: list[str] | None = None,
    pool_size: int | None = None,
    config_path: str | None = None,
    warehouse: str | None = None,
) -> None:
    session = warehouse_session(config_path, warehouse)
    cfg = session.cfg
    ensure_concurrency_limits(cfg)
    rnd = Round(round_id, starts_at, ends_at, tuple(districts) if districts else None,
                pool_size or cfg.pool_policy.default_size)
    with session.write() as con:
        check_round(rnd, cfg.pool_policy.allowed_sizes, con)
        write_round(con, round_id=rnd.round_id, starts_at=rnd.starts_at, ends_at=rnd.ends_at,
                    districts=rnd.districts, pool_size=rnd.pool_size, run_id=str(flow_run.get_id()))
    get_run_logger().info("opened round %s: %s to %s, pool size %d", round_id, starts_at, ends_at, rnd.pool_size)
