"""The per-district fan-out of the report: one task per district on a Dask cluster
(prefect-dask's ``DaskTaskRunner``), each writing its district's pack from the report's Parquet
files (``reporting.districts``). The tasks never open the warehouse: DuckDB takes one
read-write process per file, and Dask workers are other processes, often other machines.

``[scale] dask_address`` empty: the flow starts a ``distributed.LocalCluster`` of
``n_workers`` processes with ``threads_per_worker`` threads for the run and stops it after;
set: the tasks go to that running scheduler. Either way the workers need the report folder at
the same path (one machine, or a shared filesystem) and the project installed.

Task results, run names and logs carry district names and counts only."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner

from reporting.districts import write_district_pack
from kernel.config import ScaleConfig


def dask_task_runner(scale: ScaleConfig) -> DaskTaskRunner:
    """The task runner ``[scale]`` asks for."""
    if scale.dask_address:
        return DaskTaskRunner(address=scale.dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": scale.n_workers, "threads_per_worker": scale.threads_per_worker,
                                          "processes": True, "dashboard_address": None})


def _dask_worker() -> str | None:
    """The address of the Dask worker running this task (None outside one)."""
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return None


@task(name="district-pack", task_run_name="district pack {district}", retries=2, retry_delay_seconds=5)
def district_pack(report: str, district: str) -> dict:
    """One district's pack; the result is counts (and the Dask worker that wrote it)."""
    pack = write_district_pack(Path(report), district)
    return {**pack.as_dict(), "dask_worker": _dask_worker()}


def _run_name() -> str:
    return f"district packs of {Path(str(flow_run.parameters.get('report', '.'))).name}"


@flow(name="district-packs", flow_run_name=_run_name)
def district_packs(report: str, districts: list[str]) -> list[dict]:
    """Fan out one ``district-pack`` task per district on this flow's task runner (set by the
    caller: ``district_packs.with_options(task_runner=dask_task_runner(cfg.scale))``)."""
    futures = district_pack.map(unmapped(report), districts)
    packs = [f.result() for f in futures]
    get_run_logger().info("%d district packs: %d worklists, %d untested people, %d orders", len(packs),
                          sum(p["worklists"] for p in packs), sum(p["untested"] for p in packs),
                          sum(sum(p["orders"].values()) for p in packs))
    return packs
