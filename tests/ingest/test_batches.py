"""Batches, not files (issue 15.2): a stretch of files of one kind taken as one batch gives the
warehouse that taking them one by one gives; each file keeps its ledger entry, counts,
quarantine lines and refusal."""

import dataclasses
import io
import json
from kernel.config import replace
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

import ingest.take
import kernel.tables

from ingest import discover as discovery
from ingest.discover import discover
from ingest.take import plan_batches, take_batch, take_file
from tests.conftest import write
from tests.builders import REGISTER_HEADER, open_simulated_round, register_row, ric
from kernel.config import Config
from devtools.simcity import simulate_city
from warehouse.writer import STAGE, staged_file_of

#: when and by which run a row was written (the clock), and this warehouse's own id: never equal
#: across two warehouses
TAKING_COLUMNS = {"ingested_at", "quarantined_at", "flow_run_id", "updated_at", "recorded_at", "applied_at",
                  "opened_at"}


def tables(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without the columns that say when or by which run it was taken."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for (name,) in con.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
                               " ORDER BY 1").fetchall():
            columns = [c for c in con.sql(f"SELECT * FROM {name} LIMIT 0").columns if c not in TAKING_COLUMNS]
            # the warehouse's own id, and the batches since the last vacuum (the layout on disk, not a fact)
            where = " WHERE name NOT IN ('warehouse_id', 'vacuum_debt')" if name == "warehouse_settings" else ""
            select = ", ".join(f'"{c}"::VARCHAR' for c in columns)
            out[name] = sorted(con.sql(f"SELECT {select} FROM {name}{where}").fetchall(), key=repr)
        return out
    finally:
        con.close()


def test_a_city_taken_in_batches_equals_it_taken_file_by_file(tmp_path):
    """A small simulated round (register, scans, boxes, receipts, results with positive pools,
    next-morning re-samples, injected faults), one inbox with a bad file of its own, taken file by
    file and in batches of up to 7 files: every table is the same, the ledger row for row."""
    city = tmp_path / "inbox"
    simulate_city(1500, city, seed=11, prevalence=0.01)
    write(city / "scans/zz_cut.csv", "scanned_at,site_id\n")  # lacks required columns: refused alone
    truth = json.loads((city / "_truth.json").read_text())
    files = discover(city)
    assert len({f.kind for f in files}) >= 7 and any("resample" in f.label for f in files)

    one = open_simulated_round(Config().with_warehouse(tmp_path / "one.duckdb"), truth)
    by_file = [take_file(f, one) for f in files]
    many = open_simulated_round(Config().with_warehouse(tmp_path / "many.duckdb"), truth)
    many = replace(many, ingest=replace(many.ingest, batch_files=7, alert_batch_files=7))
    batches = plan_batches(files, many)
    assert len(batches) < len(files) and max(len(b) for b in batches) == 7
    assert all(len({f.kind for f in b}) == 1 for b in batches)
    by_batch = [o for b in batches for o in take_batch(b, many)]

    assert by_batch == by_file
    assert sum(o.status == "refused" for o in by_batch) >= 1
    assert all(o.rows_read == o.rows_accepted + o.rows_quarantined for o in by_batch)
    expected, got = tables(tmp_path / "one.duckdb"), tables(tmp_path / "many.duckdb")
    assert got.keys() == expected.keys()
    assert [name for name in expected if got[name] != expected[name]] == []
    assert expected["scans"] and expected["results"] and expected["quarantine"] and expected["alert_outbox"]


