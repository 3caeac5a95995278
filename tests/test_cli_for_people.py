"""The command line for a person and for scripts (issue 16.6): ``--version``; an expected refusal
of ``round open`` as one line on stderr and exit 1, with no failed run in the Prefect UI;
Prefect's INFO lines in ``prefect.log`` beside the warehouse, not on the terminal; ``--json`` on
the commands scripts read: the table's figures as one JSON object, nothing else on stdout."""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from tests.builders import build
from tubetrail.cli import app

ROUND = ["round", "open", "--id", "R1", "--start", "2022-04-04T06:00", "--end", "2022-04-04T22:00"]


def test_version_from_the_package_metadata():
    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0
    assert done.stdout == f"tubetrail {version('tubetrail')}\n"


def tubetrail(args, prefect_server, timeout=300):
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_LOGGING_LEVEL": "INFO"}
    return subprocess.run([sys.executable, "-m", "tubetrail.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def open_round_runs() -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["open-round"])))


def test_round_already_open_is_one_line_and_no_failed_run(cfg, tmp_path, prefect_server):
    warehouse = ["--warehouse", str(cfg.warehouse.path)]
    before = {run.id for run in open_round_runs()}
    first = tubetrail([*warehouse, *ROUND], prefect_server)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "opened round R1: 2022-04-04T06:00:00+08:00 to 2022-04-04T22:00:00+08:00, pool size 10\n"
    # Prefect's INFO lines (flow run created, finished) went to the file beside the warehouse
    assert first.stderr == "", first.stderr
    log = (tmp_path / "prefect.log").read_text(encoding="utf-8")
    assert "opened round R1" in log and "Finished in state Completed()" in log

    again = tubetrail([*warehouse, *ROUND], prefect_server)
    assert (again.returncode, again.stdout, again.stderr) == (1, "", "refused: round R1 is already open\n")
    overlap = tubetrail([*warehouse, "round", "open", "--id", "R2", "--start", "2022-04-04T21:00",
                         "--end", "2022-04-05T06:00", "--json"], prefect_server)
    assert overlap.returncode == 1
    assert overlap.stderr == "refused: round R2: window overlaps round(s) R1\n"
    assert json.loads(overlap.stdout) == {
        "round_id": "R2", "starts_at": "2022-04-04T21:00:00+08:00", "ends_at": "2022-04-05T06:00:00+08:00",
        "districts": None, "pool_size": 10, "opened": False, "refused": "round R2: window overlaps round(s) R1"}
    bad_size = tubetrail([*warehouse, "round", "open", "--id", "R3", "--start", "2022-04-06T06:00",
                          "--end", "2022-04-06T22:00", "--pool-size", "7"], prefect_server)
    assert (bad_size.returncode, bad_size.stderr) == (1, "refused: round R3: pool size 7 not one of [1, 5, 10, 20]\n")
    # the refusals started no flow run: the UI shows the one completed open-round run
    runs = [run for run in open_round_runs() if run.id not in before]
    assert [(run.name, run.state_type.value) for run in runs] == [("open round R1", "COMPLETED")]


def cli(cfg, *args: str):
    return CliRunner().invoke(app, ["--warehouse", str(cfg.warehouse.path), *args])


def only_json(done) -> dict:
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)  # the whole of stdout is one JSON object


@pytest.mark.usefixtures("prefect_server")
def test_ingest_as_of_judges_a_register_birth_date_on_that_day_in_the_city(tmp_path):
    """``ingest --as-of``: the register's rows, which carry no time, are judged on the city's day
    at that time, whatever the clock says; a time that is not ISO 8601 is a usage error."""
    from tests.builders import REGISTER_HEADER, register_row, ric, write

    inbox = tmp_path / "in"
    write(inbox / "register/r.csv", "\n".join([REGISTER_HEADER, register_row(ric("11010120300101001")),
                                               register_row(ric("11010120000101001"), name="李四")]) + "\n")

    def take(as_of: str, name: str) -> dict:
        done = CliRunner().invoke(app, ["--warehouse", str(tmp_path / name), "ingest", str(inbox), "--as-of", as_of,
                                        "--json"])
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)["kinds"]["register"]

    # 23:59 on 31 December 2029 in Shanghai: the one born on 1 January 2030 is not born yet
    assert take("2029-12-31T23:59:00+08:00", "early.duckdb") == {
        "files_taken": 1, "seen_before": 0, "refused": 0, "rows_read": 2, "rows_accepted": 1, "rows_quarantined": 1}
    # 16:30 UTC that evening is 00:30 on 1 January in the city: born that day, real
    assert take("2029-12-31T16:30:00Z", "late.duckdb")["rows_accepted"] == 2
    bad = CliRunner().invoke(app, ["--warehouse", str(tmp_path / "x.duckdb"), "ingest", str(inbox), "--as-of", "soon"])
    assert (bad.exit_code, bad.stdout) == (2, "")  # a usage error, nothing taken
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.usefixtures("prefect_server")
def test_json_of_the_commands_scripts_read(cfg, tmp_path):
    opened = only_json(cli(cfg, *ROUND, "--json"))
    assert opened == {"round_id": "R1", "starts_at": "2022-04-04T06:00:00+08:00",
                      "ends_at": "2022-04-04T22:00:00+08:00", "districts": None, "pool_size": 10, "opened": True}

    inbox = build(tmp_path / "in")
    taken = only_json(cli(cfg, "ingest", str(inbox), "--json"))
    files = sorted(p for p in inbox.rglob("*") if p.is_file())
    assert taken["total"]["files_taken"] == len(files) and taken["refused"] == []
    assert taken["kinds"]["register"] == {"files_taken": 1, "seen_before": 0, "refused": 0, "rows_read": 16,
                                          "rows_accepted": 16, "rows_quarantined": 0}
    assert taken["kinds"]["results"]["files_taken"] == len(list((inbox / "results").rglob("*.csv")))
    assert taken["total"]["rows_read"] == taken["total"]["rows_accepted"] + taken["total"]["rows_quarantined"]
    again = cli(cfg, "ingest", str(inbox))  # the table: every file seen before
    assert again.exit_code == 0
    assert re.search(r"│ register\s+│\s+0\s+│\s+1\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+0\s+│", again.stdout), again.stdout

    as_of = "2022-04-05T12:00:00+08:00"
    reported = only_json(cli(cfg, "report", "--round", "R1", "--out", str(tmp_path / "report"), "--as-of", as_of,
                             "--json"))
    assert reported["round_id"] == "R1" and reported["page"] == str((tmp_path / "report" / "report.html").resolve())
    assert "coverage.parquet" in reported["files"] and (tmp_path / "report" / "report.html").exists()
    assert (round(reported["coverage"], 4), reported["worklists"]) == (0.9375, 1)  # 15 of the 16 registered

    due = only_json(cli(cfg, "sms", "send", "--round", "R1", "--dry-run", "--as-of", "2022-04-04T15:00+08:00",
                        "--json"))
    assert due["round_id"] == "R1" and due["dry_run"] is True and (due["sent"], due["failed"]) == (0, 0)
    assert sum(due["counts"].values()) > 0
    dry = cli(cfg, "sms", "send", "--round", "R1", "--dry-run", "--as-of", "2022-04-04T15:00+08:00")
    shown = " ".join(dry.stdout.split())
    for outcome, messages in due["counts"].items():  # the table's rows are the JSON's counts
        assert re.search(rf"│ {outcome}\s+│ {messages:,}\s+│", dry.stdout), (outcome, messages, dry.stdout)
    assert "round R1: 0 sent, 0 failed (dry run: nothing sent)" in shown

    exported = only_json(cli(cfg, "export", "results", "--since", "2022-04-04T00:00", "--out",
                             str(tmp_path / "exports"), "--json"))
    assert exported["export_id"] == 1 and exported["created"] is True and exported["matches_ledger"] is True
    assert exported["rows"] == sum(c["rows"] for c in exported["counts"].values()) > 0
    assert exported["csv"].endswith(".csv") and os.path.exists(exported["csv"])
    assert exported["next_since"] == exported["until"]
