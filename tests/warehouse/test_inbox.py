"""Reading inbox files: formats by content, lines, rejects and whole-file refusals."""

import polars as pl
import pytest

from tests.conftest import write
from kernel.tables import RefusedFile, read_table
from ingest.discover import discover


def test_csv_bom_case_insensitive_columns_and_lines(tmp_path):
    path = write(tmp_path / "a.csv", b"\xef\xbb\xbfGRID,Zone\nG1,sealed\n\nG2,controlled,extra\nG3,\"pre\ncaution\"\nG4,precaution\n")
    raw = read_table(path, ["grid", "zone"])
    assert raw.frame.columns == ["grid", "zone", "_line"]
    assert raw.frame["grid"].to_list() == ["G1", "G3", "G4"]
    assert raw.frame["_line"].to_list() == [2, 5, 7]  # blank line 3 and the two-line value are counted
    assert raw.rejects["_line"].to_list() == [4]
    assert raw.rejects["reason"].to_list() == ["unreadable row: too many columns"]
    assert raw.rows_read == 4


def test_csv_missing_fields_and_bad_encoding_are_rejects(tmp_path):
    path = write(tmp_path / "a.csv", b"grid,zone\nG1\nG2,\xff\xfe\nG3,sealed\n")
    raw = read_table(path, ["grid"])
    assert raw.frame["_line"].to_list() == [4]
    assert dict(zip(raw.rejects["_line"], raw.rejects["reason"])) == {
        2: "unreadable row: missing columns",
        3: "unreadable row: invalid encoding",
    }


def test_jsonl_and_parquet_are_read_by_content(tmp_path):
    jsonl = write(tmp_path / "x.csv", '{"grid": "G1", "zone": "sealed", "n": 3}\nnot json\n{"grid": "G2", "zone": null}\n')
    raw = read_table(jsonl, ["grid", "zone"])
    assert raw.file_format == "jsonl"
    assert raw.frame.select("grid", "zone", "n", "_line").rows() == [("G1", "sealed", "3", 1), ("G2", None, None, 3)]
    assert raw.rejects["_line"].to_list() == [2]

    parquet = tmp_path / "y.data"
    pl.DataFrame({"Grid": ["G1"], "zone": ["sealed"], "flag": [True]}).write_parquet(parquet)
    raw = read_table(parquet, ["grid"])
    assert raw.file_format == "parquet"
    assert raw.frame.rows() == [("G1", "sealed", "true", 1)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"grid,since\nG1,2022\n", "missing required column(s) zone"),
        (b"grid,Grid,zone\nG1,G1,sealed\n", "column named twice"),
        (b"PAR1 this is no parquet", "not readable as Parquet"),
        (b'{"a": 1', "no JSON object lines"),
    ],
)
def test_refusals_name_the_file_and_the_reason(tmp_path, content, message):
    path = write(tmp_path / "zones" / "bad.csv", content)
    with pytest.raises(RefusedFile) as refused:
        read_table(path, ["grid", "zone"], label="zones/bad.csv")
    assert str(refused.value).startswith("zones/bad.csv: ")
    assert message in str(refused.value)


def test_discover_in_dependency_order(tmp_path):
    for name in ["register/b.csv", "register/a.csv", "sites/s.csv", "scans/x/1.csv", "zones/z.csv", "labs/.hidden"]:
        write(tmp_path / name, "x\n")
    assert [f.label for f in discover(tmp_path)] == [  # a hidden file is listed (reported, never taken)
        "sites/s.csv", "labs/.hidden", "zones/z.csv", "register/a.csv", "register/b.csv", "scans/x/1.csv"]


def test_read_table_keeps_one_reader_a_thread_and_staging_root(tmp_path):
    """Issue 15: a generic results file is read by the thread's reader (a connect cost more than
    the file), kept between files; under another staging root a new one, the old one closed and
    its folder removed."""
    from kernel import tables

    path = write(tmp_path / "a.csv", b"grid,zone\nG1,sealed\n")
    with tables.staging_in(tmp_path / "r1"):
        assert read_table(path, ["grid"]).frame["grid"].to_list() == ["G1"]
        first = tables._reader()
        assert read_table(path, ["grid"]).rows_read == 1 and tables._reader() is first
        assert first.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]  # dropped
        assert len([p for p in (tmp_path / "r1").iterdir() if p.is_dir()]) == 1
    with tables.staging_in(tmp_path / "r2"):
        assert read_table(path, ["grid"]).rows_read == 1
        assert tables._reader() is not first
        assert [p for p in (tmp_path / "r1").iterdir() if p.is_dir()] == []
        assert len([p for p in (tmp_path / "r2").iterdir() if p.is_dir()]) == 1
