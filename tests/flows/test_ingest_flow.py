"""Ingest flows against a real Prefect server (the session harness)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, write
from tests.builders import REGISTER_HEADER, register_row, ric, settled_task_runs

pytestmark = pytest.mark.usefixtures("prefect_server")


def small_inbox(root: Path, people: list[str], name: str = "r.csv") -> Path:
    write(root / "sites/s.csv", "site_id,name,district\nS1,One,黄浦区\n")
    write(root / "labs/l.csv", "lab_id,name\nL1,Lab\n")
    rows = [register_row(p, phone="13812345678", name="王小明", address="外滩1号") for p in people]
    write(root / "register" / name, REGISTER_HEADER + "\n" + "\n".join(rows) + "\nRIC,1,x,,a,b,c,d,,,,\n")
    return root


def read_artifacts(key: str):
    """Artifacts of a key, newest first (tests share one server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


def test_ingest_flow_publishes_a_summary_without_personal_data(tmp_path, cfg):
    from flows.ingest import ingest_inbox

    people = [ric(f"31010119800102{i:03d}") for i in range(5)]
    inbox = small_inbox(tmp_path / "in", people)
    write(inbox / "results/L1/x.csv", "lab_id,run_id\n")  # no instrument export at all
    outcomes = ingest_inbox(str(inbox), None, cfg.warehouse.path)
    assert [(o.kind, o.status, o.rows_read, o.rows_accepted, o.rows_quarantined) for o in outcomes] == [
        ("sites", "accepted", 1, 1, 0), ("labs", "accepted", 1, 1, 0), ("register", "accepted", 6, 5, 1),
        ("results", "refused", 0, 0, 0)]
    assert outcomes[-1].message.startswith("results/L1/x.csv: ")

    summary = read_artifacts("ingest-summary")[0].data
    assert "| register | 1 | 0 | 0 | 6 | 5 | 1 |" in summary
    assert "RIC not 17 digits plus a check character" in summary
    assert "## Refused files" in summary and "results/L1/x.csv" in summary
    files = read_artifacts("ingest-files")[0].data
    for text in (summary, str(files)):
        for secret in [*people, "王小明", "13812345678", "+8613812345678", "外滩1号"]:
            assert secret not in text

    again = ingest_inbox(str(inbox), None, cfg.warehouse.path)
    assert {o.status for o in again} == {"skipped"}


def test_a_concurrent_pair_of_ingests_both_succeed(tmp_path, prefect_server):
    warehouse = tmp_path / "shared.duckdb"
    a = small_inbox(tmp_path / "a", [ric(f"31010119800101{i:03d}") for i in range(300)], "a.csv")
    b = small_inbox(tmp_path / "b", [ric(f"31010119900101{i:03d}") for i in range(300)], "b.csv")
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    procs = [
        subprocess.Popen([sys.executable, "-m", "tubetrail.cli", "--warehouse", str(warehouse), "ingest", str(inbox)],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for inbox in (a, b)
    ]
    results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    for code, output in results:
        assert code == 0, output
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM register").fetchall() == [(600,)]
        # the identical sites and labs files were taken once between them
        assert con.sql("SELECT kind, count(*) FROM ingest_ledger GROUP BY kind ORDER BY kind").fetchall() == [
            ("labs", 1), ("register", 2), ("sites", 1)]
    finally:
        con.close()


def test_round_flow_and_chain_summary_artifact(tmp_path, cfg):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from flows.ingest import ingest_inbox
    from flows.rounds import open_round
    from sampling.rounds import RoundRefused
    from tests.test_collect_deliver import P, build_inbox

    sh = ZoneInfo("Asia/Shanghai")
    open_round("R1", datetime(2022, 4, 4, 6, tzinfo=sh), datetime(2022, 4, 4, 22, tzinfo=sh),
               None, 10, None, cfg.warehouse.path)
    with pytest.raises(RoundRefused, match="overlaps round"):
        open_round("R2", datetime(2022, 4, 4, 21, tzinfo=sh), datetime(2022, 4, 5, 6, tzinfo=sh),
                   None, 10, None, cfg.warehouse.path)
    ingest_inbox(str(build_inbox(tmp_path / "in")), None, cfg.warehouse.path)
    text = read_artifacts("chain-summary")[0].data
    # 10 tubes opened, 8 sealed, 8 received (T10 was never collected), 1 refused; 18 registered
    # people sampled (P2 voided, P19 untested) and 2 visitors
    assert "| R1 | 10 | 9 | 8 | 1 | 18 | 2 |" in text
    # judged at the latest fact ingested (the receipts of 14:00), not the wall clock: no tube is
    # lost before the round's end + 12 h (issue 13.9: a replay's 10:00 wave showed 20,940 lost)
    assert "as of 2022-04-04 14:00 +08:00" in text
    assert "| over_capacity | 1 |" in text and "tube_lost" not in text
    for number in P.values():
        assert number not in text


def test_one_task_run_per_batch_named_by_its_kind_and_file_count(tmp_path, cfg):
    """Issue 15.2: a stretch of files of one kind is one task run (``take <kind> ×<n>``) that
    returns one outcome per file; the ingest-files artifact still lists every file."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter

    from flows.ingest import ingest_inbox

    people = [ric(f"31010119800103{i:03d}") for i in range(6)]
    inbox = small_inbox(tmp_path / "in", people[:3])
    write(inbox / "register/s.csv", REGISTER_HEADER + "\n" + "\n".join(register_row(p) for p in people[3:]) + "\n")
    outcomes = ingest_inbox(str(inbox), None, cfg.warehouse.path)
    assert [(o.file_name, o.status, o.rows_read, o.rows_accepted) for o in outcomes] == [
        ("sites/s.csv", "accepted", 1, 1), ("labs/l.csv", "accepted", 1, 1), ("register/r.csv", "accepted", 4, 3),
        ("register/s.csv", "accepted", 3, 3)]
    table = read_artifacts("ingest-files")[0].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [(r["file"], r["rows read"]) for r in rows] == [(o.file_name, o.rows_read) for o in outcomes]
    with get_client(sync_client=True) as client:
        feeds = [r for r in client.read_flow_runs(flow_filter=FlowFilter(name={"any_": ["ingest-feed"]}))
                 if str(inbox) in str(r.parameters.get("files"))]
    # task runs reach the server as events, maybe after the flow returned: read once all three are
    names = sorted(t.name for t in settled_task_runs([r.id for r in feeds], 3))
    assert names == ["take labs ×1", "take register ×2", "take sites ×1"]
