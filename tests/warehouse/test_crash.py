"""Nothing lost, nothing twice: a kill -9 halfway through an ingest, then a re-run, leaves the
warehouse exactly as one clean run does."""

import os
import signal
import subprocess
import sys
import time
from datetime import date

import duckdb
import polars as pl

from sampling.identity import ric_check_char
from tests.conftest import REPO
from tests.builders import REGISTER_HEADER

INGEST = """
import sys
from pathlib import Path
from ingest.take import take_file
from kernel.config import Config
from ingest.discover import discover
cfg = Config().with_warehouse(sys.argv[2])
for f in discover(Path(sys.argv[1])):
    take_file(f, cfg)
"""


def big_register(path, n):
    first17 = (pl.lit("3101") + (10 + pl.col("i") % 5).cast(pl.Utf8)
               + (pl.lit(date(1950, 1, 1)) + pl.duration(days=pl.col("i") // 1000)).dt.strftime("%Y%m%d")
               + (pl.col("i") % 1000).cast(pl.Utf8).str.zfill(3))
    frame = pl.DataFrame({"i": pl.int_range(n, eager=True)}).with_columns(first17.alias("p"))
    frame = frame.select(
        pl.lit("RIC").alias("id_type"), (pl.col("p") + ric_check_char(pl.col("p") + "0")).alias("id_number"),
        pl.lit("张三").alias("name"), ("139" + pl.col("i").cast(pl.Utf8).str.zfill(8)).alias("phone"),
        pl.lit("黄浦区").alias("district"), pl.lit("外滩街道").alias("subdistrict"), pl.lit("中山居委").alias("community"),
        ("G" + (pl.col("i") % 50).cast(pl.Utf8)).alias("grid"), pl.lit("1 Road").alias("address"),
        ("H" + (pl.col("i") // 3).cast(pl.Utf8)).alias("household_id"), pl.lit("false").alias("mobility_limited"),
        pl.lit("").alias("key_group"))
    assert ",".join(frame.columns) == REGISTER_HEADER
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)


def state(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return (con.sql("SELECT count(*), count(DISTINCT person_key) FROM register").fetchall(),
                con.sql("SELECT kind, file_name, status, rows_read, rows_accepted FROM ingest_ledger ORDER BY 2").fetchall(),
                con.sql("SELECT count(*) FROM quarantine").fetchall(),
                con.sql("SELECT count(*) FROM audit").fetchall())
    finally:
        con.close()


def run(inbox, db):
    return subprocess.Popen([sys.executable, "-c", INGEST, str(inbox), str(db)], cwd=REPO, env=os.environ.copy(),
                            stderr=subprocess.DEVNULL)


def test_kill_9_halfway_then_rerun_equals_one_clean_run(tmp_path):
    inbox = tmp_path / "inbox"
    big_register(inbox / "register/a.csv", 150_000)
    big_register(inbox / "register/b.csv", 120_000)  # overlaps a: identical rows, no change
    (inbox / "labs").mkdir()
    (inbox / "labs/l.csv").write_text("lab_id,name\nL1,Lab\n")

    clean = tmp_path / "clean.duckdb"
    assert run(inbox, clean).wait(timeout=300) == 0
    expected = state(clean)
    assert expected[0] == [(150_000, 150_000)]

    crashed = tmp_path / "crashed.duckdb"
    for delay in (1.5, 3.0, 4.5):  # kill at several points: reading, checking, inside the transaction
        proc = run(inbox, crashed)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert run(inbox, crashed).wait(timeout=300) == 0
    assert state(crashed) == expected


def test_a_kill_leaves_staging_beside_the_warehouse_and_the_next_start_sweeps_it(tmp_path):
    """Issue 12.6: a file is staged below ``<warehouse>.staging/`` (0700), never in $TMPDIR (the
    batch's rows in memory, what spills in its folder there); a
    kill -9 mid-staging leaves its folder there, and the next ingest sweeps it, but never the
    staging of a concurrent ingest that is still alive."""
    inbox = tmp_path / "inbox"
    big_register(inbox / "register/a.csv", 300_000)
    later = tmp_path / "later"
    (later / "labs").mkdir(parents=True)
    (later / "labs/l.csv").write_text("lab_id,name\nL1,Lab\n")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    db = tmp_path / "wh" / "w.duckdb"
    staging = tmp_path / "wh" / "w.duckdb.staging"

    proc = subprocess.Popen([sys.executable, "-c", INGEST, str(inbox), str(db)], cwd=REPO, env=env,
                            stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not list(staging.glob("*/owner.lock")):  # its batch's folder, held
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    left = [p for p in staging.iterdir() if p.is_dir()]
    assert len(left) == 1 and (left[0] / "owner.lock").exists(), "killed before or after staging"
    assert staging.stat().st_mode & 0o777 == 0o700
    assert list(tmpdir.iterdir()) == []

    from kernel.tables import staging_folder

    with staging_folder(staging) as live:  # a concurrent ingest, staging right now
        assert subprocess.run([sys.executable, "-c", INGEST, str(later), str(db)], cwd=REPO, env=env,
                              timeout=300).returncode == 0
        assert [p.name for p in staging.iterdir() if p.is_dir()] == [live.name]  # the dead one swept
    assert [p for p in staging.iterdir() if p.is_dir()] == []
    assert list(tmpdir.iterdir()) == []