def test_one_bad_file_never_blocks_its_batch_and_each_file_keeps_its_own_counts(tmp_path, cfg):
    a, b = ric("31011519800101123"), ric("31011519850505456")
    inbox = tmp_path / "in"
    write(inbox / "register/1.csv", REGISTER_HEADER + "\n" + register_row(a) + "\nRIC,1,x,,a,b,c,d,,,,\n")
    write(inbox / "register/2.csv", "id_type,id_number\nRIC,1\n")  # missing columns: refused whole
    write(inbox / "register/3.csv", REGISTER_HEADER + "\n" + register_row(b) + "\n" + register_row(b) + "\n")
    write(inbox / "register/4.csv", "名字,电话\n张三,1\n".encode("gb18030"))  # GBK: refused whole
    write(inbox / "register/5.csv", REGISTER_HEADER + "\n" + register_row(a) + "\n")  # a again: no change
    write(inbox / "register/6.csv", (inbox / "register/1.csv").read_text(encoding="utf-8"))  # 1 again, other name
    outcomes = take_batch(discover(inbox), cfg)
    got = [(o.file_name, o.status, o.rows_read, o.rows_accepted, o.rows_quarantined) for o in outcomes]
    assert got == [("register/1.csv", "accepted", 2, 1, 1), ("register/2.csv", "refused", 0, 0, 0),
                   ("register/3.csv", "accepted", 2, 1, 1), ("register/4.csv", "refused", 0, 0, 0),
                   ("register/5.csv", "accepted", 1, 1, 0), ("register/6.csv", "skipped", 0, 0, 0)]
    assert outcomes[1].message.startswith("register/2.csv: missing required column(s)")
    assert "GBK/GB18030" in outcomes[3].message
    assert outcomes[5].message == "seen before as register/1.csv (accepted)"
    assert outcomes[2].quarantined_by_reason == {"duplicate row": 1}
    con = duckdb.connect(cfg.warehouse.path, read_only=True)
    try:
        ledger = con.sql("SELECT file_name, status, rows_read, rows_accepted, rows_quarantined FROM ingest_ledger"
                         " ORDER BY 1").fetchall()
        lines = con.sql("SELECT file_name, line, reason FROM quarantine ORDER BY 1, 2").fetchall()
        refused = con.sql("SELECT count(*) FROM alert_outbox WHERE kind = 'file_refused'").fetchall()[0][0]
    finally:
        con.close()
    assert ledger == [(n, s, r, a_, q) for n, s, r, a_, q in got if s != "skipped"]
    assert lines == [("register/1.csv", 3, "RIC not 17 digits plus a check character"),
                     ("register/3.csv", 2, "duplicate row (same as line 3)")]
    assert refused == 2
    assert {o.status for o in take_batch(discover(inbox), cfg)} == {"skipped"}  # a retry takes nothing twice


@pytest.mark.parametrize("checked_every", [10, 1_000_000])
def test_a_file_refused_halfway_leaves_none_of_its_rows_and_its_batch_stands(tmp_path, cfg, monkeypatch,
                                                                             checked_every):
    """A Parquet register file whose third row group is damaged is refused after its first two
    chunks were read (chunks of 10 rows here, a million in use), and checked and staged when the
    rules run every 10 rows, or still waiting for them: none of its rows is kept, the ledger has
    it refused with no row, and the files before and after it in the batch are taken whole."""
    monkeypatch.setattr(kernel.tables, "CHUNK_ROWS", 10)
    monkeypatch.setattr(ingest.take, "CHUNK_ROWS", checked_every)
    people = [ric(f"31011519800101{i:03d}") for i in range(32)]
    inbox = tmp_path / "in"
    write(inbox / "register/1.csv", REGISTER_HEADER + "\n" + register_row(people[30]) + "\n")
    damaged = inbox / "register/2.parquet"
    rows = pl.read_csv(io.StringIO(REGISTER_HEADER + "\n" + "\n".join(register_row(p) for p in people[:30]) + "\n"),
                       infer_schema=False)
    pq.write_table(rows.to_arrow(), damaged, row_group_size=10, compression="zstd")
    third = pq.ParquetFile(damaged).metadata.row_group(2)
    start = min(third.column(c).data_page_offset for c in range(third.num_columns))
    data = bytearray(damaged.read_bytes())
    data[start:start + 16] = b"\xff" * 16  # its page header unreadable
    damaged.write_bytes(bytes(data))
    write(inbox / "register/3.csv", REGISTER_HEADER + "\n" + register_row(people[31]) + "\n")
    staged_of_refused: list[int] = []  # its rows left in the stage, which rules over the whole batch would read
    record = ingest.take.record_batch

    def recorded(con, files, **kwargs):
        staged_of_refused.append(
            con.sql(f"SELECT count(*) FROM {STAGE}.accepted WHERE {staged_file_of()} = 1").fetchall()[0][0])
        return record(con, files, **kwargs)

    monkeypatch.setattr(ingest.take, "record_batch", recorded)
    outcomes = take_batch(discover(inbox), cfg)
    assert staged_of_refused == [0]
    assert [(o.file_name, o.status, o.rows_read, o.rows_accepted) for o in outcomes] == [
        ("register/1.csv", "accepted", 1, 1), ("register/2.parquet", "refused", 0, 0), ("register/3.csv", "accepted", 1, 1)]
    assert outcomes[1].message.startswith("register/2.parquet: not readable as Parquet")
    con = duckdb.connect(cfg.warehouse.path, read_only=True)
    try:
        kept = sorted(r[0] for r in con.sql("SELECT id_number FROM register").fetchall())
        ledger = con.sql("SELECT file_name, status, rows_read FROM ingest_ledger ORDER BY 1").fetchall()
        quarantined = con.sql("SELECT count(*) FROM quarantine").fetchall()[0][0]
    finally:
        con.close()
    assert kept == sorted([people[30], people[31]])
    assert ledger == [("register/1.csv", "accepted", 1), ("register/2.parquet", "refused", 0),
                      ("register/3.csv", "accepted", 1)]
    assert quarantined == 0


