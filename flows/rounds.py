"""The ``open-round`` flow: a round's window, scope and default pool size."""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.limits import ensure_concurrency_limits, warehouse_session
from kernel.config import Config
from sampling.rounds import Round, RoundRefused, check_round
from warehouse.session import WarehouseSession
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
) -> dict:
    """Open the round; returns what was opened (:func:`round_figures`). A refusal (id taken,
    window overlapping, pool size not allowed) fails the run: the CLI and the demo ask
    :func:`round_refusal` first, so the expected refusals never start a run."""
    session = warehouse_session(config_path, warehouse)
    cfg = session.cfg
    ensure_concurrency_limits(cfg)
    rnd = round_of(cfg, round_id, starts_at, ends_at, districts, pool_size)
    with session.write() as con:
        check_round(rnd, cfg.pool_policy.allowed_sizes, con)
        write_round(con, round_id=rnd.round_id, starts_at=rnd.starts_at, ends_at=rnd.ends_at,
                    districts=rnd.districts, pool_size=rnd.pool_size, run_id=str(flow_run.get_id()))
    get_run_logger().info("opened round %s: %s to %s, pool size %d", round_id, starts_at, ends_at, rnd.pool_size)
    return round_figures(rnd)


def round_of(cfg: Config, round_id: str, starts_at: datetime, ends_at: datetime, districts: list[str] | None,
             pool_size: int | None) -> Round:
    """The round the flow would open (the configured default pool size when none is given)."""
    return Round(round_id, starts_at, ends_at, tuple(districts) if districts else None,
                 pool_size or cfg.pool_policy.default_size)


def round_refusal(cfg: Config, rnd: Round) -> str | None:
    """Why ``rnd`` would be refused now (``sampling.rounds.check_round`` over the warehouse, read
    under its file lock), or None. Asked before the flow runs, so that an expected refusal
    (“round … is already open”) is one line for the operator, not a failed run in the UI."""
    with WarehouseSession.of_config(cfg).read() as con:
        try:
            check_round(rnd, cfg.pool_policy.allowed_sizes, con)
        except RoundRefused as exc:
            return str(exc)
    return None


def round_figures(rnd: Round) -> dict:
    """The opened round as plain values (``tubetrail round open --json``)."""
    return {"round_id": rnd.round_id, "starts_at": rnd.starts_at.isoformat(), "ends_at": rnd.ends_at.isoformat(),
            "districts": list(rnd.districts) if rnd.districts else None, "pool_size": rnd.pool_size}
