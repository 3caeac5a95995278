"""Instrument exports: golden tests on the real files, refusals of damaged copies, hand-made
cases for what the real files do not show, the generic CSV.

Goldens: every file in ../shared/fixtures/instruments/ (but LICENSE* and SOURCES.md) is a real
export and has its expected long table beside the tests, tests/lab/golden/<export name>.expected.csv,
with every column of the parsed records (well, sample, target, ct, line, run_id, plate_id, lab_id,
finished_at; an empty field is null, ``""`` an empty text, times in UTC). An export without one
fails; write it with ``python -m tests.lab.test_instruments <export>`` and check it against the raw
file by hand before committing it. The well / sample / target / ct columns were produced by the
parser once, then checked by hand against the raw files, and cross-checked with an independent
awk / regex extraction of the raw files (all rows equal); line, run_id and finished_at were
checked by hand against the raw files (issue 16: QuantStudio lines 379 A1, 401 B11, 415 D1, 473
H12 and Experiment Name / Run End Time (EDT + 4 h); CFX lines 2 A01 FAM … 49 D06 VIC, nothing
else in the file; RDML the react's ordinal, the run id and its zone-less runDate as city time
(Asia/Shanghai), whole seconds: StepOne ``2006-11-10T09:24:39.265`` → 01:24:39 UTC, LightCycler
``2014-08-19T11:30:20`` → 03:30:20 UTC):
- quantstudio7flex_standard_curve: [Results] at line 377, header line 378, 95 data rows (H11 has
  no row at all) → 95 golden rows. A1 5K RNase P 27.102 (line 379), B1 27.102, D5 29.331,
  H12 10K 26.217. D1–D4 have an empty Sample Name (NTC) and `Undetermined` → empty sample, empty
  ct. Ct column is `CT` (9th); `Ct Mean`, `Quantity` (with thousands commas) are not read.
  Experiment Barcode `NA` → plate_id null; run end `2010-10-21 00:51:26 AM EDT` → 04:51:26 UTC.
- quantstudio_crlf_cyrillic: CRLF everywhere; 9 [Results] rows in 29 columns with `CT` as the 15th
  (D1 Lung TGF-B 30.155 … H11 Liver GAPDH 33.074); the footer after the blank line (Analysis Type
  = …) is metadata, not rows. NB: in this real file the Cyrillic т is in the header metadata
  (`* Experiment Type = Comparative Cт (ΔΔCт)`), not in the Ct column header, which is plain
  `CT`; a `Cт` column header is covered by a hand-made case below. Blank Experiment Barcode → null.
- cfx_maestro_cq_results: 48 rows, all with a Cq (no `NaN` Cq in this file: covered by hand-made
  cases); A01 → A1, D05 VIC 21.0023336280707; Target is empty on every row, so the dye
  (FAM / VIC) is the target; sample `M3905 R Ctx` etc. as written.
- lightcycler96_4plex (RDML 1.1, LightCycler 96): one run, pcrFormat 8 × 12 (ABC/123), 96
  reactions with numeric ids 1…96, 4 dyes each → 384 rows; react 1 → A1 (FAM 33.56, Cy5 45.12),
  react 13 → B1 (FAM 33.12, Hex 28.67, Texas Red 22.57, Cy5 40.69), 96 → H12. Every data element
  has a cq, kept as written even when odd: 58 are exactly 100.0, some exceed the 50 cycles run
  (68.85, 72.55), some are implausibly early (G10 Cy5 1.56); judging them is the calling rules'
  job. Sample ids are GUIDs (names like `Sample 39` are only in <description>; 81 of 96 reactions
  use the one `ntp` sample); targets are ids like `FAM@30116ec1-…`: all kept verbatim.
- stepone_std (RDML 1.0, StepOne): pcrFormat is the text `free format`, reaction ids are wells
  A1…C8 → 24 rows; NTC A1–A3 have cq 40.0 as the instrument wrote it (kept: calling treats
  Ct ≥ 40 as not detected); A4 pop1 28.96287, C8 STD 625 31.035166.
"""

