"""Bad exports from the field (issue 12): files that end mid-table, RDML zips with a
split-archive marker before their first entry, run times with a time zone the parser does not
know, and (calling) tubes with a missing or conflicting reading. Each is refused whole or made an
anomaly with a clear word, never read silently as far as it goes."""

from __future__ import annotations

import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from ingest.take import take_file
from lab.instruments import UnrecognisedExport, parse_export
from tests.conftest import write
from tests.builders import CONTROLS, ND, P, RESULT_HEADER, calls, ingest, query_views, results_csv  # noqa: F401
from tests.lab.test_instruments import instruments  # noqa: F401  (the real exports, in shared/)
from ingest.discover import InboxFile

QUANTSTUDIO = "quantstudio7flex_standard_curve.txt"
CFX = "cfx_maestro_cq_results.csv"


def refused(path: Path, *why: str) -> str:
    with pytest.raises(UnrecognisedExport) as caught:
        parse_export(path)
    message = str(caught.value)
    assert message.startswith(f"{path.name}: "), message
    for part in why:
        assert part in message, message
    return message


# --- an export that ends mid-table is refused whole ------------------------------------------------

def test_a_quantstudio_export_cut_mid_table_is_refused(instruments, tmp_path):  # noqa: F811
    data = (instruments / QUANTSTUDIO).read_bytes()
    last = data.rindex(b"\n", 0, len(data) - 1) + 1  # the last [Results] row (H12, line 473)
    cuts = {
        "in_last_row.txt": data[: data.rindex(b"\t26.217\t")],  # before H12's CT: 8 of 26 cells
        "after_last_ct.txt": data[: data.rindex(b"\t26.213\t")],  # H12's CT is there, the row is not
        "inside_last_cell.txt": data[:-3],  # every cell, no line break: the last value may be cut
        "after_results_header.txt": data[: data.index(b"\n", data.index(b"[Results]") + 11) + 1],
    }
    assert data[last:].startswith(b"96\tH12\t")
    for name, cut in cuts.items():
        message = refused(write(tmp_path / name, cut), "truncated export, refused whole")
        assert "line 473" in message or "no rows" in message, message
    # a file that only lacks the line break after a complete table and footer is whole
    crlf = (instruments / "quantstudio_crlf_cyrillic.txt").read_bytes().rstrip(b"\r\n")
    assert parse_export(write(tmp_path / "no_final_break.txt", crlf)).records.height == 9


def test_a_cfx_export_cut_mid_table_is_refused(instruments, tmp_path):  # noqa: F811
    data = (instruments / CFX).read_bytes()
    header_end = data.index(b"\n") + 1
    cuts = {
        "in_last_row.csv": data[: data.rindex(b",D06,VIC,") + 12],
        "after_last_cq.csv": data[: data.rindex(b",0,60,")],
        "inside_last_cell.csv": data[:-2],
        "header_only.csv": data[:header_end],
    }
    for name, cut in cuts.items():
        refused(write(tmp_path / name, cut), "truncated export, refused whole")
    assert "line 49" in refused(write(tmp_path / "x.csv", cuts["in_last_row.csv"]), "ends mid-table")


def test_a_generic_results_csv_cut_short_is_refused_a_short_row_inside_is_a_reject(tmp_path):
    head = "lab_id,run_id,plate_id,well,sample,target,ct,finished_at\n"
    rows = ["L1,R1,P1,A1,T1,ORF1ab,30,", "L1,R1,P1,A1,T1,N,31,", "L1,R1,P1,A1,T1,IC,28,"]
    refused(write(tmp_path / "cut.csv", head + "\n".join(rows) + "\nL1,R1,P1,A2,T2,N"),
            "ends mid-table", "line 5", "refused whole")
    refused(write(tmp_path / "cut_nl.csv", head + "\n".join(rows) + "\nL1,R1,P1,A2,T2\n"), "line 5")
    jsonl = ('{"lab_id":"L1","run_id":"R1","plate_id":"P1","well":"A1","sample":"T1","target":"N","ct":"30"}\n'
             '{"lab_id":"L1","run_id":"R1","plate_id":"P1","well":"A2","sample":"T2","tar')
    refused(write(tmp_path / "cut.jsonl", jsonl), "ends mid-table", "line 2")
    inside = parse_export(write(tmp_path / "inside.csv", head + "L1,R1,P1,A2,T2,N\n" + "\n".join(rows) + "\n"))
    assert inside.records.height == 3
    assert inside.rejects.select("line", "reason").rows() == [(2, "unreadable row: missing columns")]


