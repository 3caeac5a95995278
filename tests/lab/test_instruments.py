"""Instrument exports: golden tests on the real files, refusals of damaged copies, the generic CSV.

Goldens (tests/lab/golden/<fixture>.csv) were produced by the parser once and checked by hand
against the raw files:
- quantstudio7flex_standard_curve: 95 rows (96 wells, one without a result row); A1 5K RNase P
  27.102 as in the [Results] line 378; D1–D4 (no sample name, NTC) `Undetermined` → empty ct.
- quantstudio_crlf_cyrillic: CRLF lines, the 9 rows of [Results] (D1 Lung TGF-B 30.155 …
  H11 Liver GAPDH 33.074); the footer lines after the blank line (Analysis Type = …) are not rows.
- cfx_maestro_cq_results: 48 rows, wells A01 → A1, D05 → D5 (VIC, 21.0023336280707); the
  empty Target column falls back to the dye (FAM / VIC).
- lightcycler96_4plex (RDML 1.1, numeric reaction ids): 96 reactions × 4 dyes = 384 rows; react
  13 → B1 on a 12-column plate with FAM 33.12, Hex 28.67, Texas Red 22.57, Cy5 40.69.
- stepone_std (RDML 1.0, well ids A1…): 24 rows; NTC A1 has cq 40.0 as the instrument wrote it.
"""

import zipfile
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from lab.instruments import UnrecognisedExport, detect_format, parse_export
from tests.conftest import write

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = ["quantstudio7flex_standard_curve.txt", "quantstudio_crlf_cyrillic.txt", "cfx_maestro_cq_results.csv",
            "lightcycler96_4plex.rdml", "stepone_std.rdml"]


@pytest.fixture(scope="module")
def instruments(shared_dir) -> Path:
    folder = shared_dir / "fixtures" / "instruments"
    assert all((folder / f).exists() for f in FIXTURES), folder
    return folder


@pytest.mark.parametrize("name", FIXTURES)
def test_every_real_export_parses_to_its_golden(instruments, name):
    parsed = parse_export(instruments / name)
    expected = pl.read_csv(GOLDEN / f"{Path(name).stem}.csv", schema={
        "well": pl.Utf8, "sample": pl.Utf8, "target": pl.Utf8, "ct": pl.Float64}).with_columns(pl.col("sample").fill_null(""))
    assert_frame_equal(parsed.records.select("well", "sample", "target", "ct"), expected)
    assert parsed.rejects.height == 0


def test_quantstudio_metadata_and_run_end_time(instruments):
    parsed = parse_export(instruments / "quantstudio7flex_standard_curve.txt")
    assert parsed.format == "quantstudio"
    assert parsed.records["run_id"][0] == "QuantStudio 96-Well Standard Curve Example"
    assert parsed.records["plate_id"][0] is None  # "NA"
    assert parsed.records["finished_at"][0].isoformat() == "2010-10-21T04:51:26+00:00"  # 00:51:26 EDT


def corruptions(instruments: Path, name: str, tmp: Path) -> list[Path]:
    data = (instruments / name).read_bytes()
    out = []
    if name.endswith(".rdml"):
        out.append(write(tmp / "truncated.rdml", data[: len(data) // 3]))
        with zipfile.ZipFile(instruments / name) as archive:
            xml = archive.read("rdml_data.xml")
        out.append(write(tmp / "garbled.rdml", xml[: len(xml) // 2]))
        other = tmp / "noxml.rdml"
        with zipfile.ZipFile(other, "w") as archive:
            archive.writestr("readme.txt", "nothing here")
        out.append(other)
    elif name.startswith("quantstudio"):
        text = data.decode("utf-8-sig")
        out.append(write(tmp / "noresults.txt", text.replace("[Results]", "[Nothing]")))
        head, _, table = text.partition("[Results]")
        out.append(write(tmp / "noct.txt", head + "[Results]" + table.replace("CT\t", "XX\t", 1)))
    else:
        out.append(write(tmp / "nocq.csv", data.decode().replace(",Cq,", ",Cz,", 1)))
    out.append(write(tmp / "random.bin", bytes(range(256)) * 8))
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_a_damaged_copy_is_refused_naming_the_file(instruments, name, tmp_path):
    for damaged in corruptions(instruments, name, tmp_path):
        with pytest.raises(UnrecognisedExport) as refused:
            parse_export(damaged)
        assert damaged.name in str(refused.value)


def test_detection_is_by_content_not_name(instruments, tmp_path):
    renamed = write(tmp_path / "plate.csv", (instruments / "quantstudio7flex_standard_curve.txt").read_bytes())
    assert parse_export(renamed).format == "quantstudio"
    assert detect_format((instruments / "stepone_std.rdml").read_bytes()) == "rdml"


def test_generic_csv_spellings_rejects_and_columns(tmp_path):
    path = write(tmp_path / "r.csv", "\ufeffCT,Well,Sample,Target,Lab_ID,Run_ID,Plate_ID\n"
                 "31.5,A01,T1,ORF1ab,L1,R1,P1\n,A01,T1,N,L1,R1,P1\nUndetermined,B2,T2,N,L1,R1,P1\n"
                 "NaN,B2,T2,IC,L1,R1,P1\nNo Ct,C3,T3,IC,L1,R1,P1\nlots,C3,T3,N,L1,R1,P1\n26.1,Z99,PC,N,L1,R1,P1\n")
    parsed = parse_export(path)
    assert parsed.format == "generic_csv"
    assert parsed.records.select("well", "sample", "target", "ct").rows() == [
        ("A1", "T1", "ORF1ab", 31.5), ("A1", "T1", "N", None), ("B2", "T2", "N", None), ("B2", "T2", "IC", None),
        ("C3", "T3", "IC", None)]
    assert parsed.rejects.select("line", "reason").rows() == [(7, "Ct not a number"), (8, "not a well")]
    missing = write(tmp_path / "m.csv", "lab_id,run_id,plate_id,well,sample,ct\nL1,R1,P1,A1,T1,30\n")
    with pytest.raises(UnrecognisedExport, match="m.csv"):
        parse_export(missing)


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
