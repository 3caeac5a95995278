"""The report of a tiny hand-made round: DESIGN §7's files with exactly their columns, worklists
per grid, and report.html with every section and no personal data."""

from pathlib import Path

import duckdb
import polars as pl
import pytest

from reporting.html import SECTIONS
from reporting.report import (ANOMALY_COLUMNS, COVERAGE_COLUMNS, ORDER_COLUMNS, PERSON_STATUS_COLUMNS, TAT_COLUMNS,
                              UNTESTED_COLUMNS, copy_people_csv, write_report)
from tests.builders import AS_OF, P, REGISTER_HEADER, ingest, register_row, resamples
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse


def report(cfg, out):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        return write_report(con, cfg, "R1", AS_OF, out)


def test_every_file_with_exactly_its_columns(called, tmp_path):
    ingest(resamples(tmp_path / "morning"), called)
    figures = report(called, tmp_path / "out")
    out = tmp_path / "out"
    expected = {"coverage": COVERAGE_COLUMNS, "person_status": PERSON_STATUS_COLUMNS, "resample_orders": ORDER_COLUMNS,
                "untested": UNTESTED_COLUMNS, "anomalies": ANOMALY_COLUMNS, "tat": TAT_COLUMNS}
    for name, columns in expected.items():
        assert tuple(pl.read_parquet(out / f"{name}.parquet").columns) == columns, name
    assert tuple(pl.read_csv(out / "resample_orders.csv").columns) == ORDER_COLUMNS
    assert tuple(pl.read_csv(out / "untested.csv").columns) == UNTESTED_COLUMNS

    coverage = pl.read_parquet(out / "coverage.parquet")
    assert coverage.select("registered", "sampled", "untested").row(0) == (16, 15, 1)  # P16 was never sampled
    assert figures.statuses == {"negative": 6, "pool_positive": 3, "positive": 3, "resample": 1, "sampled": 2,
                                "untested": 1}
    untested = pl.read_parquet(out / "untested.parquet")
    assert untested["id_number"].to_list() == [P[16]]
    orders = pl.read_csv(out / "resample_orders.csv", infer_schema=False)
    assert sorted(orders["reason"].to_list()) == ["invalid", "pool_positive", "pool_positive", "pool_positive",
                                                  "pool_positive", "single_target"]
    tat = pl.read_parquet(out / "tat.parquet")
    ta = tat.filter(pl.col("tube_barcode") == "TA").row(0, named=True)
    assert (ta["received_to_called"], ta["total_hours"]) == (2.0, 5.0)  # received 14:00, called 16:00; collected 11:00
    anomalies = pl.read_parquet(out / "anomalies.parquet")
    assert anomalies.filter(pl.col("kind") == "plate_invalid").height == 2


def test_worklists_per_grid_for_door_to_door(called, tmp_path):
    from reporting.districts import report_districts, write_district_pack

    report(called, tmp_path / "out")
    assert report_districts(tmp_path / "out") == ["黄浦区"]
    pack = write_district_pack(tmp_path / "out", "黄浦区")
    lists = sorted((tmp_path / "out" / "districts" / "黄浦区" / "worklists").glob("*.csv"))
    assert [p.name for p in lists] == ["G1.csv"] and pack.worklists == 1
    work = pl.read_csv(lists[0], infer_schema=False)
    # urgent home re-sampling of the positive pools first, then P9's invalid tube (limited mobility)
    assert work["priority"].to_list()[:5] == ["urgent"] * 5
    assert set(work["id_number"]) == {P[i] for i in (1, 2, 3, 6, 7, 9)}


def test_a_district_pack_written_again_is_replaced_whole(called, tmp_path):
    """A retried or re-run pack task leaves one pack, as a single run would."""
    from reporting.districts import write_district_pack

    out = tmp_path / "out"
    report(called, out)
    first = write_district_pack(out, "黄浦区")
    (out / "districts" / "黄浦区" / "worklists" / "stale.csv").write_text("x\n")
    files = {p.relative_to(out): p.read_bytes() for p in (out / "districts").rglob("*") if p.is_file()}
    again = write_district_pack(out, "黄浦区")
    assert again == first and first.untested == 1 and first.orders == {"invalid": 1, "pool_positive": 4,
                                                                       "single_target": 1}
    after = {p.relative_to(out): p.read_bytes() for p in (out / "districts").rglob("*") if p.is_file()}
    assert after == {k: v for k, v in files.items() if k.name != "stale.csv"}
    assert [p.name for p in (out / "districts").iterdir()] == ["黄浦区"]


