"""Results exports exactly once (DESIGN §9), through `tubetrail export results` in processes of
their own against the session's Prefect server: a kill -9 after the export is recorded and
before its file is written, and one halfway through writing it, then a re-run that writes the
same bytes; two concurrent exports of one ``since`` make one export. Outcomes only: no timing."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO
from tests.faults.test_concurrency import config_file
from tests.builders import build, open_test_round, resamples
from tests.reporting.test_exports import DAY, export, opened, take  # noqa: F401 - opened is a fixture

pytestmark = pytest.mark.usefixtures("prefect_server")
SINCE = DAY.isoformat()
STEM = "results_20220404T000000+0800_20220405T120000+0800"

#: `tubetrail` whose file writing is killed: right after the export is recorded (``after-commit``)
#: or with the Parquet twin's temporary file written and not yet renamed (``mid-write``)
KILLED = """
import os, signal, sys
import flows.exports as fx

mode = sys.argv[1]
real = fx.write_export_files

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def killed(files, out):
    if mode == "after-commit":
        die()
    os.replace = die  # the temporary file is written and synced, the rename never happens
    real(files, out)

fx.write_export_files = killed
from tubetrail.cli import app
sys.argv = ["tubetrail", *sys.argv[2:]]
app()
"""


def cli(args: list[str], prefect_server: str, log: Path, killed: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    argv = [sys.executable, "-c", KILLED, killed, *args] if killed else [sys.executable, "-m", "tubetrail.cli", *args]
    with log.open("w", encoding="utf-8") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen, log: Path, timeout: float = 900) -> tuple[int, str]:
    code = proc.wait(timeout=timeout)
    return code, log.read_text(encoding="utf-8")


def exports(cfg) -> list[tuple]:
    con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
    try:
        return con.sql("SELECT export_id, rows, file_name, content_sha256, parquet_sha256 FROM result_exports"
                       " ORDER BY 1").fetchall()
    finally:
        con.close()


@pytest.fixture
def round_called(opened, tmp_path):
    """The tiny round with its re-samples: 9 final individual results."""
    take(opened, build(tmp_path / "in"))
    take(opened, resamples(tmp_path / "morning"))
    return opened


def args(tmp_path, cfg, out: Path) -> list[str]:
    return ["--config", str(config_file(tmp_path)), "--warehouse", str(cfg.warehouse.path),
            "export", "results", "--since", SINCE, "--out", str(out)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("killed", ["after-commit", "mid-write"])
def test_a_kill_between_the_record_and_the_file_then_the_rerun_writes_the_same_file(
        round_called, tmp_path, prefect_server, killed):
    cfg, out = round_called, tmp_path / "out"
    code, output = finished(cli(args(tmp_path, cfg, out), prefect_server, tmp_path / "killed.log", killed),
                            tmp_path / "killed.log")
    assert code == -9, output
    ((export_id, rows, file_name, csv_sha, parquet_sha),) = exports(cfg)  # recorded before the kill
    assert (export_id, rows, file_name) == (1, 9, f"{STEM}.csv")
    assert not (out / file_name).exists() and not (out / f"{STEM}.parquet").exists()  # never half a file
    if killed == "mid-write":
        (left,) = out.iterdir()
        assert left.name.startswith(f".{STEM}.parquet.") and left.name.endswith(".tmp")

    code, output = finished(cli(args(tmp_path, cfg, out), prefect_server, tmp_path / "rerun.log"),
                            tmp_path / "rerun.log")
    assert code == 0, output
    assert "export 1 (recorded before, written again): 9 results (6 negative, 3 positive, 0 withdrawn;" in output
    assert f"csv: {out / file_name}" in output and "next export: --since 2022-04-05T12:00:00+08:00" in output
    assert sorted(p.name for p in out.iterdir()) == [file_name, f"{STEM}.parquet"]  # the temporary one swept
    assert (sha256(out / file_name), sha256(out / f"{STEM}.parquet")) == (csv_sha, parquet_sha)
    assert exports(cfg) == [(export_id, rows, file_name, csv_sha, parquet_sha)]

    # the same bytes as a clean run's export of the same inbox
    clean = cfg.with_warehouse(tmp_path / "clean.duckdb")
    open_test_round(clean)
    take(clean, build(tmp_path / "clean-in"))
    take(clean, resamples(tmp_path / "clean-morning"))
    files = export(clean, DAY).files
    assert (out / file_name).read_bytes() == files.csv and (out / f"{STEM}.parquet").read_bytes() == files.parquet


def test_two_concurrent_exports_of_one_since_make_one_export(round_called, tmp_path, prefect_server):
    cfg = round_called
    argv = args(tmp_path, cfg, tmp_path / "out")
    logs = [tmp_path / f"export-{i}.log" for i in range(2)]
    procs = [cli(argv, prefect_server, log) for log in logs]
    outputs = []
    for proc, log in zip(procs, logs):
        code, output = finished(proc, log)
        assert code == 0, output
        assert "Traceback" not in output, output
        outputs.append(output)
    ((export_id, rows, file_name, csv_sha, parquet_sha),) = exports(cfg)
    assert (export_id, rows) == (1, 9)
    # one recorded it, the other found it (it waited for the write slot) and wrote it again
    assert sorted("(recorded now)" in o for o in outputs) == [False, True]
    assert all("(recorded before, written again)" in o or "(recorded now)" in o for o in outputs)
    assert all(f"csv: {tmp_path / 'out' / file_name}" in o for o in outputs)
    assert sha256(tmp_path / "out" / file_name) == csv_sha
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [file_name, f"{STEM}.parquet"]


def test_a_since_that_is_no_time_is_a_usage_error(tmp_path, cfg):
    proc = subprocess.run([sys.executable, "-m", "tubetrail.cli", "--warehouse", str(cfg.warehouse.path), "export",
                           "results", "--since", "yesterday", "--out", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "'yesterday': not an ISO 8601 time" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not Path(cfg.warehouse.path).exists()
