"""Prefect global concurrency limits, created before use (a missing limit limits nothing), and
the recovery of what a killed writer leaves behind.

The writer slot is held under a short lease (``[warehouse] write_lease_seconds``) that Prefect
renews in a background thread while the slot is held. A writer killed with ``kill -9`` renews
nothing: its lease runs out (a Prefect server's repossessor then frees the slot). Servers without
that service (temporary and test servers) never free it, so every writer also notes its lease
beside the warehouse (``<warehouse>.leases/<lease id>``: host, process id, flow run) and every
writing flow starts with :func:`ensure_concurrency_limits`, which releases the leases of writers
whose process is gone and marks their flow runs (tagged with host and process id) Crashed.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, StateType
from prefect.concurrency.context import ConcurrencyContext
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Crashed

from kernel.config import Config
from warehouse.session import WarehouseSession

#: flow run tags naming the process that runs it (no personal data: a host name and a number)
HOST_TAG = "tubetrail.host:"
PID_TAG = "tubetrail.pid:"
_RUNNING = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))


def _host() -> str:
    return socket.gethostname()


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def _current_flow_run_id() -> UUID | None:
    run_id = flow_run.get_id()
    return UUID(run_id) if run_id else None


def ensure_concurrency_limits(cfg: Config) -> None:
    """Create the warehouse writer limit (one slot) if it does not exist yet; tag this flow run
    with its host and process id; release what writers that died on this host left behind."""
    name = cfg.warehouse.write_limit
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # a concurrent run created it between our read and our create: the same limit
        run_id = _current_flow_run_id()
        if run_id is not None:
            _tag_with_process(client, run_id)
        release_dead_writers(client, cfg)
        mark_crashed_runs(client)


def _tag_with_process(client: SyncPrefectClient, run_id: UUID) -> None:
    run = client.read_flow_run(run_id)
    mine = [f"{HOST_TAG}{_host()}", f"{PID_TAG}{os.getpid()}"]
    kept = [t for t in run.tags if not t.startswith((HOST_TAG, PID_TAG))]
    if sorted(run.tags) != sorted(kept + mine):
        client.update_flow_run(run_id, tags=kept + mine)


def _lease_dir(cfg: Config) -> Path:
    path = Path(cfg.warehouse.path)
    return path.with_name(path.name + ".leases")


def release_dead_writers(client: SyncPrefectClient, cfg: Config) -> list[UUID]:
    """Release the writer leases of processes on this host that are gone (killed); returns them.
    Releasing a lease the server already revoked changes nothing."""
    folder = _lease_dir(cfg)
    released = []
    for note in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            holder = json.loads(note.read_text(encoding="utf-8"))
            lease_id, pid = UUID(holder["lease_id"]), int(holder["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written by a writer killed while writing it: its lease expires on the server
        if holder.get("host") != _host() or not _process_gone(pid):
            continue
        client.release_concurrency_slots_with_lease(lease_id)
        note.unlink(missing_ok=True)
        released.append(lease_id)
    return released


def mark_crashed_runs(client: SyncPrefectClient) -> list[UUID]:
    """Flow runs of this host still RUNNING whose process is gone: Crashed, with their subflow
    and task runs. Returns the flow runs marked."""
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        state=_RUNNING, tags=FlowRunFilterTags(all_=[f"{HOST_TAG}{_host()}"])))
    marked: list[UUID] = []
    for run in runs:
        pids = [t.removeprefix(PID_TAG) for t in run.tags if t.startswith(PID_TAG)]
        if pids and pids[0].isdigit() and _process_gone(int(pids[0])) and run.id not in marked:
            message = f"its process ({_host()}, pid {pids[0]}) is gone (killed); marked by a later run"
            _crash(client, run.id, message, marked)
    return marked


def _crash(client: SyncPrefectClient, run_id: UUID, message: str, marked: list[UUID]) -> None:
    client.set_flow_run_state(run_id, Crashed(message=message), force=True)
    marked.append(run_id)
    tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
        flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]),
        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))))
    for task_run in tasks:
        client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        state=_RUNNING, parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
    for child in children:  # its subflow runs ran in the same process
        if child.id not in marked:
            _crash(client, child.id, message, marked)


@contextmanager
def _noted(cfg: Config, lease_id: UUID | None) -> Iterator[None]:
    """A note of the held lease beside the warehouse, removed when the slot is released."""
    if lease_id is None:
        yield
        return
    folder = _lease_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / f"{lease_id}.json"
    run_id = _current_flow_run_id()
    note.write_text(json.dumps({"lease_id": str(lease_id), "host": _host(), "pid": os.getpid(),
                                "flow_run_id": str(run_id) if run_id else None}), encoding="utf-8")
    try:
        yield
    finally:
        with suppress(OSError):
            note.unlink()


def warehouse_write_guard(cfg: Config):
    """A factory of context managers that hold the writer limit's one slot.

    The lease is short and renewed while held; should a renewal fail for good, the writer
    carries on (``raise_on_lease_renewal_failure=False``): the warehouse file lock still lets one
    process write at a time, and aborting a transaction halfway would only repeat the work."""

    @contextmanager
    def guard() -> Iterator[None]:
        run_id = _current_flow_run_id()
        holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None
        with ConcurrencyContext() as leases, concurrency(
            cfg.warehouse.write_limit, occupy=1, strict=True, timeout_seconds=cfg.warehouse.lock_timeout_seconds,
            lease_duration=cfg.warehouse.write_lease_seconds, holder=holder, raise_on_lease_renewal_failure=False,
        ):
            with _noted(cfg, leases.cleanup_lease_ids[-1] if leases.cleanup_lease_ids else None):
                yield

    return guard


def warehouse_session(config_path: str | None, warehouse: str | None) -> WarehouseSession:
    """The flows' one way into the warehouse: ``warehouse.session.WarehouseSession`` of the flow's
    parameters, whose writes hold this module's writer slot (:func:`warehouse_write_guard`)."""
    return WarehouseSession.configured(config_path, warehouse, write_guard=warehouse_write_guard)