def test_report_html_has_every_section_and_no_personal_data(called, tmp_path):
    report(called, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in html, section
    assert "<svg" in html and "TA" in html
    for secret in [*P.values(), "张三", "13800138000", "+8613800138000", "1 Road"]:
        assert secret not in html


def test_key_group_cycles_name_who_is_overdue(called, tmp_path):
    from datetime import timedelta

    from tests.conftest import write

    groups = {11: "medical", 12: "courier", 13: "astronaut", 16: "medical"}
    rows = [register_row(P[i], key_group=g).replace(",H1,", f",H{i},") for i, g in groups.items()]
    write(tmp_path / "update/register/kg.csv", REGISTER_HEADER + "\n" + "\n".join(rows) + "\n")
    ingest(tmp_path / "update", called)
    with open_warehouse(called.warehouse.path, id_hash_key()) as con:
        define_views(con, called, snapshot=True)
        figures = write_report(con, called, "R1", AS_OF + timedelta(days=2), tmp_path / "out")
    assert figures.key_groups == {"medical": {"in cycle": 1, "overdue": 1}, "courier": {"overdue": 1},
                                  "astronaut": {"unknown cycle": 1}}
    overdue = pl.read_csv(tmp_path / "out" / "key_groups_overdue.csv", infer_schema=False)
    assert sorted(zip(overdue["id_number"], overdue["compliance"])) == sorted(
        [(P[12], "overdue"), (P[16], "overdue"), (P[13], "unknown cycle")])
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Key-group cycles</h2>" in html and "astronaut" in html


def test_the_browser_check_finds_a_missing_or_empty_section(called, tmp_path):
    from devtools.browser_check import report_problems

    report(called, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert report_problems(html) == []
    assert report_problems(html.replace("<h2>Worst grids</h2>", "<h2>Worst</h2>")) == [
        "report: section 'Worst grids' missing"]
    emptied = html.split('<section id="anomalies">')[0] + '<section id="anomalies"><h2>Anomalies by kind</h2></section>' \
        + "<section" + html.split('<section id="anomalies">')[1].split("<section", 1)[1]
    assert report_problems(emptied) == ["report: section 'Anomalies by kind' is empty"]


def test_report_html_is_in_city_time_and_the_same_bytes_twice(called, tmp_path):
    """Issue 13.9 and 13.2: the page's times carry the city's offset, and two runs as of one time
    give the same page (no wall-clock stamp, no chart metadata dates or random ids)."""
    report(called, tmp_path / "a")
    report(called, tmp_path / "b")
    first = (tmp_path / "a" / "report.html").read_bytes()
    assert first == (tmp_path / "b" / "report.html").read_bytes()
    html = first.decode("utf-8")
    assert "+08:00" in html and "generated" not in html


def test_overdue_urgent_orders_are_marked_and_counted_per_district(called, tmp_path):
    """Issue 13.6: an urgent order due at 20:00 and not re-sampled the next noon had no mark."""
    report(called, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    section = html[html.index("<h2>Overdue urgent re-samples</h2>"):]
    # TA's three people were due 6 h after its call; by AS_OF (the next day 14:00) they are overdue
    assert "⚠ OVERDUE" in html and '<tr class="overdue"><td class="l"><span lang="zh">黄浦区</span></td>' in section
    for secret in [*P.values(), "张三", "13800138000"]:
        assert secret not in section


def test_worker_files_carry_city_time(called, tmp_path):
    """Issue 13.9: worker files carried UTC (``due_by …+00:00``)."""
    report(called, tmp_path / "out")
    orders = pl.read_csv(tmp_path / "out" / "resample_orders.csv", infer_schema=False)
    assert orders["due_by"].str.ends_with("+08:00").all() and orders.height
    assert "2022-04-04T22:00:00+08:00" in orders["due_by"].to_list()  # TA called 16:00, urgent: 6 h


def test_a_people_csv_that_cannot_be_written_raises_its_own_error_and_leaves_the_session_usable():
    """The 25.7 M bench of 2026-12-02 filled its disk while the report wrote ``untested.csv``:
    the write's error was followed by DuckDB's "connection has an open result" on the next
    statement (the report's clean-up), which became the error raised. The chunk reader is
    closed whatever happens: the write's own error is raised and the session goes on."""
    con = duckdb.connect()
    # a full disk, for real: Linux's /dev/full opens and then refuses every write (ENOSPC),
    # here after the first of 30 chunks was read
    cleaned_up = []
    with pytest.raises(OSError, match="No space left on device"):
        try:
            copy_people_csv(con, "SELECT range AS n, 'x' AS name FROM range(3000000)", Path("/dev/full"),
                            "Asia/Shanghai")
        finally:  # as ``write_report``'s clean-up runs, while the error is on its way out
            cleaned_up.append(con.execute("SELECT 1").fetchall())
    assert cleaned_up == [[(1,)]]