from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from lab.instruments import UnrecognisedExport, detect_format, parse_export, write_long_table
from tests.conftest import write

GOLDEN = Path(__file__).parent / "golden"
INSTRUMENTS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "instruments"
#: the exports these tests name one by one (damaged copies, metadata): they must be there
NAMED = ["quantstudio7flex_standard_curve.txt", "quantstudio_crlf_cyrillic.txt", "cfx_maestro_cq_results.csv",
         "lightcycler96_4plex.rdml", "stepone_std.rdml"]
#: the long table's four columns (``write_long_table``)
GOLDEN_SCHEMA = {"well": pl.Utf8, "sample": pl.Utf8, "target": pl.Utf8, "ct": pl.Float64}
#: every column of the parsed records, as the expected files hold them
EXPECTED_SCHEMA = {**GOLDEN_SCHEMA, "line": pl.Int64, "run_id": pl.Utf8, "plate_id": pl.Utf8, "lab_id": pl.Utf8,
                   "finished_at": pl.Datetime("us", "UTC")}


def real_exports(folder: Path = INSTRUMENTS) -> list[str]:
    """Every real export in the folder: all its files but the licences and SOURCES.md."""
    if not folder.is_dir():
        return []
    return sorted(f.name for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith("LICENSE") and f.name != "SOURCES.md")


def expected_path(export: str) -> Path:
    return GOLDEN / f"{export}.expected.csv"


def write_expected(export: Path, out: Path) -> None:
    """An export's parsed records as its expected file (to be checked by hand against the raw file)."""
    parse_export(export).records.write_csv(out, datetime_format="%Y-%m-%dT%H:%M:%S%.fZ")


def read_expected(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, schema=EXPECTED_SCHEMA)


@pytest.fixture(scope="session")
def instruments() -> Path:
    """The real exports, in shared/ beside the repository; missing is a failure, not a skip."""
    missing = [f for f in NAMED if not (INSTRUMENTS / f).is_file()]
    if missing:
        pytest.fail(f"{INSTRUMENTS}: missing {', '.join(missing)} (check out the repository with shared/ beside it)")
    return INSTRUMENTS


def rows(parsed, *columns: str) -> list[tuple]:
    return parsed.records.select(columns or ("well", "sample", "target", "ct")).rows()


# --- the real exports ------------------------------------------------------------------------

@pytest.mark.parametrize("name", real_exports() or ["(no real exports found)"])
def test_every_real_export_parses_to_its_expected_table(instruments, name):
    """Found, not listed: a new file in shared/fixtures/instruments/ is tested, and fails until its
    expected table stands beside the tests. Every row, every column, the dtypes too."""
    assert (instruments / name).is_file(), f"{instruments}: no real export at all"
    expected = expected_path(name)
    if not expected.is_file():
        pytest.fail(f"{name}: no expected output {expected.relative_to(GOLDEN.parents[2])}; write it with "
                    f"`python -m tests.lab.test_instruments {name}` and check it against the raw file by hand")
    parsed = parse_export(instruments / name)
    assert_frame_equal(parsed.records, read_expected(expected), check_exact=True)
    assert parsed.rejects.height == 0


def test_every_expected_table_has_its_real_export(instruments):
    """No expected file outlives its export (renamed or removed in shared/)."""
    exports = set(real_exports(instruments))
    orphans = sorted(p.name for p in GOLDEN.glob("*.expected.csv") if p.name.removesuffix(".expected.csv") not in exports)
    assert orphans == [], f"expected outputs without a real export in {instruments}: {orphans}"
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(p.name for p in GOLDEN.glob("*.expected.csv"))


