"""The report server serves report.html pages under its folder and nothing else: the report
folder also holds person status, untested lists and worklists with personal data."""

import httpx

from tubetrail.report_server import ReportServer, report_link, servable


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