def test_a_cut_export_in_the_inbox_is_refused_not_taken_in_part(instruments, tmp_path, cfg):  # noqa: F811
    data = (instruments / QUANTSTUDIO).read_bytes()
    path = write(tmp_path / "in/results/L1/cut.txt", data[: data.rindex(b"\t26.217\t")])
    outcome = take_file(InboxFile("results", path, "results/L1/cut.txt"), cfg)
    assert outcome.status == "refused"
    assert outcome.message.startswith("results/L1/cut.txt: ") and "ends mid-table" in outcome.message


# --- RDML with a split-archive marker ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["stepone_std.rdml", "lightcycler96_4plex.rdml"])
def test_rdml_with_a_split_archive_marker_parses_like_the_original(instruments, name, tmp_path):  # noqa: F811
    original = (instruments / name).read_bytes()
    marked = write(tmp_path / f"marked_{name}", b"PK\x07\x08" + original)
    assert zipfile.is_zipfile(marked)
    parsed = parse_export(marked)
    assert parsed.format == "rdml" and parsed.rejects.height == 0
    assert_frame_equal(parsed.records, parse_export(instruments / name).records)

    from tubetrail.cli import app

    out = tmp_path / f"{name}.parquet"
    result = CliRunner().invoke(app, ["lab", "parse", str(marked), "-o", str(out)])
    assert result.exit_code == 0, result.output


