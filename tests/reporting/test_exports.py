"""Results for the health-code platform (DESIGN §6, §9), on the tiny round of
``tests/builders.py`` taken through the real ingest: which results are final individual
results, and the export ledger (each result once, the same ``since`` the same bytes, late,
amended and withdrawn results). No Prefect: the flow's own function (``warehouse.exports``), without the write slot."""

import hashlib
import io
from datetime import datetime, timedelta

import polars as pl
import pytest

from warehouse.exports import NoEarlierExport, find_or_record_export
from reporting.exports import EXPORT_COLUMNS, counts_by_result, define_export_views, write_export_files
from tests.conftest import write
from tests.builders import P, PLATES, REGISTER_HEADER, SH, build, ingest, open_test_round, register_row, resamples, results_csv
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse
from ingest.discover import discover

DAY = datetime(2022, 4, 4, tzinfo=SH)
P1_END = datetime(2022, 4, 4, 16, tzinfo=SH)  # plate P1: TB negative, TS1 positive, TA a positive pool
P3_END = datetime(2022, 4, 4, 20, tzinfo=SH)  # re-runs: TE, TG, TH negative, TS2 single target twice
P5_END = datetime(2022, 4, 5, 12, tzinfo=SH)  # the re-samples: RS1 negative, RS2 positive
WHO = {v: k for k, v in P.items()}


@pytest.fixture
def opened(cfg):
    return open_test_round(cfg)


def take(cfg, root, without=()):
    """Ingest ``root`` without the files named in ``without`` (they arrive later)."""
    from ingest.take import take_file

    outcomes = [take_file(f, cfg) for f in discover(root) if f.path.name not in without]
    assert all(o.status == "accepted" and o.rows_quarantined == 0 for o in outcomes), outcomes


def final_results(cfg, as_of):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        define_export_views(con)
        rows = con.execute("SELECT id_number, tube_barcode, result, pooled, sampled_at, called_at, lab_id, round_id"
                           " FROM final_results(?)", [as_of]).fetchall()
    return {(WHO[n], t): rest for n, t, *rest in rows}


def export(cfg, since, out=None):
    """One export as the flow makes it (the flow holds the write slot around this)."""
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        made = find_or_record_export(con, cfg, since, "test-run")
    if out is not None:
        write_export_files(made.files, out)
    return made


def delivered(made):
    """(person, tube) -> (result, amends) of an export's rows."""
    return {(WHO[n], t): (r, a) for n, t, r, a in made.rows.select("id_number", "tube_barcode", "result", "amends")
            .iter_rows()}


def ledger(cfg):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        return con.execute("SELECT export_id, since, until, rows, file_name FROM result_exports ORDER BY 1").fetchall()


def test_final_individual_results_are_negatives_of_any_tube_and_positives_of_single_tubes(opened, tmp_path):
    take(opened, build(tmp_path / "in"))
    found = final_results(opened, datetime(2022, 4, 5, 14, tzinfo=SH))
    # a negative pool: every member negative; single tubes positive (TS2: its single target
    # persisted, treated as positive); a positive pool (TA, TC), a persisting single target in a
    # pool (TD), an invalid tube (TF), tubes waiting for a re-run (TI, TJ): nobody
    assert {k: (r, pooled) for k, (r, pooled, *_) in found.items()} == {
        (4, "TB"): ("negative", True), (5, "TB"): ("negative", True), (8, "TE"): ("negative", True),
        (10, "TG"): ("negative", True), (13, "TH"): ("negative", True),
        (11, "TS1"): ("positive", False), (12, "TS2"): ("positive", False)}
    # the person's scan into the tube, the call's time (the run that made it final), its lab
    assert found[(8, "TE")][2:] == [datetime(2022, 4, 4, 11, tzinfo=SH), P3_END, "L1", "R1"]
    # before the re-runs finished, only the first plate's final calls
    assert set(final_results(opened, datetime(2022, 4, 4, 18, tzinfo=SH))) == {(4, "TB"), (5, "TB"), (11, "TS1")}

    # the pool's people are decided by their own re-samples: P1 negative, P2 positive, P3 not yet
    take(opened, resamples(tmp_path / "morning"))
    later = final_results(opened, datetime(2022, 4, 5, 14, tzinfo=SH))
    assert {k: v[0] for k, v in later.items() if k[0] in (1, 2, 3)} == {(1, "RS1"): "negative", (2, "RS2"): "positive"}
    assert later[(2, "RS2")][3] == P5_END


