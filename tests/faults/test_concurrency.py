"""Concurrent and killed writers (issue 12, items 7 and 8), against the session's Prefect server:
eight `tubetrail ingest` processes at once all finish 0 with the warehouse of one clean run, and a
writer killed with kill -9 while it holds the writer slot neither blocks the next writer nor
stays "Running". Outcomes only: no wall-clock assertions."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, write
from tests.flows.test_ingest_flow import small_inbox
from tests.builders import ric
from kernel.config import load_config

pytestmark = pytest.mark.usefixtures("prefect_server")


def config_file(tmp_path: Path, **warehouse: object) -> Path:
    """A config with a writer limit of its own (not created yet: the runs race to create it)."""
    keys = {"write_limit": f"tubetrail-writer-{uuid.uuid4().hex[:8]}", **warehouse}
    lines = "\n".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in keys.items())
    return write(tmp_path / "tubetrail.toml", f"[warehouse]\n{lines}\n")


def ingest(conf: Path, warehouse: Path, inbox: Path, prefect_server: str, log: Path) -> subprocess.Popen:
    """One `tubetrail ingest` process; its output goes to ``log`` (a pipe nobody reads while it
    waits could fill up and stall the writer that holds the slot)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    with log.open("w", encoding="utf-8") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tubetrail.cli", "--config", str(conf), "--warehouse", str(warehouse), "ingest",
             str(inbox)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen, log: Path, timeout: float = 900) -> tuple[int, str]:
    code = proc.wait(timeout=timeout)
    return code, log.read_text(encoding="utf-8")


def warehouse_state(path: Path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return (con.sql("SELECT kind, file_name, status, rows_read, rows_accepted, rows_quarantined FROM ingest_ledger"
                        " ORDER BY file_name").fetchall(),
                {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("register", "sites", "labs", "quarantine", "audit")})
    finally:
        con.close()


def test_eight_concurrent_ingests_all_succeed_and_equal_one_clean_run(tmp_path, prefect_server):
    inbox = small_inbox(tmp_path / "inbox", [ric(f"31010119800101{i:03d}") for i in range(400)])
    write(inbox / "register/b.csv", (inbox / "register/r.csv").read_text(encoding="utf-8").replace("13812345678", "13912345678"))
    conf = config_file(tmp_path)
    shared = tmp_path / "shared.duckdb"
    logs = [tmp_path / f"ingest-{i}.log" for i in range(8)]
    procs = [ingest(conf, shared, inbox, prefect_server, log) for log in logs]
    for proc, log in zip(procs, logs):
        code, output = finished(proc, log)
        assert code == 0, output
        assert "Traceback" not in output, output

    clean = tmp_path / "clean.duckdb"
    code, output = finished(ingest(conf, clean, inbox, prefect_server, tmp_path / "clean.log"), tmp_path / "clean.log")
    assert code == 0, output
    assert warehouse_state(shared) == warehouse_state(clean)
    assert warehouse_state(clean)[1]["register"] == 400


def test_runs_creating_the_writer_limit_at_the_same_moment_all_succeed(tmp_path, prefect_server):
    """The race behind the 409s: eight runs find the limit missing at once and all create it."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from flows.limits import ensure_concurrency_limits

    for _ in range(3):  # three fresh limits: three races
        cfg = load_config(config_file(tmp_path)).with_warehouse(tmp_path / "wh.duckdb")
        start = Barrier(8)

        def run() -> None:
            start.wait(timeout=300)
            ensure_concurrency_limits(cfg)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(run) for _ in range(8)]
            assert [f.exception(timeout=600) for f in futures] == [None] * 8


HOLD = """
import sys, time
from pathlib import Path
from prefect import flow
from prefect.runtime import flow_run
from flows.limits import ensure_concurrency_limits, warehouse_write_guard
from kernel.config import load_config

@flow(name="hold-writer-slot")
def hold(config_path: str, marker: str) -> None:
    cfg = load_config(config_path)
    ensure_concurrency_limits(cfg)
    with warehouse_write_guard(cfg)():
        Path(marker).write_text(flow_run.get_id())
        time.sleep(3600)

hold(sys.argv[1], sys.argv[2])
"""


def test_a_writer_killed_holding_the_slot_frees_it_and_is_marked_crashed(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    warehouse = tmp_path / "wh.duckdb"
    # the next writer waits at most 120 s for the slot: less than the old fixed 300 s lease (and the
    # session's test server, like any temporary one, runs no repossessor: an expired lease stays)
    conf = config_file(tmp_path, path=str(warehouse), lock_timeout_seconds=120.0, write_lease_seconds=60.0)
    marker = tmp_path / "held"
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(conf), str(marker)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not marker.exists() or not marker.read_text():
            if holder.poll() is not None:
                pytest.fail(f"the holder ended before taking the slot: {holder.stderr.read()}")
            try:
                holder.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    killed_run = uuid.UUID(marker.read_text())

    inbox = small_inbox(tmp_path / "inbox", [ric(f"31010119800101{i:03d}") for i in range(20)])
    code, output = finished(ingest(conf, warehouse, inbox, prefect_server, tmp_path / "after.log"), tmp_path / "after.log")
    assert code == 0, output
    assert warehouse_state(warehouse)[1]["register"] == 20

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(killed_run)
        assert run.state.type == StateType.CRASHED, run.state
        assert "gone" in (run.state.message or "")
        limit = client.read_global_concurrency_limit_by_name(load_config(conf).warehouse.write_limit)
        assert limit.active_slots == 0  # the killed writer's slot was given back, the next one's released
