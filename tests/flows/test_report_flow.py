"""The report flow and the served deployments, against the real Prefect server."""

import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.builders import AS_OF, P, build, open_test_round
from kernel.secrets import id_hash_key
from warehouse.connection import open_warehouse
from warehouse.writer import open_round

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_round_report_flow_writes_the_files_and_aggregate_artifacts(tmp_path, cfg):
    from flows.ingest import ingest_inbox
    from flows.report import round_report
    from tests.flows.test_ingest_flow import read_artifacts

    open_test_round(cfg)
    ingest_inbox(str(build(tmp_path / "in")), None, cfg.warehouse.path)
    result = round_report(None, str(tmp_path / "reports"), AS_OF, None, cfg.warehouse.path, dated=True)
    folder = tmp_path / "reports" / "R1" / "2022-04-05"
    assert result["round_id"] == "R1" and result["out"] == str(folder)
    assert (folder / "report.html").exists() and (folder / "coverage.parquet").exists()
    import json

    table = json.loads(read_artifacts("coverage-by-district")[0].data)
    markdown = read_artifacts("round-report")[0].data
    assert table == [{"district": "黄浦区", "registered": 16, "sampled": 15, "resulted": 13, "untested": 1,
                      "coverage %": 93.75}]
    assert "| 16 | 15 | 93.75 % | 13 | 1 |" in markdown
    for secret in [*P.values(), "张三", "13800138000"]:
        assert secret not in markdown and secret not in str(table)


def test_serve_registers_every_deployment_and_the_nightly_report_runs_from_the_api(prefect_server, tmp_path, cfg):
    """`tubetrail serve` in a process of its own: the deployments appear on the server with
    their schedules, and a run of the nightly report started through the API (what the UI's
    Run button does) is executed by the served process and writes the report."""
    import os

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from flows.ingest import ingest_inbox

    open_test_round(cfg)
    ingest_inbox(str(build(tmp_path / "in")), None, cfg.warehouse.path)
    # the schedule reports the current round only: R1 (2022) is long over (issue 13.1: the demo's
    # schedules acted on its replayed round); a round open now is the one the nightly run reports
    from datetime import timedelta, timezone

    from reporting.report import current_round

    now = datetime.now(timezone.utc)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        with pytest.raises(ValueError, match="no round is current"):
            current_round(con, now)
        open_round(con, round_id="RNOW", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=12),
                   districts=None, pool_size=10, run_id=None)
        assert current_round(con, now) == "RNOW"
    conf = tmp_path / "tubetrail.toml"
    conf.write_text(f'[warehouse]\npath = "{cfg.warehouse.path}"\n', encoding="utf-8")
    work = tmp_path / "served"
    work.mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "TUBETRAIL_CONFIG": str(conf)}
    proc = subprocess.Popen([sys.executable, "-m", "tubetrail.cli", "serve"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        found = {}
        while time.monotonic() < deadline and len(found) < 3:
            with get_client(sync_client=True) as client:
                found = {d.name: d for d in client.read_deployments()}
            time.sleep(1)
        assert {"ingest-inbox", "nightly-report", "reminder-sweep"} <= set(found)
        (schedule,) = found["nightly-report"].schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 23 * * *", "Asia/Shanghai")
        assert found["nightly-report"].parameters == {"round_id": None, "out": "reports", "dated": True}
        (sweep,) = found["reminder-sweep"].schedules
        assert sweep.schedule.cron == "0 9-19/2 * * *"

        run = run_deployment("round-report/nightly-report", timeout=180)
        assert run.state.is_completed(), run.state
        reports = list((work / "reports" / "RNOW").glob("*/report.html"))
        assert len(reports) == 1 and (reports[0].parent / "coverage.parquet").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_report_run_publishes_the_link_to_its_page(prefect_server, tmp_path, cfg):
    """With ``[report] link_base`` set, the run's link artifact opens report.html on the report
    server (what the coordinator clicks in the UI's Artifacts)."""
    import httpx

    from flows.report import round_report
    from tests.flows.test_ingest_flow import read_artifacts
    from flows.ingest import ingest_inbox
    from tubetrail.report_server import ReportServer

    open_test_round(cfg)
    ingest_inbox(str(build(tmp_path / "in")), None, cfg.warehouse.path, label="hand-made round")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:  # a label names the ingest run (the demo's waves)
        assert client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["ingest hand-made round"])))
    with ReportServer(tmp_path) as server:
        conf = tmp_path / "tubetrail.toml"
        conf.write_text(f'[report]\nlink_base = "{server.url}"\n', encoding="utf-8")
        result = round_report("R1", str(tmp_path / "report"), AS_OF, str(conf), cfg.warehouse.path)
        link = read_artifacts("report-link")[0]
        assert link.data == f"[report.html of R1]({result['link']})"  # Prefect keeps a link as markdown
        assert result["link"].startswith(server.url) and result["link"].endswith("/report.html")
        page = httpx.get(result["link"])
        assert page.status_code == 200
        assert page.text == (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
        from devtools.browser_check import served_workbook_problems  # the page's workbook opens through its link

        assert served_workbook_problems(result["link"], page.text) == [] and "report.xlsx" in result["files"]
        assert result["link"] in read_artifacts("round-report")[0].data
        from devtools.browser_check import report_link_of  # what make browser-check opens

        assert report_link_of(prefect_server.removesuffix("/api")) == result["link"]
