"""A missing, too short or wrong ID-hash key ends every command with exit 2 and one line on
stderr, never a traceback (issue 12, item 7)."""

import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from tests.conftest import REPO, write
from warehouse.connection import WrongIdHashKey, open_warehouse

pytestmark = pytest.mark.usefixtures("prefect_server")

ROUND = ["round", "open", "--id", "R1", "--start", "2022-04-04T06:00", "--end", "2022-04-04T22:00"]


def tubetrail(args, key, prefect_server, timeout=300):
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    env.pop("TUBETRAIL_ID_HASH_KEY")
    if key is not None:
        env["TUBETRAIL_ID_HASH_KEY"] = key
    return subprocess.run([sys.executable, "-m", "tubetrail.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_exit_2(done, expected):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]


def built_with_another_key(tmp_path):
    path = tmp_path / "wh.duckdb"
    with open_warehouse(path, b"the-key-it-was-built-with-0123"):
        pass
    return path


@pytest.mark.parametrize("args", [ROUND, ["ingest", "INBOX"], ["report", "--round", "R1", "--out", "OUT"],
                                  ["sms", "send", "--dry-run"]], ids=["round open", "ingest", "report", "sms send"])
def test_a_missing_key_is_exit_2_in_one_line(tmp_path, prefect_server, args):
    (tmp_path / "in").mkdir()
    args = [str(tmp_path / "in") if a == "INBOX" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    done = tubetrail(["--warehouse", str(tmp_path / "wh.duckdb"), *args], None, prefect_server)
    assert_one_line_exit_2(done, "the ID-hash key is not set")


def test_a_too_short_key_is_exit_2_in_one_line(tmp_path, prefect_server):
    done = tubetrail(["--warehouse", str(tmp_path / "wh.duckdb"), *ROUND], "short", prefect_server)
    assert_one_line_exit_2(done, "too short")


@pytest.mark.parametrize("args", [ROUND, ["ingest", "INBOX"], ["report", "--round", "R1", "--out", "OUT"],
                                  ["sms", "send", "--dry-run"], ["serve"]],
                         ids=["round open", "ingest", "report", "sms send", "serve"])
def test_a_wrong_key_is_exit_2_in_one_line(tmp_path, prefect_server, args):
    warehouse = built_with_another_key(tmp_path)
    (tmp_path / "in").mkdir()
    write(tmp_path / "in/labs/l.csv", "lab_id,name\nL1,Lab\n")
    args = [str(tmp_path / "in") if a == "INBOX" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    done = tubetrail(["--warehouse", str(warehouse), *args], "a-different-key-0123456789", prefect_server)
    assert_one_line_exit_2(done, "the ID-hash key differs")


def test_a_wrong_key_raised_inside_a_flow_run_reaches_the_cli_as_itself(tmp_path, monkeypatch):
    """What a flow run re-raises is the error itself: the CLI's one mapping turns it into exit 2."""
    from flows.rounds import open_round
    from tubetrail.cli import exit_2_cause, one_line

    warehouse = built_with_another_key(tmp_path)
    monkeypatch.setenv("TUBETRAIL_ID_HASH_KEY", "a-different-key-0123456789")
    with pytest.raises(Exception) as raised:
        open_round("R1", datetime(2022, 4, 4, tzinfo=timezone.utc), datetime(2022, 4, 5, tzinfo=timezone.utc),
                   None, 10, None, str(warehouse))
    cause = exit_2_cause(raised.value)
    assert isinstance(cause, WrongIdHashKey)
    assert "\n" not in one_line(cause)
