"""The crons of prefect.yaml fire: a full Prefect server (the test harness's ephemeral server
runs no scheduler) turns the served deployments' schedules into scheduled runs. With
SQLAlchemy 2.1 Prefect 3.8's scheduler failed on every pass ("Can't evaluate bulk DML
statement") and no nightly report or reminder sweep was ever scheduled: see README "Pins"."""

import os
import signal
import socket
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_scheduler_schedules_the_nightly_report_and_the_reminder_sweep(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import build_deployments

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        else:
            raise AssertionError("the Prefect server did not start within 90 s")
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}):
            ids = {d.name: d.apply() for d in build_deployments()}
            wanted = {"nightly-report": {"23:00"}, "reminder-sweep": {"09:00", "11:00", "13:00", "15:00", "17:00",
                                                                       "19:00"}}
            scheduled: dict[str, list] = {}
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not all(scheduled.get(n) for n in wanted):
                time.sleep(1)
                with get_client(sync_client=True) as client:
                    for name in wanted:
                        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[ids[name]])))
                        scheduled[name] = [r for r in runs if r.state_type.value == "SCHEDULED"]
        assert "bulk DML" not in (tmp_path / "server.log").read_text(errors="replace")
        for name, times in wanted.items():
            assert scheduled.get(name), f"the scheduler created no run of {name}"
            starts = {r.expected_start_time.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%H:%M") for r in scheduled[name]}
            assert starts <= times, (name, starts)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
