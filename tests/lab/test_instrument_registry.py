"""The instrument formats are a registry (issue 16.3): each format module declares its own
``sniff`` and ``parse``; one loop over ``lab.instruments.REGISTRY`` finds the format of a file.
A new format is found once it is in the registry; no two formats claim one real export."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

import lab.instruments as instruments_package
from lab.instruments import REGISTRY, Head, InstrumentFormat, UnrecognisedExport, detect_format, parse_export
from lab.instruments.common import ParsedExport, records_frame, text_lines
from tests.conftest import write
from tests.lab.test_instruments import NAMED, instruments, real_exports  # noqa: F401  (the real exports, in shared/)


def claimants(path: Path) -> list[str]:
    head = Head.of(path.read_bytes()[:1 << 16], zipfile.is_zipfile(path))
    return [fmt.name for fmt in REGISTRY if fmt.sniff(head)]


def test_every_registered_format_has_a_distinct_name_and_says_what_it_is_not():
    names = [fmt.name for fmt in REGISTRY]
    assert len(names) == len(set(names)) == 4
    assert set(names) == {"quantstudio", "cfx_maestro", "rdml", "generic_csv"}
    assert all(fmt.unlike.startswith("not ") for fmt in REGISTRY)


def test_no_two_formats_claim_the_same_real_export(instruments):
    exports = [instruments / name for name in real_exports(instruments)]
    assert {p.name for p in exports} >= set(NAMED) and len(exports) >= 5
    for path in exports:
        claimed = claimants(path)
        assert len(claimed) == 1, (path.name, claimed)
        assert parse_export(path).format == claimed[0]  # the claimant is the one that reads it


def test_no_two_formats_claim_the_other_shapes(instruments, tmp_path):
    """The shapes the real exports do not show: generic CSV, Parquet, JSON Lines, plain RDML XML."""
    with zipfile.ZipFile(instruments / "stepone_std.rdml") as archive:
        xml = archive.read("rdml_data.xml")
    parquet = io.BytesIO()
    pl.DataFrame({"well": ["A1"], "ct": ["30"], "sample": ["T"], "target": ["N"], "lab_id": ["L"], "run_id": ["R"],
                  "plate_id": ["P"]}).write_parquet(parquet)
    shapes = {
        "r.csv": (b"\xef\xbb\xbflab_id,run_id,plate_id,well,sample,target,ct\nL1,R1,P1,A1,T1,N,30\n", "generic_csv"),
        "r.parquet": (parquet.getvalue(), "generic_csv"),
        "r.jsonl": (json.dumps({"lab_id": "L1", "well": "A1", "ct": "30"}).encode() + b"\n", "generic_csv"),
        "plain.xml": (xml, "rdml"),
        "other.xml": (b"<?xml version='1.0'?><plate><well id='A1'/></plate>", "rdml"),  # claimed, then refused
    }
    for name, (data, expected) in shapes.items():
        assert claimants(write(tmp_path / name, data)) == [expected], name


def toy_sniff(head: Head) -> bool:
    return bool(head.lines) and head.lines[0] == "TOY-PCR 1.0"


def toy_parse(path: Path, timezone: str) -> ParsedExport:
    """``well<TAB>sample<TAB>target<TAB>ct`` lines after the ``TOY-PCR 1.0`` banner."""
    rows = []
    for number, line in enumerate(text_lines(Path(path).read_text()), start=1):
        cells = line.split("\t")
        if number == 1 or len(cells) != 4:
            continue
        rows.append({"well": cells[0], "sample": cells[1], "target": cells[2], "ct": float(cells[3]) if cells[3] else None,
                     "line": number, "run_id": None, "plate_id": None, "lab_id": None, "finished_at": None})
    return ParsedExport("toy", records_frame(rows))


TOY = InstrumentFormat(name="toy", sniff=toy_sniff, parse=toy_parse, unlike="not a toy export (no TOY-PCR banner)")


def test_a_registered_format_is_found_by_the_loop(monkeypatch, tmp_path, instruments):
    path = write(tmp_path / "plate-7.dat", "TOY-PCR 1.0\nA1\tT0001\tN\t31.5\nB1\tT0002\tN\t\n")
    with pytest.raises(UnrecognisedExport, match=r"^plate-7\.dat: not a QuantStudio export"):
        parse_export(path)  # not registered: nobody claims it

    monkeypatch.setattr(instruments_package, "REGISTRY", [*REGISTRY, TOY])  # the one line a new format adds
    assert detect_format(path.read_bytes()) == "toy"
    parsed = parse_export(path)
    assert parsed.format == "toy"
    assert parsed.records.select("well", "sample", "target", "ct").rows() == [("A1", "T0001", "N", 31.5),
                                                                              ("B1", "T0002", "N", None)]
    assert parse_export(instruments / "stepone_std.rdml").format == "rdml"  # the others still found
    # a file nobody claims is told about every registered format, the new one too
    with pytest.raises(UnrecognisedExport, match=r"^x\.txt: .*not a toy export \(no TOY-PCR banner\)$"):
        parse_export(write(tmp_path / "x.txt", "just,some,words\n"))


def test_the_unrecognised_message_is_unchanged(tmp_path):
    with pytest.raises(UnrecognisedExport) as refused:
        parse_export(write(tmp_path / "words.csv", "just,some,words\n1,2,3\n"))
    assert str(refused.value) == (
        "words.csv: not a QuantStudio export (no '* Key = Value' header, no [Results] section), "
        "not a CFX Maestro Cq results CSV (no Well, Fluor, Cq columns), not a zip and not RDML XML, "
        "not the generic results CSV (no lab_id, run_id, plate_id, well, sample, target, ct columns)")
    for name, data, why in [("e.txt", b"", "empty file"), ("bom.txt", b"\xef\xbb\xbf", None),
                            ("n.bin", b"\x00\x01garbage", "binary content, not a zip and not a text export")]:
        with pytest.raises(UnrecognisedExport) as refused:
            parse_export(write(tmp_path / name, data))
        assert str(refused.value).startswith(f"{name}: {why or 'not a QuantStudio export'}")
