"""report.xlsx (issue 14.5): the workbook read back with openpyxl as Excel would: sheets, header,
numbers and times, formula-like text as quote-prefixed text, the same bytes twice, never a
person."""

import zipfile
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import openpyxl
import polars as pl
import pytest
from openpyxl.utils.escape import unescape

from reporting.workbook import PERSONAL_COLUMNS, write_workbook
from tests.faults.test_csv_injection import PAYLOADS, RUNS, report_out  # noqa: F401 - the fixture
from tests.builders import AS_OF, ingest, resamples
from tests.reporting.test_report import report

SH = ZoneInfo("Asia/Shanghai")
UTC = ZoneInfo("UTC")


def tiny() -> dict[str, pl.DataFrame]:
    districts = pl.DataFrame({
        "district": ["黄浦区", "徐汇区"], "registered": [1_234_567, 0], "coverage": [0.9712, None],
        "due_by": [datetime(2022, 4, 4, 12, tzinfo=UTC), None], "day": [date(2022, 4, 4), date(2022, 4, 5)],
        "silent": [True, False], "tat": [timedelta(hours=1, minutes=30), None]})
    return {"coverage by district": districts, "empty": districts.clear()}


def write(path, sheets=None, as_of=AS_OF, timezone="Asia/Shanghai"):
    return write_workbook(path, sheets or tiny(), as_of=as_of, timezone=timezone, title="t")


def test_sheets_header_numbers_and_city_times(tmp_path):
    rows = write(tmp_path / "r.xlsx")
    assert rows == {"coverage by district": 2, "empty": 0}
    book = openpyxl.load_workbook(tmp_path / "r.xlsx")
    assert book.sheetnames == ["coverage by district", "empty"]
    sheet = book["coverage by district"]
    header = [c for c in sheet[1]]
    assert [c.value for c in header] == ["district", "registered", "coverage", "due_by", "day", "silent", "tat (h)"]
    assert all(c.font.b for c in header)
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == "A1:G3"
    row = {h.value: c for h, c in zip(header, sheet[2])}
    assert row["district"].value == "黄浦区" and row["district"].data_type == "s"
    assert row["registered"].value == 1_234_567 and row["registered"].number_format == "#,##0"
    assert row["coverage"].value == 0.9712 and row["coverage"].number_format == "0.00%"
    # 12:00 UTC is 20:00 in Shanghai: a real date-time, shown with its offset
    assert row["due_by"].value == datetime(2022, 4, 4, 20, 0) and row["due_by"].number_format == 'yyyy-mm-dd hh:mm"+08:00"'
    assert row["day"].value == datetime(2022, 4, 4) and row["day"].number_format == "yyyy-mm-dd"
    assert row["silent"].value is True and row["tat (h)"].value == 1.5
    second = [c.value for c in sheet[3]]
    assert second == ["徐汇区", 0, None, None, datetime(2022, 4, 5), False, None]  # 0 stays 0, null is empty
    assert sheet.column_dimensions["A"].width >= 9 and sheet.column_dimensions["B"].width >= 10
    empty = book["empty"]
    assert [c.value for c in empty[1]][:2] == ["district", "registered"] and empty.max_row == 1


def test_a_formula_is_never_a_formula(tmp_path):
    """Every payload a register can carry in a grid or community name is text: shown as it is,
    quote-prefixed so that editing the cell keeps it text; ordinary text has no prefix."""
    texts = [*PAYLOADS, *(start + "1+1" for start in RUNS), "@G2", "G1", "黄浦区", "a=b"]
    write(tmp_path / "r.xlsx", {"s": pl.DataFrame({"grid": texts})})
    sheet = openpyxl.load_workbook(tmp_path / "r.xlsx")["s"]
    cells = [row[0] for row in sheet.iter_rows(min_row=2)]
    # a CR is stored as the OOXML escape _x000D_, which Excel reads back as CR (openpyxl does not)
    assert [unescape(c.value) for c in cells] == texts
    assert all(c.data_type == "s" for c in cells)
    assert [c.quotePrefix for c in cells] == [t[0] in "=+-@\t\r\n＝＋－＠" for t in texts]
    with zipfile.ZipFile(tmp_path / "r.xlsx") as z:
        assert "<f>" not in z.read("xl/worksheets/sheet1.xml").decode()