def test_a_damaged_zip_with_the_marker_is_still_refused_as_one(instruments, tmp_path):  # noqa: F811
    original = (instruments / "stepone_std.rdml").read_bytes()
    refused(write(tmp_path / "cut.rdml", b"PK\x07\x08" + original[: len(original) // 2]), "zip")


# --- run times with an unknown time zone ------------------------------------------------------------------

QS = ("* Experiment Barcode = P7\r\n* Experiment Name = RUN-7\r\n* Experiment Run End Time = {end}\r\n\r\n"
      "[Results]\r\nWell Position\tSample Name\tTarget Name\tCT\r\nA1\tT1\tN\t30.5\r\n")


@pytest.mark.parametrize("zone", ["MOON", "IST", "XYZT", "Mars/Olympus", "(UTC+08:00) Beijing"])
def test_a_quantstudio_run_time_with_an_unknown_zone_is_refused_naming_it(tmp_path, zone):
    path = write(tmp_path / "qs.txt", QS.format(end=f"2022-04-04 09:15:00 PM {zone}"))
    refused(path, "Experiment Run End Time", f"unknown time zone {zone!r}")


def test_a_run_time_that_is_no_real_date_is_refused_not_replaced(tmp_path):
    path = write(tmp_path / "qs.txt", QS.format(end="2022-02-30 09:15:00 PM CST"))
    refused(path, "Experiment Run End Time", "no real date and time")


def test_known_zones_are_mapped_not_refused(tmp_path):
    for zone, utc_hour in (("CST", 13), ("JST", 12), ("+08:00", 13), ("Asia/Shanghai", 13), ("UTC", 21)):
        parsed = parse_export(write(tmp_path / "qs.txt", QS.format(end=f"2022-04-04 09:15:00 PM {zone}")))
        assert parsed.records["finished_at"][0] == datetime(2022, 4, 4, utc_hour, 15, tzinfo=timezone.utc), zone


def test_an_rdml_run_date_with_an_unknown_zone_is_refused_naming_it(tmp_path):
    xml = ('<?xml version="1.0"?><rdml xmlns="http://www.rdml.org" version="1.2"><experiment id="E">'
           '<run id="R1"><runDate>2022-04-04T10:00:00 XYZ</runDate><react id="A1"><sample id="T1"/>'
           '<data><tar id="N"/><cq>30</cq></data></react></run></experiment></rdml>')
    refused(write(tmp_path / "zone.rdml", xml), "run R1", "unknown time zone 'XYZ'")


def test_an_export_with_an_unknown_zone_is_refused_by_the_ingest_not_given_its_file_time(tmp_path, cfg):
    """Before: the unknown zone gave a null run time and ``ingest.take._read_export`` put the
    file's modification time in its place, without a word."""
    path = write(tmp_path / "in/results/L1/zone.txt", QS.format(end="2022-04-04 09:15:00 PM MOON"))
    outcome = take_file(InboxFile("results", path, "results/L1/zone.txt"), cfg)
    assert outcome.status == "refused" and "unknown time zone 'MOON'" in outcome.message


# --- calling: a tube without a reading for every target role, or with conflicting readings -----------

def test_a_missing_target_or_conflicting_readings_call_nothing_and_wait_for_a_rerun(called, tmp_path):
    """On a valid plate: TI has only its internal-control row; TJ is read positive (ORF1ab 20,
    N 21) and, later in the same file, not detected; TX repeats its rows exactly (harmless).
    On main TI and TJ were called ``negative`` without a word."""
    rows = [RESULT_HEADER]
    wells = {**CONTROLS, "TJ": ("20", "21", "30"), "TX": ("24", "25", "30")}
    for n, (sample, cts) in enumerate(wells.items()):
        rows += [f"L1,P7,P7,A{n + 1},{sample},{t},{ct},2022-04-04T21:00:00+08:00" for t, ct in zip(("ORF1ab", "N", "IC"), cts)]
    rows.append("L1,P7,P7,B1,TI,IC,30,2022-04-04T21:00:00+08:00")
    rows += ["L1,P7,P7,A3,TJ,ORF1ab,Undetermined,2022-04-04T21:00:00+08:00",
             "L1,P7,P7,A3,TJ,N,,2022-04-04T21:00:00+08:00"]
    rows += [f"L1,P7,P7,A4,TX,{t},{ct},2022-04-04T21:00:00+08:00" for t, ct in zip(("ORF1ab", "N", "IC"), wells["TX"])]
    write(tmp_path / "faults/results/L1/P7.csv", "\n".join(rows) + "\n")
    ingest(tmp_path / "faults", called)

    assert query_views(called, "SELECT valid FROM plate_qc WHERE plate_id = 'P7'", []) == [(True,)]
    found = calls(called)
    assert found["TI"] == ("rerun", "reading_missing")
    assert found["TJ"] == ("rerun", "conflicting_readings")
    assert found["TX"] == ("positive", None)  # an exact repeat is no conflict
    narrowed = query_views(called, "SELECT tube_barcode, call, pending_reason FROM tube_calls(?, tubes := ['TI', 'TJ', 'TX'])")
    assert {t: (c, p) for t, c, p in narrowed} == {t: found[t] for t in ("TI", "TJ", "TX")}
    history = query_views(called, "SELECT tube_barcode, first_call, attempt FROM tube_call_history(?)"
                            " WHERE plate_id = 'P7' ORDER BY 1")
    assert history == [("TI", "reading_missing", None), ("TJ", "conflicting_readings", None), ("TX", "positive", 1)]
    anomalies = query_views(called, "SELECT kind, tube_barcode, detail FROM lab_anomalies(?)"
                              " WHERE kind IN ('reading_missing', 'conflicting_readings') ORDER BY ALL")
    assert anomalies == [
        ("conflicting_readings", "TJ", "lab L1 run P7 plate P7 well A3 target N: 2 different readings in one file; "
                                       "none of them is called from it"),
        ("conflicting_readings", "TJ", "lab L1 run P7 plate P7 well A3 target ORF1ab: 2 different readings in one "
                                       "file; none of them is called from it"),
        ("reading_missing", "TI", "lab L1 run P7 plate P7 well B1: no reading for ORF1ab, N; not called, to re-run")]
    status = dict(query_views(called, "SELECT id_number, status FROM person_status('R1', ?)"))
    assert status[P[14]] == status[P[15]] == "sampled"  # neither negative nor resulted

    # the re-run on a valid plate calls them
    write(tmp_path / "rerun/results/L1/P10.csv", results_csv(
        "P10", "22:00", {**CONTROLS, "TI": (ND, ND, "30"), "TJ": ("22", "23", "30")}))
    ingest(tmp_path / "rerun", called)
    found = calls(called)
    assert found["TI"] == ("negative", None) and found["TJ"] == ("positive", None)


def test_a_negative_control_without_a_reading_for_a_target_makes_its_plate_invalid(called, tmp_path):
    rows = [RESULT_HEADER, *(f"L1,P11,P11,A1,PC,{t},{ct},2022-04-04T21:00:00+08:00"
                             for t, ct in zip(("ORF1ab", "N", "IC"), CONTROLS["PC"])),
            "L1,P11,P11,A2,NC,IC,,2022-04-04T21:00:00+08:00",
            *(f"L1,P11,P11,A3,TI,{t},{ct},2022-04-04T21:00:00+08:00" for t, ct in (("ORF1ab", ""), ("N", ""), ("IC", "30")))]
    write(tmp_path / "nc/results/L1/P11.csv", "\n".join(rows) + "\n")
    ingest(tmp_path / "nc", called)
    assert query_views(called, "SELECT qc_reason FROM plate_qc WHERE plate_id = 'P11'", []) == [
        ("negative control misses a reading",)]
    assert calls(called)["TI"] == ("rerun", "plate_invalid")