def test_a_missing_expected_file_fails_naming_it(tmp_path):
    """The discovery itself: a folder with a new export and no expected file yields that export, and
    the golden test fails on it (run in-process on a copied folder)."""
    write(tmp_path / "LICENSE.x.txt", "MIT")
    write(tmp_path / "SOURCES.md", "# sources")
    write(tmp_path / "new_instrument.csv", "well,ct\n")
    assert real_exports(tmp_path) == ["new_instrument.csv"]
    with pytest.raises(pytest.fail.Exception, match=r"new_instrument\.csv: no expected output tests/lab/golden/"
                                                     r"new_instrument\.csv\.expected\.csv"):
        test_every_real_export_parses_to_its_expected_table(tmp_path, "new_instrument.csv")


def test_quantstudio_metadata_lines_and_run_end_time(instruments):
    parsed = parse_export(instruments / "quantstudio7flex_standard_curve.txt")
    assert parsed.format == "quantstudio"
    first = parsed.records.row(0, named=True)
    assert (first["well"], first["line"], first["run_id"], first["plate_id"], first["lab_id"]) == (
        "A1", 379, "QuantStudio 96-Well Standard Curve Example", None, None)  # barcode "NA"
    assert first["finished_at"] == datetime(2010, 10, 21, 4, 51, 26, tzinfo=timezone.utc)  # 00:51:26 AM EDT
    assert parsed.meta["Instrument Serial Number"] == "278880031"
    assert "User Name" not in parsed.meta and "Experiment File Name" not in parsed.meta

    crlf = parse_export(instruments / "quantstudio_crlf_cyrillic.txt")
    assert crlf.records["plate_id"].null_count() == crlf.records.height  # blank barcode
    assert crlf.records["line"].to_list()[0] == 67  # CRLF counted once per line
    assert crlf.meta["Experiment Type"] == "Comparative Cт (ΔΔCт)"  # UTF-8 text read as such
    assert crlf.meta["Analysis Type"] == "Singleplex"  # footer after the table


def test_rdml_numeric_reaction_ids_become_wells_and_keep_the_run(instruments):
    parsed = parse_export(instruments / "lightcycler96_4plex.rdml")
    b1 = parsed.records.filter(pl.col("line") == 13)
    assert b1["well"].unique().to_list() == ["B1"]
    assert b1["ct"].to_list() == [33.12, 28.67, 22.57, 40.69]
    assert parsed.records["run_id"].unique().to_list() == ["65aeb1ec-b377-4ef6-b03f-92898d47488b"]
    assert parsed.records["well"].n_unique() == 96 and parsed.meta["rdml_version"] == "1.1"
    assert parse_export(instruments / "stepone_std.rdml").meta["rdml_version"] == "1.0"


# --- damaged copies ----------------------------------------------------------------------------

def _flip(data: bytes) -> bytes:
    """64 bytes inverted a quarter into the file: inside rdml_data.xml's compressed data in both
    fixtures (the lightcycler zip holds other members after it, which the parser does not read)."""
    at = len(data) // 4
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + 64]) + data[at + 64:]