def test_each_time_shows_its_own_offset(tmp_path):
    """A city with summer time: each cell in the offset of its own date."""
    times = pl.DataFrame({"at": [datetime(2022, 1, 10, 11, tzinfo=UTC), datetime(2022, 7, 10, 11, tzinfo=UTC)]})
    write(tmp_path / "r.xlsx", {"s": times}, timezone="Europe/Berlin")
    cells = [row[0] for row in openpyxl.load_workbook(tmp_path / "r.xlsx")["s"].iter_rows(min_row=2)]
    assert [(c.value, c.number_format) for c in cells] == [
        (datetime(2022, 1, 10, 12), 'yyyy-mm-dd hh:mm"+01:00"'), (datetime(2022, 7, 10, 13), 'yyyy-mm-dd hh:mm"+02:00"')]


def test_the_same_bytes_twice_stamped_with_as_of(tmp_path):
    write(tmp_path / "a.xlsx")
    write(tmp_path / "b.xlsx")
    assert (tmp_path / "a.xlsx").read_bytes() == (tmp_path / "b.xlsx").read_bytes()
    book = openpyxl.load_workbook(tmp_path / "a.xlsx")
    assert book.properties.created == AS_OF.astimezone(UTC).replace(tzinfo=None)  # not the wall clock
    write(tmp_path / "c.xlsx", as_of=AS_OF + timedelta(days=1))
    assert (tmp_path / "c.xlsx").read_bytes() != (tmp_path / "a.xlsx").read_bytes()


@pytest.mark.parametrize("column", sorted(PERSONAL_COLUMNS))
def test_a_personal_column_is_refused(tmp_path, column):
    with pytest.raises(ValueError, match="aggregate only"):
        write(tmp_path / "r.xlsx", {"s": pl.DataFrame({"grid": ["G1"], column: ["x"]})})


def test_bad_sheets_and_naive_times_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sheet name"):
        write(tmp_path / "r.xlsx", {"a/b": pl.DataFrame({"x": [1]})})
    with pytest.raises(ValueError, match="twice"):
        write(tmp_path / "r.xlsx", {"a": pl.DataFrame({"x": [1]}), "A": pl.DataFrame({"x": [1]})})
    with pytest.raises(ValueError, match="without a zone"):
        write(tmp_path / "r.xlsx", {"a": pl.DataFrame({"at": [datetime(2022, 4, 4, 12)]})})


def test_the_reports_workbook(called, tmp_path):
    ingest(resamples(tmp_path / "morning"), called)
    figures = report(called, tmp_path / "a")
    report(called, tmp_path / "b")
    path = tmp_path / "a" / "report.xlsx"
    assert path.read_bytes() == (tmp_path / "b" / "report.xlsx").read_bytes()
    assert "report.xlsx" in figures.files
    # the daily report: 04-04 and 04-05 for 黄浦区 and L1; the lab load: L1 on both days
    assert figures.sheets == {"daily report": 4, "coverage by district": 2, "worst grids": 1, "coverage by grid": 1,
                              "lab load": 2, "stock": 0, "pool-size advice": 1}  # no stock counted in this round
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == list(figures.sheets)
    sheets = {s.title: [[c.value for c in row] for row in s.iter_rows()] for s in book.worksheets}
    # P16 was never sampled: 15 of 16 in G1
    assert sheets["coverage by district"] == [
        ["round_id", "level", "district", "registered", "sampled", "resulted", "untested", "coverage", "outside_register"],
        ["R1", "district", "黄浦区", 16, 15, 13, 1, 0.9375, 0], ["R1", "city", None, 16, 15, 13, 1, 0.9375, 0]]
    grid_row = ["R1", "黄浦区", "外滩街道", "中山居委", "G1", 16, 15, 13, 1, 0.9375]
    assert sheets["coverage by grid"][1] == grid_row and sheets["worst grids"][1] == grid_row
    assert book["coverage by grid"]["J2"].number_format == "0.00%"
    for title, rows in sheets.items():  # aggregates only: no person's column, no person's value
        assert not {"id_type", "id_number", "name", "phone", "address"} & set(rows[0]), title
        cells = {str(v) for row in rows for v in row}
        assert not cells & {"张三", "13800138000", "+8613800138000", "1 Road"}, title
        assert not any(v.startswith("3101011990") for v in cells), title


def test_a_grid_named_like_a_formula_is_text_in_the_workbook(report_out):
    """The register's payloads through the real ingest and report: the grid ``@G2`` is a
    quote-prefixed text cell, and the names and addresses (payloads too) are nowhere."""
    book = openpyxl.load_workbook(report_out / "report.xlsx")
    for title in ("coverage by grid", "worst grids"):
        cells = [c for row in book[title].iter_rows(min_row=2) for c in row]
        grid = next(c for c in cells if c.value == "@G2")
        assert grid.data_type == "s" and grid.data_type != "f" and grid.quotePrefix
        assert not any(c.data_type == "f" for c in cells)
    everything = {c.value for s in book.worksheets for row in s.iter_rows() for c in row}
    assert not everything & set(PAYLOADS)