def test_an_export_records_its_rows_and_writes_them_for_people_and_machines(opened, tmp_path):
    take(opened, build(tmp_path / "in"))
    # a name a spreadsheet would run as a formula (the register's later file wins)
    write(tmp_path / "rename/register/r2.csv",
          REGISTER_HEADER + "\n" + register_row(P[4], name="=1+2").replace(",H1,", ",H4,") + "\n")
    take(opened, tmp_path / "rename")
    made = export(opened, DAY, tmp_path / "out")
    assert made.created and made.export.export_id == 1 and made.export.rows == 7
    assert (made.since, made.until, made.next_since) == (DAY, P3_END, P3_END)
    stem = "results_20220404T000000+0800_20220404T200000+0800"
    assert ledger(opened) == [(1, DAY, P3_END, 7, f"{stem}.csv")]
    assert delivered(made) == {(4, "TB"): ("negative", None), (5, "TB"): ("negative", None),
                               (11, "TS1"): ("positive", None), (8, "TE"): ("negative", None),
                               (10, "TG"): ("negative", None), (13, "TH"): ("negative", None),
                               (12, "TS2"): ("positive", None)}

    csv, parquet = (tmp_path / "out" / f"{stem}.csv").read_bytes(), (tmp_path / "out" / f"{stem}.parquet").read_bytes()
    assert hashlib.sha256(csv).hexdigest() == made.export.content_sha256
    assert hashlib.sha256(parquet).hexdigest() == made.export.parquet_sha256
    assert csv.startswith(b"\xef\xbb\xbf")  # for people: a BOM, formula cells neutralised
    text = csv.decode("utf-8-sig").splitlines()
    assert text[0] == ",".join(EXPORT_COLUMNS)
    assert text[1] == f"R1,RIC,{P[4]},'=1+2,negative,2022-04-04T11:00:00+08:00,2022-04-04T16:00:00+08:00,L1,TB,true,"
    assert len(text) == 8 and text[-1].startswith(f"R1,RIC,{P[12]},张三,positive,")
    # for machines: every value as recorded, times in city time
    table = pl.read_parquet(io.BytesIO(parquet))
    assert table.columns == list(EXPORT_COLUMNS) and table.height == 7
    assert table.schema["called_at"] == pl.Datetime("us", "Asia/Shanghai")
    assert table.row(0, named=True)["name"] == "=1+2"
    assert table.filter(pl.col("tube_barcode") == "TS2").row(0, named=True)["called_at"] == P3_END


