"""The ``export-results`` flow against the real Prefect server: the files, and a UI that shows
counts and the file name only: the artifact, the run's logs, its name and parameters hold no
person (the files do, for the platform)."""

import json
import logging
import time

import pytest

from tests.builders import P, build
from tests.reporting.test_exports import DAY, opened, take  # noqa: F401 - opened is a fixture

pytestmark = pytest.mark.usefixtures("prefect_server")
STEM = "results_20220404T000000+0800_20220404T200000+0800"


def test_the_export_flow_writes_the_files_and_shows_counts_only(opened, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.exports import export_results
    from tests.flows.test_ingest_flow import read_artifacts

    take(opened, build(tmp_path / "in"))
    runs = logging.getLogger("prefect.flow_runs")
    level = runs.level
    runs.setLevel(logging.INFO)  # the session logs warnings only: the run's info lines are checked too
    try:
        state = export_results(str(tmp_path / "out"), DAY, None, opened.warehouse.path, return_state=True)
    finally:
        runs.setLevel(level)
    result = state.result()
    assert (result["export_id"], result["created"], result["rows"]) == (1, True, 7)
    assert (result["since"], result["until"], result["next_since"]) == (
        "2022-04-04T00:00:00+08:00", "2022-04-04T20:00:00+08:00", "2022-04-04T20:00:00+08:00")
    assert result["csv"] == str(tmp_path / "out" / f"{STEM}.csv") and result["matches_ledger"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{STEM}.csv", f"{STEM}.parquet"]

    run_id = state.state_details.flow_run_id
    artifact = next(a for a in read_artifacts("export-results") if a.flow_run_id == run_id)
    table = json.loads(artifact.data)
    assert [(r["export"], r["file"], r["result"], r["rows"]) for r in table] == [
        (1, f"{STEM}.csv", "negative", 5), (1, f"{STEM}.csv", "positive", 2), (1, f"{STEM}.csv", "withdrawn", 0)]
    assert "export 1, recorded now" in artifact.description
    APILogHandler().flush()  # the run's logs reach the server in batches: send what is left now
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        for _ in range(60):  # and wait until the server has stored them (an outcome, not a time)
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any("recorded now" in log.message for log in logs):
                break
            time.sleep(0.5)
    assert run.name == "export results since 2022-04-04T00:00:00+08:00"
    messages = "\n".join(log.message for log in logs)
    assert f"export 1 (recorded now): 5 negative, 2 positive, 0 withdrawn in {STEM}.csv" in messages
    shown = "\n".join([messages, artifact.data, artifact.description or "", run.name,
                       json.dumps(run.parameters, default=str)])
    for secret in [*P.values(), "张三", "13800138000", "+8613800138000"]:
        assert secret not in shown
    # the same since again: the recorded export, its files written again, the same bytes
    before = (tmp_path / "out" / f"{STEM}.csv").read_bytes()
    again = export_results(str(tmp_path / "out"), DAY, None, opened.warehouse.path)
    assert (again["export_id"], again["created"]) == (1, False)
    assert (tmp_path / "out" / f"{STEM}.csv").read_bytes() == before


def test_the_deployment_runs_the_flow_and_continues_from_the_last_export():
    """Declared in prefect.yaml (served by `tubetrail serve`): without a since, the flow goes on
    where the recorded exports end (tests/reporting/test_exports.py: ``export(cfg, None)``)."""
    from flows.serve import build_deployments

    (deployment,) = [d for d in build_deployments() if d.name == "export-results"]
    assert deployment.parameters == {"out": "exports"}
    assert deployment.flow_name == "export-results" and "export" in deployment.tags
    assert not deployment.schedules  # run from the UI (the first export needs its since)