def corruptions(instruments: Path, name: str, tmp: Path) -> list[Path]:
    data = (instruments / name).read_bytes()
    out = [write(tmp / "random_bytes.bin", bytes(range(256)) * 8), write(tmp / "empty.txt", b"")]
    if name.endswith(".rdml"):
        with zipfile.ZipFile(instruments / name) as archive:
            xml = archive.read("rdml_data.xml")
        other = io.BytesIO()
        with zipfile.ZipFile(other, "w") as archive:
            archive.writestr("readme.txt", "nothing here")
        out += [write(tmp / "truncated_zip.rdml", data[: len(data) // 3]),
                write(tmp / "corrupted_zip.rdml", _flip(data)),
                write(tmp / "truncated_xml.rdml", xml[: len(xml) // 2]),
                write(tmp / "garbled_root.rdml", xml.replace(b"<rdml ", b"<rdmX ", 1).replace(b"</rdml>", b"</rdmX>")),
                write(tmp / "zip_without_rdml.rdml", other.getvalue()),
                write(tmp / "other_xml.rdml", b"<?xml version='1.0'?><plate><well id='A1'/></plate>")]
    elif name.startswith("quantstudio"):
        text = data.decode("utf-8")
        head, _, table = text.partition("[Results]")
        out += [write(tmp / "truncated.txt", data[: data.index(b"[Results]")]),
                write(tmp / "no_results.txt", text.replace("[Results]", "[Nothing]")),
                write(tmp / "garbled_header.txt", head + "[Results]" + table.replace("\tCT\t", "\tXX\t", 1))]
    else:
        out += [write(tmp / "truncated.csv", data[:18]),
                write(tmp / "garbled_header.csv", data.replace(b",Cq,", b",Cz,", 1)),
                write(tmp / "no_header.csv", data.split(b"\n", 1)[1])]
    return out


@pytest.mark.parametrize("name", NAMED)
def test_a_damaged_copy_is_refused_naming_the_file(instruments, name, tmp_path):
    for damaged in corruptions(instruments, name, tmp_path):
        with pytest.raises(UnrecognisedExport) as refused:
            parse_export(damaged)
        assert damaged.name in str(refused.value), str(refused.value)


def test_refusals_say_why(instruments, tmp_path):
    qs = (instruments / "quantstudio7flex_standard_curve.txt").read_text()
    cases = {
        "a.txt": (qs.replace("[Results]", "[Nothing]"), "no [Results] section"),
        "b.txt": (qs.replace("\tCT\t", "\tXX\t"), "no CT / Ct / Cт / Cq column"),
        "c.bin": (b"\x00\x01garbage", "not a zip and not a text export"),
        "d.csv": ("just,some,words\n1,2,3\n", "not a zip and not RDML XML"),
        "e.xml": ("<?xml version='1.0'?><plate/>", "XML but not RDML"),
        "f.csv": ((instruments / "cfx_maestro_cq_results.csv").read_text().replace(",Cq,", ",Cz,", 1), "without the column(s) Cq"),
    }
    for file, (content, why) in cases.items():
        with pytest.raises(UnrecognisedExport, match=rf"^{file}: .*{re.escape(why)}"):
            parse_export(write(tmp_path / file, content))


def test_a_cut_row_is_a_reject_not_a_negative(instruments, tmp_path):
    """A row cut short inside the table is a reject; a file that ends mid-table is refused whole
    (tests/lab/test_bad_exports.py)."""
    lines = (instruments / "quantstudio7flex_standard_curve.txt").read_text().split("\n")
    at = next(i for i, line in enumerate(lines) if "\tD5\tfalse\t" in line)
    lines[at] = lines[at][: lines[at].index("\t29.331\t")]  # D5, cut just before its CT
    parsed = parse_export(write(tmp_path / "cut.txt", "\n".join(lines)))
    assert parsed.records.height == 94 and "D5" not in parsed.records["well"].to_list()
    assert parsed.rejects.select("line", "reason").rows() == [(at + 1, "row ends before its last needed column")]

    cfx = (instruments / "cfx_maestro_cq_results.csv").read_text().split("\n")
    at = next(i for i, line in enumerate(cfx) if ",D05,VIC," in line)
    cfx[at] = cfx[at][: cfx[at].index(",D05,VIC,") + 12]
    parsed = parse_export(write(tmp_path / "cut.csv", "\n".join(cfx)))
    assert parsed.records.height == 47 and parsed.rejects["line"].to_list() == [at + 1]


# --- detection by content ------------------------------------------------------------------------

def test_detection_is_by_content_not_name(instruments, tmp_path):
    renamed = write(tmp_path / "plate.csv", (instruments / "quantstudio7flex_standard_curve.txt").read_bytes())
    assert parse_export(renamed).format == "quantstudio"
    assert parse_export(write(tmp_path / "plate.txt", (instruments / "cfx_maestro_cq_results.csv").read_bytes())
                        ).format == "cfx_maestro"
    assert parse_export(write(tmp_path / "plate.csv.bak", (instruments / "stepone_std.rdml").read_bytes())).format == "rdml"
    assert detect_format((instruments / "lightcycler96_4plex.rdml").read_bytes()) == "rdml"
    assert detect_format(b"\xef\xbb\xbfWell,Sample,Target,CT,lab_id,run_id,plate_id\n") == "generic_csv"
    with pytest.raises(UnrecognisedExport, match="^mystery.bin: "):
        detect_format(bytes(range(256)), "mystery.bin")


def test_rdml_as_plain_xml_reads_like_the_zip(instruments, tmp_path):
    with zipfile.ZipFile(instruments / "lightcycler96_4plex.rdml") as archive:
        xml = archive.read("rdml_data.xml")
    plain = parse_export(write(tmp_path / "lc96.xml", xml))
    assert_frame_equal(plain.records, parse_export(instruments / "lightcycler96_4plex.rdml").records)


# --- hand-made QuantStudio ----------------------------------------------------------------------------

QS_HEAD = ("* Block Type = {block}\r\n* Experiment Barcode = PLATE-7\r\n* Experiment Name = RUN-7\r\n"
           "* Experiment Run End Time = {end}\r\n* User Name = 张三\r\n\r\n[Sample Setup]\r\nWell\tSample Name\r\n1\tx\r\n\r\n"
           "[Results]\r\n")


def qs(tmp_path: Path, header: str, body: list[str], block: str = "96-Well Block (0.2mL)",
       end: str = "2022-04-04 09:15:00 PM CST", encoding: str = "utf-8") -> Path:
    text = QS_HEAD.format(block=block, end=end) + header + "\r\n" + "\r\n".join(body) + "\r\n"
    return write(tmp_path / "qs.txt", text.encode(encoding))


def test_quantstudio_cyrillic_ct_header_any_order_and_well_numbers(tmp_path):
    parsed = parse_export(qs(tmp_path, "Cт\tTarget Name\tSample Name\tWell", [
        "31.5\tORF1ab\tT0001\t1", "Undetermined\tN\tT0001\t1", "27,25\tIC\t样本-2\t13", "\t\t\t14", "33.1\tN\t\t96"]))
    assert rows(parsed) == [("A1", "T0001", "ORF1ab", 31.5), ("A1", "T0001", "N", None), ("B1", "样本-2", "IC", 27.25),
                            ("H12", "", "N", 33.1)]  # well 14 has no target: dropped
    assert rows(parsed, "line", "run_id", "plate_id") == [
        (13, "RUN-7", "PLATE-7"), (14, "RUN-7", "PLATE-7"), (15, "RUN-7", "PLATE-7"), (17, "RUN-7", "PLATE-7")]
    assert parsed.records["finished_at"][0] == datetime(2022, 4, 4, 13, 15, tzinfo=timezone.utc)  # CST = +08:00
    assert "User Name" not in parsed.meta


def test_quantstudio_384_wells_cq_header_gb18030_omit_and_bad_ct(tmp_path):
    parsed = parse_export(qs(tmp_path, "Well\tOmit\tSample Name\tTarget Name\tCq", [
        "25\tfalse\t样本\tN\t30.0", "384\tfalse\tS2\tN\tUndetermined", "26\ttrue\tS3\tN\t30.0", "27\tfalse\tS4\tN\t-5",
        "999\tfalse\tS5\tN\t31.0"], block="384-Well Block", encoding="gb18030"))
    assert rows(parsed) == [("B1", "样本", "N", 30.0), ("P24", "S2", "N", None)]
    assert parsed.rejects.select("line", "column", "reason").rows() == [
        (15, "Omit", "well omitted in the instrument software"), (16, "Cq", "Ct not a number"), (17, "Well", "not a well")]


@pytest.mark.parametrize(("end", "utc"), [
    ("2010-10-21 00:51:26 AM EDT", datetime(2010, 10, 21, 4, 51, 26)),
    ("2010-10-21 12:51:26 PM EST", datetime(2010, 10, 21, 17, 51, 26)),
    ("2010-10-21 12:05:00 AM UTC", datetime(2010, 10, 21, 0, 5)),
    ("2022-04-04 08:00:00", datetime(2022, 4, 4, 0, 0)),  # no zone: the city's (Asia/Shanghai)
    ("2022-04-04 09:15:00 +0800", datetime(2022, 4, 4, 1, 15)),
    ("2022-04-04 09:15:00 Asia/Tokyo", datetime(2022, 4, 4, 0, 15)),
    ("2022-04-04 09:15:00 AM JST", datetime(2022, 4, 4, 0, 15)),
    ("Not Started", None),  # no run time at all: the export's write time stands in (ingest.take)
])
def test_quantstudio_run_end_zones(tmp_path, end, utc):
    parsed = parse_export(qs(tmp_path, "Well Position\tSample Name\tTarget Name\tCT", ["A1\tS\tN\t30"], end=end))
    assert parsed.records["finished_at"][0] == (utc.replace(tzinfo=timezone.utc) if utc else None)


# --- hand-made CFX --------------------------------------------------------------------------------------

def test_cfx_nan_is_not_detected_and_target_falls_back_to_the_dye(tmp_path):
    head = ",Well,Fluor,Target,Content,Sample,Biological Set Name,Cq,Cq Mean\r\n"
    body = (",A01,FAM,ORF1ab,Unkn,T1,,NaN,NaN\r\n,A01,VIC,,Unkn,T1,,28.5,28.5\r\n,H12,Cy5,IC,Neg Ctrl,,,NaN,NaN\r\n"
            ",B02,FAM,N,Unkn,T2,,oops,oops\r\n,B03,,,Unkn,T3,,NaN,NaN\r\n")
    parsed = parse_export(write(tmp_path / "cfx.csv", head + body))
    assert rows(parsed) == [("A1", "T1", "ORF1ab", None), ("A1", "T1", "VIC", 28.5), ("H12", "", "IC", None)]
    assert parsed.rejects.select("line", "column", "reason").rows() == [(5, "Cq", "Ct not a number")]
    assert parsed.records["run_id"].null_count() == parsed.records["lab_id"].null_count() == 3


# --- hand-made RDML ----------------------------------------------------------------------------------------

def rdml_xml(version: str, runs: str, ns: str = 'xmlns="http://www.rdml.org"') -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<rdml {ns} version="{version}"><experiment id="E1">{runs}</experiment></rdml>'.encode()


def react(rid: str, sample: str, *data: tuple[str, str | None]) -> str:
    cells = "".join(f'<data><tar id="{t}"/>' + (f"<cq>{cq}</cq>" if cq is not None else "") +
                    "<adp><cyc>1</cyc><fluor>0.1</fluor></adp></data>" for t, cq in data)
    return f'<react id="{rid}"><sample id="{sample}"/>{cells}</react>'


def test_rdml_13_plate_formats_missing_cq_and_every_run(tmp_path):
    fmt384 = "<pcrFormat><rows>16</rows><columns>24</columns><rowLabel>ABC</rowLabel><columnLabel>123</columnLabel></pcrFormat>"
    runs = (f'<run id="R1">{fmt384}<runDate>2022-04-04T10:00:00+08:00</runDate>'
            + react("25", "T1", ("N", "31.2"), ("ORF1ab", None), ("IC", "-1")) + react("384", "T2", ("N", "NaN"))
            + react("385", "T3", ("N", "30")) + react("26", "T4", ("N", "abc")) + "</run>"
            + '<run id="R2">' + react("13", "PC", ("N", "25.5")) + react("B03", "NC", ("N", None)) + "</run>")
    for version, ns in (("1.3", 'xmlns="http://www.rdml.org"'), ("1.2", 'xmlns:r="http://www.rdml.org"')):
        xml = rdml_xml(version, runs, ns)
        if ns.startswith("xmlns:"):
            xml = xml.replace(b"<", b"<r:").replace(b"<r:/", b"</r:").replace(b"<r:?xml", b"<?xml")
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr("rdml_data.xml", xml)
        parsed = parse_export(write(tmp_path / f"v{version}.rdml", archive.getvalue()))
        assert rows(parsed, "well", "sample", "target", "ct", "line", "run_id") == [
            ("B1", "T1", "N", 31.2, 1, "R1"), ("B1", "T1", "ORF1ab", None, 1, "R1"), ("B1", "T1", "IC", None, 1, "R1"),
            ("P24", "T2", "N", None, 2, "R1"),
            ("B1", "PC", "N", 25.5, 5, "R2"),  # no pcrFormat: 8 x 12
            ("B3", "NC", "N", None, 6, "R2")], version
        assert parsed.rejects.select("line", "column", "reason").rows() == [
            (3, "react id", "reaction id not a well of the plate"), (4, "cq", "Ct not a number")]
        assert parsed.records["finished_at"][0] == datetime(2022, 4, 4, 2, tzinfo=timezone.utc)
        assert parsed.records["plate_id"].null_count() == parsed.records.height
        assert parsed.meta == {"rdml_version": version, "runs": "2"}


# --- the generic CSV -----------------------------------------------------------------------------------------

GENERIC_HEAD = "lab_id,run_id,plate_id,well,sample,target,ct,finished_at"


@pytest.mark.parametrize("spelling", ["", "Undetermined", "undetermined", "UNDETERMINED", "NaN", "nan", "NAN",
                                      "No Ct", "no ct", "NO CT", "  No Ct  "])
def test_generic_not_detected_spellings(tmp_path, spelling):
    path = write(tmp_path / "r.csv", f"{GENERIC_HEAD}\nL1,R1,P1,A01,T1,N,{spelling},\nL1,R1,P1,A02,T2,N,33.5,\n")
    parsed = parse_export(path)
    assert rows(parsed) == [("A1", "T1", "N", None), ("A2", "T2", "N", 33.5)] and parsed.rejects.height == 0


def test_generic_bad_values_are_rejects_with_their_lines(tmp_path):
    body = ["L1,R1,P1,A1,T1,N,31.5,2022-04-04T10:00:00", "L1,R1,P1,A2,T2,N,lots,", "L1,R1,P1,A3,T3,N,-1,",
            "L1,R1,P1,A4,T4,N,0,", 'L1,R1,P1,A5,T5,N,"31,5",', "L1,R1,P1,A6,T6,N,N/A,", "L1,R1,P1,Z99,T7,N,30,",
            "L1,R1,P1,A8,T8,N,30,yesterday", "L1,R1,P1,A9,,N,inf,", "L1,R1,P1,A10,,IC,27.0,2022-04-04T02:00:00Z"]
    parsed = parse_export(write(tmp_path / "r.csv", GENERIC_HEAD + "\n" + "\n".join(body) + "\n"))
    assert rows(parsed, "well", "sample", "ct", "line", "finished_at") == [
        ("A1", "T1", 31.5, 2, datetime(2022, 4, 4, 2, tzinfo=timezone.utc)),  # no offset: Asia/Shanghai
        ("A10", "", 27.0, 11, datetime(2022, 4, 4, 2, tzinfo=timezone.utc))]  # empty sample stays ""
    assert parsed.rejects.select("line", "column", "reason").rows() == [
        (3, "ct", "Ct not a number"), (4, "ct", "Ct not a number"), (5, "ct", "Ct not a number"),
        (6, "ct", "Ct not a number"), (7, "ct", "Ct not a number"), (8, "well", "not a well"),
        (9, "finished_at", "finished_at not an ISO 8601 time"), (10, "ct", "Ct not a number")]
    assert '"ct":"lots"' in parsed.rejects["raw"][0]


def test_generic_bom_column_order_case_and_extra_columns(tmp_path):
    path = write(tmp_path / "r.csv", "\ufeffCT,Well,Sample,Target,Lab_ID,RUN_ID,plate_id,Operator\r\n"
                                     "31.5,a01,T1,ORF1ab,L1,R1,P1,x\r\nNo Ct,P24,T2,N,L1,R1,P1,y\r\n")
    parsed = parse_export(path)
    assert parsed.format == "generic_csv"
    assert rows(parsed, "well", "sample", "target", "ct", "lab_id", "run_id", "plate_id", "line") == [
        ("A1", "T1", "ORF1ab", 31.5, "L1", "R1", "P1", 2), ("P24", "T2", "N", None, "L1", "R1", "P1", 3)]
    assert parsed.records["finished_at"].null_count() == 2  # optional column absent


@pytest.mark.parametrize("column", ["lab_id", "run_id", "plate_id", "well", "sample", "target", "ct"])
def test_generic_missing_required_column_is_refused_naming_it(tmp_path, column):
    names = [c for c in GENERIC_HEAD.split(",") if c != column]
    path = write(tmp_path / "m.csv", ",".join(names) + "\n" + ",".join("30" if c == "ct" else "A1" for c in names) + "\n")
    with pytest.raises(UnrecognisedExport, match=rf"^m\.csv: .*missing.*\b{column}\b"):
        parse_export(path)


def test_generic_as_parquet(tmp_path):
    path = tmp_path / "r.parquet"
    pl.DataFrame({"Well": ["A1", "B2"], "sample": ["T1", "T2"], "target": ["N", "N"], "ct": ["30.5", "Undetermined"],
                  "lab_id": ["L1"] * 2, "run_id": ["R1"] * 2, "plate_id": ["P1"] * 2}).write_parquet(path)
    parsed = parse_export(path)
    assert parsed.format == "generic_csv" and rows(parsed) == [("A1", "T1", "N", 30.5), ("B2", "T2", "N", None)]


# --- output ----------------------------------------------------------------------------------------------------

def test_long_table_parquet_has_exactly_the_four_columns(instruments, tmp_path):
    out = tmp_path / "long.parquet"
    write_long_table(parse_export(instruments / "stepone_std.rdml"), out)
    table = pl.read_parquet(out)
    assert dict(table.schema) == GOLDEN_SCHEMA and table.height == 24


def test_lab_parse_command_writes_the_long_table(instruments, tmp_path):
    from tubetrail.cli import app

    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(app, ["lab", "parse", str(instruments / "cfx_maestro_cq_results.csv"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out)
    assert table.columns == ["well", "sample", "target", "ct"] and table.height == 48
    bad = CliRunner().invoke(app, ["lab", "parse", str(write(tmp_path / "x.txt", "hello")), "-o", str(out)])
    assert bad.exit_code == 1 and "x.txt" in bad.output


def test_results_check_takes_lab_run_and_plate_from_the_path():
    from lab.results import check_results

    records = pl.DataFrame({"well": ["A1", "A2", "A3"], "sample": ["T1", "", "T3"], "target": ["N", "N", "N"],
                            "ct": [30.0, None, None], "_line": [2, 3, 4], "run_id": [None] * 3, "plate_id": [None] * 3,
                            "lab_id": [None] * 3, "finished_at": [None] * 3, "source_format": ["cfx_maestro"] * 3},
                           schema_overrides={"run_id": pl.Utf8, "plate_id": pl.Utf8, "lab_id": pl.Utf8,
                                             "finished_at": pl.Datetime("us", "UTC")})
    checked = check_results(records, "results/L07/PLATE-9.csv")
    assert checked.accepted.select("lab_id", "run_id", "plate_id", "sample").rows() == [
        ("L07", "PLATE-9", "PLATE-9", "T1"), ("L07", "PLATE-9", "PLATE-9", "T3")]
    assert checked.quarantined.rows() == [(3, "sample", "missing sample")]
    no_lab = check_results(records.head(1), "results/PLATE-9.csv")
    assert no_lab.quarantined["reason"].to_list() == ["no lab: neither in the file nor a results/<lab_id>/ folder"]


if __name__ == "__main__":  # python -m tests.lab.test_instruments <export>: write its expected table
    import sys

    for export in sys.argv[1:]:
        write_expected(INSTRUMENTS / export, expected_path(export))
        print(f"wrote {expected_path(export)}: check it against {INSTRUMENTS / export} by hand")
