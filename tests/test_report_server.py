"""The report server serves report.html pages under its folder and the report.xlsx beside each,
and nothing else: the report folder also holds person status, untested lists and worklists with
personal data."""

import httpx

from tests.builders import AS_OF
from reporting.html import report_link
from tubetrail.report_server import ReportServer, servable


def test_only_report_pages_inside_the_root_are_served(tmp_path):
    report = tmp_path / "demo" / "report"
    report.mkdir(parents=True)
    (report / "report.html").write_text("<h1>覆盖率</h1>", encoding="utf-8")
    (report / "untested.csv").write_text("id_number\n110101199003074514\n", encoding="utf-8")
    (report / "worklists").mkdir()
    (report / "worklists" / "report.html.csv").write_text("x", encoding="utf-8")
    outside = tmp_path / "other" / "report.html"
    outside.parent.mkdir()
    outside.write_text("outside", encoding="utf-8")

    with ReportServer(tmp_path / "demo") as server:
        page = httpx.get(report_link(server.url, report / "report.html"))
        assert page.status_code == 200 and page.text == "<h1>覆盖率</h1>"
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        for refused in (report / "untested.csv", report / "worklists" / "report.html.csv", outside,
                        report / "missing" / "report.html"):
            answer = httpx.get(report_link(server.url, refused))
            assert answer.status_code == 404 and "110101" not in answer.text
        # climbing out of the root through the path is refused too
        sneaky = server.url + str(report) + "/../../other/report.html"
        assert httpx.get(sneaky).status_code == 404
    assert servable(tmp_path / "demo", str(report / "report.html")) == (report / "report.html").resolve()
    assert servable(tmp_path / "demo", str(report)) is None


#: every personal file a report folder holds (DESIGN §7, the district packs): never served
PERSONAL = ("untested.csv", "untested.parquet", "resample_orders.csv", "resample_orders.parquet",
            "person_status.parquet", "key_groups_overdue.csv", "key_groups_overdue.parquet", "door_to_door.parquet",
            "district_orders.parquet", "districts/黄浦区/untested.csv", "districts/黄浦区/resample_orders.csv",
            "districts/黄浦区/worklists/G1.csv", "districts/黄浦区/summary.json", "worklists/G1.csv")


def report_folder(root):
    import polars as pl

    from reporting.workbook import write_workbook

    report = root / "report"
    report.mkdir(parents=True)
    (report / "report.html").write_text('<a href="report.xlsx">report.xlsx</a>', encoding="utf-8")
    write_workbook(report / "report.xlsx", {"coverage by district": pl.DataFrame({"district": ["黄浦区"], "sampled": [15]})},
                   as_of=AS_OF, timezone="Asia/Shanghai")
    for name in PERSONAL:
        (report / name).parent.mkdir(parents=True, exist_ok=True)
        (report / name).write_text("id_number\n110101199003074514\n", encoding="utf-8")
    (report / "coverage.parquet").write_bytes(b"PAR1")  # aggregate, but for machines: not linked, not served
    return report


def test_the_workbook_beside_a_page_is_served_as_a_download(tmp_path):
    report = report_folder(tmp_path)
    with ReportServer(tmp_path) as server:
        answer = httpx.get(report_link(server.url, report / "report.xlsx"))
        assert answer.status_code == 200 and answer.content == (report / "report.xlsx").read_bytes()
        assert answer.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        assert answer.headers["content-disposition"] == 'attachment; filename="report.xlsx"'
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_no_personal_file_is_ever_served(tmp_path):
    report = report_folder(tmp_path)
    # a workbook or page inside the district packs, or a workbook without its page, is refused too
    (report / "districts" / "黄浦区" / "report.html").write_text("x", encoding="utf-8")
    (report / "districts" / "黄浦区" / "report.xlsx").write_bytes(b"x")
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "report.xlsx").write_bytes((report / "report.xlsx").read_bytes())
    (report / "sneaky").mkdir()
    (report / "sneaky" / "report.xlsx").symlink_to(report / "untested.csv")
    (report / "sneaky" / "report.html").symlink_to(report / "person_status.parquet")
    with ReportServer(tmp_path) as server:
        for name in (*PERSONAL, "coverage.parquet", "districts/黄浦区/report.html", "districts/黄浦区/report.xlsx",
                     "sneaky/report.xlsx", "sneaky/report.html"):
            answer = httpx.get(report_link(server.url, report / name))
            assert answer.status_code == 404 and "110101" not in answer.text, name
        assert httpx.get(report_link(server.url, tmp_path / "lonely" / "report.xlsx")).status_code == 404
        assert httpx.get(server.url + str(report) + "/../report/untested.csv").status_code == 404
        assert httpx.get(report_link(server.url, report / "report.html")).status_code == 200


def test_browser_check_opens_the_workbook_through_the_served_link(called, tmp_path):
    """What ``make browser-check`` does with the report link: the page names its workbook, the
    server serves it, openpyxl opens it, its sheets and rows are those the page lists."""
    from tests.reporting.test_report import report
    from devtools.browser_check import report_problems, served_workbook_problems, workbook_problems

    report(called, tmp_path / "out")
    page = tmp_path / "out" / "report.html"
    html = page.read_text(encoding="utf-8")
    with ReportServer(tmp_path) as server:
        assert served_workbook_problems(report_link(server.url, page), html) == []
        (tmp_path / "out" / "report.xlsx").write_bytes(b"not a workbook")
        assert served_workbook_problems(report_link(server.url, page), html) == [
            f"workbook {report_link(server.url, page.parent / 'report.xlsx')}: does not open (BadZipFile)"]
    report(called, tmp_path / "again")
    data = (tmp_path / "again" / "report.xlsx").read_bytes()
    assert workbook_problems(data, html) == []
    problems = workbook_problems(data, html.replace('worst grids</td><td>1<', 'worst grids</td><td>7<'))
    assert len(problems) == 1, problems
    workbook_side, page_side = problems[0].split(" but the page lists ")
    assert "'worst grids': 1," in workbook_side and "'worst grids': 7," in page_side
    assert report_problems(html.replace('href="report.xlsx"', 'href="#"')) == ["report: no link to report.xlsx"]


def test_browser_check_says_so_without_openpyxl(monkeypatch):
    import sys

    from devtools.browser_check import workbook_problems

    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import openpyxl raises ImportError
    assert workbook_problems(b"", "") == [
        "workbook: openpyxl is not installed (a dev dependency: uv sync --group dev), cannot open report.xlsx"]
