"""Reading inbox files: formats by content, lines, rejects and whole-file refusals."""

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def _through_duckdb(path, required):
    """What :func:`read_table` gives through the thread's DuckDB reader, whatever the file."""
    from kernel import tables

    with tables.read_file(tables._reader(), path, required, plain=False) as read:
        return tables.RawTable(read.frame(), read.rejects, read.file_format)


_PLAIN = st.text(alphabet=st.sampled_from(list("aZ09 .-_/:+") + ["黄", "浦", "\t"]), max_size=6)
_ODD = st.text(alphabet=st.sampled_from(["a", ",", '"', "\r", "\n"]), min_size=1, max_size=3)
#: a field: plain or wholly quoted (quotes doubled inside, commas), and one in 40 odd (a stray
#: quote, comma, carriage return or line break: the file is then not plain)
_FIELD = st.integers(0, 39).flatmap(lambda n: _ODD if n == 0 else _PLAIN if n % 2 else st.text(
    alphabet=st.sampled_from(["a", " ", ",", '"', "黄"]), max_size=4).map(lambda t: '"' + t.replace('"', '""') + '"'))


@st.composite
def _csv(draw):
    """A header naming ``grid`` among others (any case, spaces around, now and then a name twice
    or empty) and rows mostly of its width."""
    names = draw(st.lists(st.sampled_from(["zone", "ct", "n", "well"]), unique=True, max_size=3))
    names = draw(st.permutations(["grid", *names]))
    names = [draw(st.sampled_from([n, n.upper(), f" {n}", f"{n} "])) for n in names]
    if draw(st.integers(0, 9)) == 0:
        names.append(draw(st.sampled_from(["", "GRID", "x"])))
    width = st.integers(len(names), len(names)) if draw(st.integers(0, 4)) else st.integers(0, len(names) + 1)
    rows = draw(st.lists(width.flatmap(lambda w: st.lists(_FIELD, min_size=w, max_size=w)), max_size=6))
    return names, rows


@given(csv=_csv(), bom=st.booleans(), last_break=st.booleans(), blank_line=st.integers(0, 4))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_plain_csv_read_by_polars_is_what_duckdb_reads(tmp_path_factory, csv, bom, last_break, blank_line):
    """Issue 15: :func:`kernel.tables.plain_csv_table` reads a CSV only when it is plain, and then
    gives the frame, lines, rejects and format that the DuckDB reader gives (random headers, rows
    of any width, quoted fields, stray quotes, commas, carriage returns and line breaks, blank
    lines, a BOM, a missing last line break)."""
    from kernel.tables import plain_csv_table

    header, rows = csv
    lines = [",".join(header), *(",".join(r) for r in rows)]
    if blank_line == 0 and rows:
        lines.insert(2, "")
    text = "\n".join(lines) + ("\n" if last_break else "")
    path = tmp_path_factory.mktemp("plain") / "t.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    required = ["grid"]
    plain = plain_csv_table(path, required)
    if plain is None:
        return
    slow = _through_duckdb(path, required)
    assert plain.file_format == slow.file_format == "csv"
    assert plain.frame.schema == slow.frame.schema
    assert plain.frame.rows() == slow.frame.rows()
    assert plain.rejects.height == slow.rejects.height == 0 and plain.rejects.schema == slow.rejects.schema


def test_an_inbox_csv_that_is_plain_is_taken_without_duckdb_and_gives_the_same_rows(tmp_path, monkeypatch):
    """Issue 15: ``read_file`` (every inbox table a feed takes) reads a plain CSV of at most
    ``PLAIN_CSV_MAX_BYTES`` by polars, with no table on the session's connection (a closed one
    is never touched), in chunks of ``CHUNK_ROWS`` with the lines DuckDB's reader gives; a file
    that is not plain, or larger, goes through DuckDB (and the closed connection fails it)."""
    import duckdb

    from kernel import tables

    closed = duckdb.connect()
    closed.close()
    monkeypatch.setattr(tables, "CHUNK_ROWS", 2)
    boxes = write(tmp_path / "m.csv", "BOX_ID, tube_barcode\nB1,T1\nB1,\"T2\"\nB2,\"\"\n")
    with tables.read_file(closed, boxes, ["box_id"]) as read:
        chunks = [c.rows() for c in read.chunks()]
        assert (read.file_format, read.rows_read, read.columns, read.rejects.height) == ("csv", 3, ["box_id", "tube_barcode"], 0)
    assert chunks == [[("B1", "T1", 2), ("B1", "T2", 3)], [("B2", None, 4)]]
    assert [r for c in chunks for r in c] == _through_duckdb(boxes, ["box_id"]).frame.rows()
    with tables.read_file(closed, write(tmp_path / "h.csv", "box_id,tube_barcode\n"), ["box_id"]) as read:
        assert read.rows_read == 0 and read.frame().rows() == []
    not_plain = write(tmp_path / "q.csv", "box_id,tube_barcode\nB1,T\"1\n")
    with pytest.raises(duckdb.ConnectionException):
        with tables.read_file(closed, not_plain, ["box_id"]):
            pass
    monkeypatch.setattr(tables, "PLAIN_CSV_MAX_BYTES", boxes.stat().st_size - 1)
    with pytest.raises(duckdb.ConnectionException):
        with tables.read_file(closed, boxes, ["box_id"]):
            pass
    monkeypatch.undo()
    with pytest.raises(RefusedFile, match="missing required column"):  # refused as before: through DuckDB
        with tables.read_file(tables._reader(), boxes, ["box_id", "lab_id"]):
            pass


def test_a_generic_results_file_is_plain_and_read_by_polars(tmp_path):
    """The usual results file (a quoted empty Ct as the simulator writes it) is read the fast way,
    with its lines; one with a stray quote is not."""
    from kernel.tables import plain_csv_table

    path = write(tmp_path / "r.csv", "lab_id,run_id,plate_id,well,sample,target,ct\nL1,R1,P1,A1,T1,N,31.5\nL1,R1,P1,A1,T1,ORF1ab,\"\"\n")
    plain = plain_csv_table(path, ["lab_id", "ct"])
    assert plain is not None and plain.frame.rows() == _through_duckdb(path, ["lab_id", "ct"]).frame.rows() == [
        ("L1", "R1", "P1", "A1", "T1", "N", "31.5", 2), ("L1", "R1", "P1", "A1", "T1", "ORF1ab", None, 3)]
    stray = write(tmp_path / "q.csv", 'lab_id,ct\nL1,3"1.5\nL2,30\n')
    assert plain_csv_table(stray, ["lab_id", "ct"]) is None
    assert read_table(stray, ["lab_id", "ct"]).frame.rows() == _through_duckdb(stray, ["lab_id", "ct"]).frame.rows()
