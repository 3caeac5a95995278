"""report.html's charts and page for every reader (issue 14.5): the workbook link, ``lang``,
SVG titles, districts sorted by coverage on a zoomed axis, hourly throughput on a real time axis
in city time, numbers in the heat table's cells."""

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from reporting.html import coverage_chart, throughput_chart
from tests.builders import ingest, resamples
from tests.reporting.test_report import report

SH = ZoneInfo("Asia/Shanghai")
UTC = ZoneInfo("UTC")
CITY_HOUR = re.compile(r"^\d\d-\d\d \d\d:\d\d$")


def tick_labels(svg: str, axis: str) -> list[str]:
    """The tick labels of one axis, in drawing order (matplotlib's ``xtick_N`` / ``ytick_N``)."""
    return re.findall(rf'<g id="{axis}tick_\d+">.*?<text[^>]*>([^<]*)</text>', svg, re.S)


def section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start:html.index("</section>", start)]


def test_districts_sorted_by_coverage_on_an_axis_zoomed_to_the_data():
    svg = coverage_chart(["黄浦区", "徐汇区", "长宁区", "静安区"], [0.97, 0.912, 0.995, 0.958])
    # worst at the top: matplotlib draws the bottom bar's label first
    assert tick_labels(svg, "y")[::-1] == ["徐汇区", "静安区", "黄浦区", "长宁区"]
    x = [float(t) for t in tick_labels(svg, "x")]
    assert 80 <= x[0] <= 91.2 and x[-1] >= 100  # from a little below the lowest, past 100
    assert "the axis starts at 85 %" in svg and ">100 %<" in svg
    for value in ("91.2 %", "95.8 %", "97.0 %", "99.5 %"):  # every bar carries its value
        assert value in svg
    assert svg.startswith("<svg") and 'role="img"' in svg and 'aria-label="Coverage by district, lowest first"' in svg
    assert "<title>Coverage by district, lowest first</title>" in svg
    assert re.search(r'<text lang="zh"[^>]*>徐汇区</text>', svg)
    assert coverage_chart(["黄浦区", "徐汇区"], [0.97, 0.912]) == coverage_chart(["黄浦区", "徐汇区"], [0.97, 0.912])


def test_hourly_throughput_on_a_time_axis_in_city_time_with_its_gap():
    """Sampling 06:00–09:00 and, after the night, 07:00 the next morning (instants in UTC): the
    ticks are evenly spaced city hours across the night, not one label per bar."""
    hours = [datetime(2022, 4, 4, h, tzinfo=SH).astimezone(UTC) for h in (6, 7, 8)] + [
        datetime(2022, 4, 5, 7, tzinfo=SH).astimezone(UTC)]
    svg = throughput_chart(hours, [120, 340, 200, 15], SH, "+08:00")
    labels = tick_labels(svg, "x")
    assert labels and all(CITY_HOUR.match(t) for t in labels), labels
    ticks = [datetime.strptime(f"2022-{t}", "%Y-%m-%d %H:%M") for t in labels]
    steps = {b - a for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1  # a time axis: equal steps, whatever the data
    assert ticks[0] <= datetime(2022, 4, 4, 9) and ticks[-1] >= datetime(2022, 4, 5, 6)
    assert any(datetime(2022, 4, 4, 10) < t < datetime(2022, 4, 5, 6) for t in ticks)  # the night is on the axis
    assert all(t.hour % (next(iter(steps)).seconds // 3600) == 0 for t in ticks)  # round hours of the city
    assert "hour, city time (UTC+08:00)" in svg and "<title>People sampled per hour</title>" in svg


def test_the_page_links_its_workbook_and_is_readable_without_colour(called, tmp_path):
    ingest(resamples(tmp_path / "morning"), called)
    report(called, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in html
    workbook = section(html, "workbook")
    assert '<a href="report.xlsx" download' in workbook
    assert re.findall(r'<td class="l">([^<]+)</td><td>([\d,]+)</td>', workbook) == [
        ("daily report", "4"), ("coverage by district", "2"), ("worst grids", "1"), ("coverage by grid", "1"),
        ("lab load", "2"), ("stock", "0"), ("pool-size advice", "1")]
    svgs = re.findall(r"<svg\b[^>]*>\s*<title>([^<]+)</title>", html)
    assert svgs == ["Coverage by district, lowest first", "People sampled per hour", "Lab load against daily capacity"]
    assert html.count("<svg") == len(svgs) == html.count('role="img"')
    # Chinese names marked as Chinese in the English page
    assert '<td class="l"><span lang="zh">黄浦区</span></td>' in section(html, "coverage")
    # the heat table's cell carries its number (15 of 16 sampled: 93 %, rounded down), not only a colour
    assert re.search(r'<span class="cell"[^>]*title="G1: 93.8 %"[^>]*>93</span>', section(html, "heat"))
    # the round's hours (04-04 11:00) and the next morning's re-samples (04-05 08:00) on one time axis
    labels = tick_labels(section(html, "throughput"), "x")
    assert labels and all(CITY_HOUR.match(t) for t in labels), labels
    assert labels[0].startswith("04-04") and labels[-1].startswith("04-05")


def test_a_district_with_nobody_registered_has_no_bar_and_no_say_in_the_zoom():
    svg = coverage_chart(["黄浦区", "徐汇区"], [0.97, None])
    assert "nobody registered" in svg and "the axis starts at 95 %" in svg
