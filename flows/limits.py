"""Prefect global concurrency limits, created before use (a missing limit limits nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from tubetrail.config import Config


def ensure_concurrency_limits(cfg: Config) -> None:
    """Create the warehouse writer limit (one slot) if it does not exist yet."""
    name = cfg.warehouse.write_limit
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def warehouse_write_guard(cfg: Config):
    """A factory of context managers that hold the writer limit's one slot."""

    @contextmanager
    def guard() -> Iterator[None]:
        # a 60 s lease (renewed by Prefect while held): a killed holder's slot comes back within
        # about a minute, not the default five (every writer, e.g. a killed SMS sender's re-run, waited)
        with concurrency(cfg.warehouse.write_limit, occupy=1, strict=True, lease_duration=60,
                         timeout_seconds=cfg.warehouse.lock_timeout_seconds):
            yield

    return guard
