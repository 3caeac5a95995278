"""Issue 16.2: what the flows publish is built in the domain, on tiny inputs here: the nightly
report's round and artifacts (``reporting.report``), the reminder sweep's (``reporting.reminders``)
and the export's table (``reporting.exports``). Counts and places only."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pytest

from reporting.exports import RESULTS, export_table_rows
from reporting.figures import ReportFigures
from reporting.reminders import reminders_markdown
from reporting.report import REPORT_AFTER_ROUND, coverage_by_district_rows, current_round, round_report_markdown

SH = ZoneInfo("Asia/Shanghai")
AS_OF = datetime(2022, 4, 5, 12, tzinfo=SH)


def figures() -> ReportFigures:
    return ReportFigures(
        "R1", AS_OF, files=["coverage.csv", "report.html"],
        city={"registered": 16_000, "sampled": 15_000, "coverage": 0.9375, "resulted": 13_000, "untested": 1_000},
        statuses={"negative": 12_000, "untested": 1_000}, orders={"pool_positive": 3},
        districts=[{"district": "黄浦区", "registered": 10, "sampled": 9, "resulted": 8, "untested": 1, "coverage": 0.9},
                   {"district": "静安区", "registered": 6, "sampled": 0, "resulted": 0, "untested": 6, "coverage": None}])


def test_current_round_follows_a_round_two_days_after_its_window():
    assert REPORT_AFTER_ROUND == "2 days"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE rounds (round_id VARCHAR, starts_at TIMESTAMPTZ, ends_at TIMESTAMPTZ)")
    con.execute("INSERT INTO rounds VALUES ('R1', ?, ?), ('R2', ?, ?)",
                [datetime(2022, 4, 4, 6, tzinfo=SH), datetime(2022, 4, 4, 22, tzinfo=SH),
                 datetime(2022, 4, 6, 6, tzinfo=SH), datetime(2022, 4, 6, 22, tzinfo=SH)])
    assert current_round(con, AS_OF) == "R1"
    assert current_round(con, datetime(2022, 4, 6, 7, tzinfo=SH)) == "R2"  # the latest started wins
    end = datetime(2022, 4, 4, 22, tzinfo=SH) + timedelta(days=2)
    con.execute("DELETE FROM rounds WHERE round_id = 'R2'")
    assert current_round(con, end - timedelta(seconds=1)) == "R1"
    with pytest.raises(ValueError, match="no round is current at 2022-04-06T22:00"):
        current_round(con, end)
    with pytest.raises(ValueError, match="no round is current"):
        current_round(con, datetime(2022, 4, 4, 5, tzinfo=SH))  # not started


def test_coverage_by_district_in_per_cent():
    assert coverage_by_district_rows(figures()) == [
        {"district": "黄浦区", "registered": 10, "sampled": 9, "resulted": 8, "untested": 1, "coverage %": 90.0},
        {"district": "静安区", "registered": 6, "sampled": 0, "resulted": 0, "untested": 6, "coverage %": 0}]


def test_the_round_report_markdown():
    packs = [{"district": "黄浦区", "untested": 1, "orders": {"pool_positive": 3}, "worklists": 2},
             {"district": "静安区", "untested": 6, "orders": {}, "worklists": 0}]
    text = round_report_markdown(figures(), packs, "[report.html](http://x/report.html)")
    lines = text.splitlines()
    assert lines[0] == "# Round R1: nightly report"
    assert "As of 2022-04-05T12:00+08:00. Report: [report.html](http://x/report.html)" in lines
    assert "| 16,000 | 15,000 | 93.75 % | 13,000 | 1,000 |" in lines
    assert "| negative | 12,000 |" in lines and "| pool_positive | 3 |" in lines
    assert "| 黄浦区 | 1 | 3 | 2 |" in lines and "| 静安区 | 6 | 0 | 0 |" in lines
    assert lines[-1] == ("Door-to-door worklists: 2 grid(s) in `districts/<district>/worklists/`. "
                         "Files: coverage.csv, report.html.")


def test_the_reminders_markdown():
    assert reminders_markdown("R1", {"due": 1_200, "sent": 1_190, "failed": 10}).splitlines() == [
        "# SMS reminders, round R1", "", "| outcome | messages |", "|---|---:|",
        "| due | 1,200 |", "| sent | 1,190 |", "| failed | 10 |"]
    stopped = reminders_markdown("R1", {"sent": 0}, "the provider refused the account (401)")
    assert stopped.endswith("| sent | 0 |\n\n**Stopped**: the provider refused the account (401)")


def test_the_export_table_in_city_time():
    counts = {r: {"rows": n, "amending": 0, "decided_before_since": 0} for r, n in zip(RESULTS, (5, 1, 0))}
    counts["positive"]["amending"] = 1
    since, until = datetime(2022, 4, 4, tzinfo=SH), datetime(2022, 4, 5, 8, 30, tzinfo=ZoneInfo("UTC"))
    rows = export_table_rows(7, "results_x.csv", since, until, counts, "Asia/Shanghai")
    assert [r["result"] for r in rows] == list(RESULTS)
    assert rows[1] == {"export": 7, "file": "results_x.csv", "since": "2022-04-04T00:00:00+08:00",
                       "until": "2022-04-05T16:30:00+08:00", "result": "positive", "rows": 1,
                       "amending an earlier export": 1, "decided before since (late or amended)": 0}
    assert {r["export"] for r in export_table_rows(None, "x.csv", since, until, counts, "Asia/Shanghai")} == {"-"}