def test_batches_are_cut_by_kind_files_and_bytes(tmp_path):
    inbox = tmp_path / "in"
    for i in range(5):
        write(inbox / f"labs/{i}.csv", "lab_id,name\n" + f"L{i},Lab {'x' * 100}\n")
    write(inbox / "sites/s.csv", "site_id,name,district\nS1,One,D\n")
    files = discover(inbox)
    cfg = Config()
    assert [len(b) for b in plan_batches(files, cfg)] == [1, 5]
    assert [len(b) for b in plan_batches(files, replace(cfg, ingest=replace(cfg.ingest, batch_files=2)))] == [1, 2, 2, 1]
    assert [len(b) for b in plan_batches(files, replace(cfg, ingest=replace(cfg.ingest, batch_bytes=250)))] == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="one kind"):
        take_batch(files, cfg)
    for i in range(3):  # results raise alerts (positive pools): published after each batch of at most 2 here
        write(inbox / f"results/L1/{i}.csv", "lab_id,run_id,plate_id,well,sample,target,ct\n")
    results = [f for f in discover(inbox) if f.kind == "results"]
    assert [len(b) for b in plan_batches(results, replace(cfg, ingest=replace(cfg.ingest, alert_batch_files=2)))] == [2, 1]


def test_an_instrument_export_is_parsed_once_from_discovery_to_the_ledger(tmp_path, cfg, monkeypatch):
    export = Path(__file__).resolve().parents[2].parent / "shared/fixtures/instruments/quantstudio7flex_standard_curve.txt"
    path = write(tmp_path / "in/results/L1/plate.txt", export.read_bytes())
    calls = []
    real = discovery.parse_export
    monkeypatch.setattr(discovery, "parse_export", lambda p, timezone: calls.append(p) or real(p, timezone=timezone))
    files = discover(tmp_path / "in")
    assert [f.path for f in files] == [path] and len(calls) == 1
    outcome = take_file(files[0], cfg)
    assert outcome.status == "accepted" and outcome.rows_accepted > 0
    assert len(calls) == 1  # the take used what discovery parsed
    assert take_file(files[0], cfg).status == "skipped" and len(calls) == 1