def test_the_same_since_gives_the_same_export_and_bytes_even_after_new_results(opened, tmp_path):
    take(opened, build(tmp_path / "in"))
    first = export(opened, DAY, tmp_path / "a")
    take(opened, resamples(tmp_path / "morning"))  # new results arrive
    again = export(opened, DAY, tmp_path / "b")
    assert not again.created and again.export == first.export
    assert export(opened, DAY.replace(tzinfo=None)).export == first.export  # without offset: city time
    assert again.rows.equals(first.rows)
    for name in (first.files.stem + ".csv", first.files.stem + ".parquet"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    # the new results are the next export's, from where the first one ended
    nxt = export(opened, first.next_since)
    assert nxt.created and nxt.export.export_id == 2 and (nxt.since, nxt.until) == (P3_END, P5_END)
    assert delivered(nxt) == {(1, "RS1"): ("negative", None), (2, "RS2"): ("positive", None)}
    # since left out: where the recorded exports end (the served deployment's default)
    cont = export(opened, None)
    assert (cont.since, cont.export) == (P5_END, None)  # nothing new after it: nothing recorded
    assert [e[0] for e in ledger(opened)] == [1, 2]


def test_a_later_since_takes_nothing_an_earlier_export_had(opened, tmp_path):
    take(opened, build(tmp_path / "in"))
    export(opened, DAY)
    take(opened, resamples(tmp_path / "morning"))
    later = export(opened, datetime(2022, 4, 4, 18, tzinfo=SH))  # overlaps the first export's window
    assert delivered(later) == {(1, "RS1"): ("negative", None), (2, "RS2"): ("positive", None)}


def test_a_results_file_that_arrives_late_goes_to_the_next_export(opened, tmp_path):
    root = build(tmp_path / "in")
    take(opened, root, without={"P3.csv"})
    first = export(opened, DAY)
    assert first.until == P1_END and set(delivered(first)) == {(4, "TB"), (5, "TB"), (11, "TS1")}
    take(opened, resamples(tmp_path / "morning"))
    second = export(opened, first.next_since)
    assert (second.until, set(delivered(second))) == (P5_END, {(1, "RS1"), (2, "RS2")})
    # the re-runs of the evening reach the inbox only now: decided inside the second export's window
    write(tmp_path / "late/results/L1/P3.csv", (root / "results/L1/P3.csv").read_text(encoding="utf-8"))
    take(opened, tmp_path / "late")
    third = export(opened, second.next_since)
    assert delivered(third) == {(8, "TE"): ("negative", None), (10, "TG"): ("negative", None),
                                (13, "TH"): ("negative", None), (12, "TS2"): ("positive", None)}
    # nothing was decided after its since: its window ends a moment later, and the next one moves on
    assert (third.since, third.until) == (P5_END, P5_END + timedelta(seconds=1))
    assert counts_by_result(third.rows, third.since) == {
        "negative": {"rows": 3, "amending": 0, "decided_before_since": 3},
        "positive": {"rows": 1, "amending": 0, "decided_before_since": 1},
        "withdrawn": {"rows": 0, "amending": 0, "decided_before_since": 0}}
    assert third.files.stem == "results_20220405T120000+0800_20220405T120001+0800"
    assert export(opened, third.next_since).export is None
    assert [e[3] for e in ledger(opened)] == [3, 2, 4]


def test_an_amended_call_is_exported_again_and_a_result_taken_back_is_withdrawn(opened, tmp_path):
    take(opened, build(tmp_path / "in"))
    take(opened, resamples(tmp_path / "morning"))
    first = export(opened, DAY)
    assert first.until == P5_END and first.export.rows == 9
    # the lab re-exports two plates: RS1 is positive after all; TB is a positive pool after all
    control = {"PC": ("30.1", "29.5", "28"), "NC": ("", "", "")}
    write(tmp_path / "amend/results/L1/P5-amended.csv", results_csv(
        "P5", "12:00", {**control, "RS1": ("26", "27", "30"), "RS2": ("24", "25", "31")}, day="2022-04-05"))
    wells = dict(PLATES["P1"][1])
    wells["TB"] = ("24", "25", "30")
    write(tmp_path / "amend/results/L1/P1-amended.csv", results_csv("P1", "16:00", wells))
    take(opened, tmp_path / "amend")
    second = export(opened, first.next_since)
    # a new (person, result) pair, once; the negatives of TB's people taken back (their pool is
    # positive: they are re-sampled), never left standing on the platform
    assert delivered(second) == {(1, "RS1"): ("positive", "negative"), (4, "TB"): ("withdrawn", "negative"),
                                 (5, "TB"): ("withdrawn", "negative")}
    withdrawn = second.rows.filter(pl.col("result") == "withdrawn").row(0, named=True)
    assert (withdrawn["called_at"], withdrawn["lab_id"], withdrawn["pooled"]) == (P1_END, "L1", True)
    assert counts_by_result(second.rows, second.since) == {
        "negative": {"rows": 0, "amending": 0, "decided_before_since": 0},
        "positive": {"rows": 1, "amending": 1, "decided_before_since": 1},
        "withdrawn": {"rows": 2, "amending": 2, "decided_before_since": 2}}
    assert export(opened, second.next_since).export is None  # each once
    assert export(opened, first.next_since).export == second.export


def test_nothing_new_records_nothing_and_starts_the_next_export_at_the_same_since(opened, tmp_path):
    with pytest.raises(NoEarlierExport):
        export(opened, None)
    take(opened, build(tmp_path / "in"))
    future = datetime(2022, 5, 1, tzinfo=SH)
    made = export(opened, future, tmp_path / "out")
    assert made.export is None and made.rows.height == 0 and made.next_since == future
    assert ledger(opened) == []
    (csv,) = (tmp_path / "out").glob("*.csv")
    assert csv.read_bytes().decode("utf-8-sig") == ",".join(EXPORT_COLUMNS) + "\n"
    # only positive pools decided in the window: nothing recorded, the next export starts at since again
    assert export(opened, datetime(2022, 4, 4, 15, tzinfo=SH)).export.rows == 7  # not pinned by the empty one


def test_two_warehouses_of_one_inbox_give_the_same_bytes(tmp_path, cfg):
    files = []
    for name in ("one", "two"):
        each = cfg.with_warehouse(tmp_path / f"{name}.duckdb")
        open_test_round(each)
        ingest(build(tmp_path / f"in-{name}"), each)
        files.append(export(each, DAY).files)
    assert files[0] == files[1]