def test_a_round_taken_kind_by_kind_within_the_hour_equals_it_taken_strictly_by_time(tmp_path):
    """discover's order (the chain by the hour of each file's first event, kind by kind within it:
    a wave's files of one kind make one batch) against the strict time order: the same facts,
    quarantine, waiting scans, alerts, orders and audit actions (a re-sample scan ahead of the
    results of its own hour waits and is placed by them); and the windowed order cuts fewer batches."""
    city = tmp_path / "inbox"
    simulate_city(1500, city, seed=11, prevalence=0.01)
    truth = json.loads((city / "_truth.json").read_text())
    strict, windowed = discover(city, window=None), discover(city)
    assert sorted(f.label for f in strict) == sorted(f.label for f in windowed) and strict != windowed
    got = {}
    for name, files in (("strict", strict), ("windowed", windowed)):
        cfg = open_simulated_round(Config().with_warehouse(tmp_path / f"{name}.duckdb"), truth)
        batches = plan_batches(files, cfg)
        got[name] = len(batches)
        assert all(o.status == "accepted" for b in batches for o in take_batch(b, cfg))
    assert got["windowed"] < got["strict"]
    facts = ("scans", "waiting_scans", "manifests", "receipts", "results", "register", "quarantine", "alert_outbox")
    skip = TAKING_COLUMNS | {"source_hash", "source_line", "content_hash", "file_name", "audit_id"}

    def rows(name: str, path: Path) -> list:
        """A table's rows without when, by which run or from which file they were taken."""
        con = duckdb.connect(str(path), read_only=True)
        try:
            if name == "audit":
                return sorted(con.sql("SELECT entity, action, count(*) FROM audit GROUP BY ALL").fetchall())
            cols = [f'"{c}"' for c in con.sql(f"SELECT * FROM {name} LIMIT 0").columns if c not in skip]
            return sorted(con.sql(f"SELECT {', '.join(cols)} FROM {name}").fetchall(), key=repr)
        finally:
            con.close()

    for name in (*facts, "audit"):
        assert rows(name, tmp_path / "strict.duckdb") == rows(name, tmp_path / "windowed.duckdb"), name
    assert rows("scans", tmp_path / "strict.duckdb") and rows("alert_outbox", tmp_path / "strict.duckdb")


def test_a_batch_settles_and_announces_once_as_its_files_one_by_one(tmp_path, monkeypatch):
    """Settle and announce once per batch: the next morning's re-sample scans taken ahead of the
    first results (their people's tubes are received, not called: they wait), then the results
    that order them, file by file and in batches of up to 7: every table the same, the audit in
    the same order (its ids), the same waiting scans placed and alerts raised. And the batches did
    place the waiting scans of several files in one settle, judged the positive pools of several
    files in one pass, and took file by file a batch whose files were not apart."""
    from ingest import feeds
    from warehouse import writer

    city = tmp_path / "inbox"
    simulate_city(1500, city, seed=11, prevalence=0.01)
    truth = json.loads((city / "_truth.json").read_text())
    files = discover(city)
    early = [f for f in files if f.kind == "scans" and "resample" in f.label]
    rest = [f for f in files if f not in early]
    first = next(i for i, f in enumerate(rest) if f.kind == "results")
    files = rest[:first] + early + rest[first:]

    settles, announces, aparts = [], [], []
    real_settle, results = writer.assign_waiting_scans, feeds.FEEDS["results"]

    def settle(con, hashes, run_id, *args, **kwargs):
        placed = real_settle(con, hashes, run_id, *args, **kwargs)
        (audited,) = con.execute("SELECT count(DISTINCT entity_key) FROM audit WHERE action = 'assign_waiting'"
                                 " AND entity_key IN (SELECT unnest(?::VARCHAR[]))", [list(hashes)]).fetchall()[0]
        settles.append((len(hashes), placed, audited))
        return placed

    def announce(con, cfg, hashes):
        alerts = results.announce(con, cfg, hashes)
        announces.append((len(hashes), sum(bool(a) for a in alerts)))
        return alerts

    def apart(con, cfg):
        aparts.append(results.apart(con, cfg))
        return aparts[-1]

    monkeypatch.setattr(writer, "assign_waiting_scans", settle)
    monkeypatch.setitem(feeds.FEEDS, "results", dataclasses.replace(results, announce=announce, apart=apart))

    one = open_simulated_round(Config().with_warehouse(tmp_path / "one.duckdb"), truth)
    by_file = [take_file(f, one) for f in files]
    assert {n for n, _, _ in settles} == {1} and sum(p for _, p, _ in settles) > 0
    settles.clear(), announces.clear(), aparts.clear()
    many = open_simulated_round(Config().with_warehouse(tmp_path / "many.duckdb"), truth)
    many = replace(many, ingest=replace(many.ingest, batch_files=7, alert_batch_files=7))
    by_batch = [o for b in plan_batches(files, many) for o in take_batch(b, many)]

    assert by_batch == by_file
    expected, got = tables(tmp_path / "one.duckdb"), tables(tmp_path / "many.duckdb")
    assert [name for name in expected if got[name] != expected[name]] == []
    assert [r for r in expected["audit"] if r[3] == "assign_waiting"]  # (audit_id, entity, entity_key, action, …)
    assert expected["alert_outbox"] and not expected["waiting_scans"]
    # one settle placed the waiting scans of several files, each file's move audited on its own
    assert any(n > 1 and placed and audited > 1 for n, placed, audited in settles)
    # one pass judged the positive calls of several files, several of which raised alerts
    assert any(n > 1 and raised > 1 for n, raised in announces)
    assert False in aparts and True in aparts  # a batch not apart was taken file after file


def test_views_defined_only_for_batches_that_read_them():
    """Issue 15: defining the derived views costs a micro-batch a tenth of a second. Announce and
    the stock warning read them; a receipts batch's settle only when a scan waits; a scans
    batch's round rule only on its full path (``before_full_rule``); manifests never."""
    from ingest.feeds import FEEDS

    con = duckdb.connect()
    con.execute("CREATE TABLE waiting_scans (tube_barcode VARCHAR)")
    assert [k for k, feed in FEEDS.items() if feed.needs_views(con)] == ["stock", "results"]
    con.execute("INSERT INTO waiting_scans VALUES ('T1')")
    assert [k for k, feed in FEEDS.items() if feed.needs_views(con)] == ["stock", "receipts", "results"]


@pytest.mark.parametrize("mode", ["file after file", "raises nothing", "apart", "not apart"])
def test_a_stage_out_of_line_order_is_written_in_each_files_line_order(cfg, mode):
    """A stage rule's rows come out nearly, not exactly, in ``_line`` order (``apply_stage_rule``
    sorts nothing); ``record_batch``'s view ``staged`` still gives each file's rows with their
    file and the order to write them in (``staged_order``), and counts them per file, whether
    ``apply`` sees one file at a time or, for a feed that ``appends``, every file at once (issue
    15: a feed that raises nothing, as scans and manifests, or a batch whose files are apart, as
    receipts, settled once after every file's facts); a feed that settles, in a batch whose
    files are not apart, is written and settled file after file even when it appends; a refused
    file's staged rows are never written."""
    from kernel.secrets import id_hash_key
    from warehouse.connection import open_configured
    from warehouse.writer import FILE_LINE_SHIFT, STAGE, StagedFile, attach_stage, detach_stage, record_batch

    together = mode in ("raises nothing", "apart")
    settling = mode in ("apart", "not apart")
    lines = [(i << FILE_LINE_SHIFT) | n for i in (0, 1, 2) for n in range(1, 2001)]
    shuffled = sorted(lines, key=lambda x: (x * 7919) % 6007)  # a fixed permutation
    written: list[tuple[str, int]] = []
    settled: list[tuple[list[str], int]] = []  # each settle's files, and the rows written before it
    with open_configured(cfg.warehouse, id_hash_key()) as con:
        attach_stage(con)
        try:
            con.execute(f"CREATE TABLE {STAGE}.accepted AS SELECT unnest(?::BIGINT[]) AS _line", [shuffled])
            con.execute(f"CREATE TABLE {STAGE}.quarantined (_line BIGINT, \"column\" VARCHAR, reason VARCHAR, raw VARCHAR)")
            con.execute("CREATE TEMP TABLE written (content_hash VARCHAR, source_line BIGINT)")

            def apply(c, run_id):
                files_seen = c.sql("SELECT count(DISTINCT source_hash) FROM staged").fetchall()[0][0]
                assert files_seen == (2 if together else 1)
                c.execute("INSERT INTO written SELECT source_hash, source_line FROM staged ORDER BY staged_order")

            def settle(c, hashes, run_id):
                settled.append((list(hashes), c.sql("SELECT count(*) FROM written").fetchall()[0][0]))

            files = [StagedFile(0, "h0", "scans", "f0.csv", 1, "csv", 2000),
                     StagedFile(1, "h1", "scans", "f1.csv", 1, "csv", 0, refusal="f1.csv: refused halfway"),
                     StagedFile(2, "h2", "scans", "f2.csv", 1, "csv", 2000)]
            outcomes = record_batch(con, files, apply=apply, run_id=None, appends=mode != "file after file",
                                    settle=settle if settling else None,
                                    apart=(lambda c: mode == "apart") if settling else None)
            written = con.sql("SELECT content_hash, source_line FROM written").fetchall()  # insertion order
        finally:
            detach_stage(con)
    assert [(o.status, o.rows_accepted) for o in outcomes] == [("accepted", 2000), ("refused", 0), ("accepted", 2000)]
    assert written == [(f"h{i}", n) for i in (0, 2) for n in range(1, 2001)]
    assert settled == {"apart": [(["h0", "h2"], 4000)], "not apart": [(["h0"], 2000), (["h2"], 4000)]}.get(mode, [])


def _row_groups(path: str, table: str) -> int:
    con = duckdb.connect(path, read_only=True)
    try:
        return con.sql(f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{table}')").fetchall()[0][0]
    finally:
        con.close()


def test_small_batches_close_without_vacuuming_until_every_fourth_merges_what_they_left(tmp_path, cfg, monkeypatch):
    """Issue 15: DuckDB's checkpoint at a session's close merges a table's partly filled tail row
    groups (0.5 s of a 50,000-scan micro-batch at 25.7 M). Small batches leave their rows in row
    groups of their own until the ``VACUUM_EVERY_BATCHES``-th, or a batch that brings the rows
    since the last vacuum to ``VACUUM_FROM_ROWS``, merges them; a batch that wrote nothing
    (every file seen before) does not count; the facts are the same either way."""
    from warehouse import writer

    inbox = tmp_path / "in"
    for i in range(6):
        write(inbox / f"labs/{i}.csv", "lab_id,name\n" + f"L{i},Lab {i}\n")
    files = discover(inbox)
    for n, f in enumerate(files[:3], start=1):
        take_batch([f], cfg)
        assert _row_groups(cfg.warehouse.path, "labs") == n  # one row each: not merged
    assert [o.status for o in take_batch(files[:1], cfg)] == ["skipped"]  # wrote nothing: not counted
    assert _row_groups(cfg.warehouse.path, "labs") == 3
    take_batch(files[3:4], cfg)  # the fourth batch that wrote: all merged
    assert _row_groups(cfg.warehouse.path, "labs") == 1
    take_batch(files[4:5], cfg)
    assert _row_groups(cfg.warehouse.path, "labs") == 2
    monkeypatch.setattr(writer, "VACUUM_FROM_ROWS", 2)  # one row now, one before: the rows say vacuum
    take_batch(files[5:6], cfg)
    assert _row_groups(cfg.warehouse.path, "labs") == 1
    write(inbox / "labs/6.csv", "lab_id,name\nL6,Lab 6\n")
    monkeypatch.setattr(writer, "VACUUM_FROM_ROWS", 1_000_000)
    take_batch([f for f in discover(inbox) if f.label.endswith("6.csv")], cfg)
    assert _row_groups(cfg.warehouse.path, "labs") == 2
    con = duckdb.connect(cfg.warehouse.path)
    try:  # merged on demand (a measurement's settled start), the count cleared
        writer.merge_tail_row_groups(con)
    finally:
        con.close()
    assert _row_groups(cfg.warehouse.path, "labs") == 1
    con = duckdb.connect(cfg.warehouse.path, read_only=True)
    try:
        assert con.sql("SELECT lab_id, name FROM labs ORDER BY 1").fetchall() == [(f"L{i}", f"Lab {i}") for i in range(7)]
        assert con.sql("SELECT value FROM warehouse_settings WHERE name = 'vacuum_debt'").fetchall() == [
            ('{"batches": 0, "rows": 0}',)]
    finally:
        con.close()
