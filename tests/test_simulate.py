"""The simulated city: deterministic, complete, and every injected fault found by the pipeline."""

import hashlib
import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from stdnum.cn import ric as stdnum_ric

from ingest.take import take_file
from lab.custody import MANIFEST_REQUIRED, RECEIPT_REQUIRED
from lab.labs import LAB_REQUIRED
from sampling.register import REQUIRED as REGISTER_REQUIRED
from sampling.scans import REQUIRED as SCAN_REQUIRED
from sampling.sites import SITE_REQUIRED, ZONE_REQUIRED
from tests.builders import open_simulated_round
from kernel.config import Config
from kernel.secrets import id_hash_key
from devtools.simcity import simulate_city
from warehouse.views import define_views
from warehouse.connection import open_warehouse
from ingest.discover import discover

RESIDENTS = 6000


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("city") / "inbox"
    simulate_city(RESIDENTS, out, seed=7)
    return out


@pytest.fixture(scope="module")
def ingested(city, tmp_path_factory):
    cfg = Config().with_warehouse(tmp_path_factory.mktemp("wh") / "city.duckdb")
    open_simulated_round(cfg, json.loads((city / "_truth.json").read_text()))
    outcomes = [take_file(f, cfg) for f in discover(city)]
    return cfg, outcomes


@pytest.fixture(scope="module")
def city_report(ingested, tmp_path_factory) -> Path:
    """The nightly report of the ingested city, written once for the tests that read it (the
    district-pack test adds ``districts/`` to it; the others read only the report's own files)."""
    from reporting.report import write_report

    cfg, _ = ingested
    out = tmp_path_factory.mktemp("report") / "report"
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        write_report(con, cfg, "R20220404", datetime.fromisoformat("2022-04-06T12:00:00+08:00"), out)
    return out


def test_same_seed_same_bytes_other_seed_other_city(city, tmp_path):
    again = tmp_path / "again"
    simulate_city(RESIDENTS, again, seed=7)
    assert digest(again) == digest(city)
    other = tmp_path / "other"
    simulate_city(RESIDENTS, other, seed=8)
    assert digest(other)["register/register_310115.csv"] != digest(city)["register/register_310115.csv"]


def test_every_kind_with_its_required_columns(city):
    required = {"register": REGISTER_REQUIRED, "sites": SITE_REQUIRED, "labs": LAB_REQUIRED, "zones": ZONE_REQUIRED,
                "scans": SCAN_REQUIRED, "manifests": MANIFEST_REQUIRED, "receipts": RECEIPT_REQUIRED}
    for kind, columns in required.items():
        files = sorted((city / kind).rglob("*.csv"))
        assert files, kind
        header = files[0].read_text(encoding="utf-8").splitlines()[0].split(",")
        assert set(columns) <= set(header), kind
    results = sorted((city / "results").rglob("*"))
    texts = [p.read_text(encoding="utf-8") for p in results if p.is_file()]
    assert any(t.startswith("lab_id,run_id,plate_id,well,sample,target,ct") for t in texts)
    assert any("[Results]" in t and "* Experiment Barcode = " in t for t in texts)  # QuantStudio layout
    assert any(t.startswith(",Well,Fluor,Target,Content,Sample") for t in texts)  # CFX Maestro layout


def test_ric_check_digits_are_real_except_the_injected_ones(city):
    truth = json.loads((city / "_truth.json").read_text())["register"]
    reg = pl.concat([pl.read_csv(p, infer_schema=False) for p in (city / "register").glob("register_3*.csv")])
    reg = reg.filter(pl.col("id_type") == "RIC")
    numbers = reg["id_number"].str.to_uppercase().to_list()
    wrong = sum(stdnum_ric.calc_check_digit(n) != n[-1] for n in numbers)
    assert wrong == truth["bad_check_digits"] > 0


def test_untested_remainder_is_about_a_tenth_and_skewed(city):
    truth = json.loads((city / "_truth.json").read_text())
    registered = truth["register"]["people_registered"]
    untested = registered - truth["scans"]["registered_sampled_people"]
    assert 0.06 < untested / registered < 0.14


def test_the_pipeline_finds_every_injected_fault(city, ingested):
    truth = json.loads((city / "_truth.json").read_text())
    cfg, outcomes = ingested
    assert all(o.status == "accepted" for o in outcomes)
    quarantined: dict[tuple[str, str], int] = {}
    for o in outcomes:
        assert o.rows_read == o.rows_accepted + o.rows_quarantined
        for reason, n in o.quarantined_by_reason.items():
            quarantined[(o.kind, reason)] = quarantined.get((o.kind, reason), 0) + n
    reg = truth["register"]
    assert quarantined[("register", "RIC check digit wrong (GB 11643)")] == reg["bad_check_digits"]
    assert quarantined[("register", "RIC birth date not a real date")] == reg["bad_birth_dates"]
    assert quarantined[("register", "missing grid")] == reg["missing_area"]
    assert quarantined[("register", "duplicate row")] == reg["exact_duplicates"]
    # every re-sample, scanned the next morning, finds the order its tube raised: none is left outside the round
    assert ("scans", "scanned outside every open round") not in quarantined

    as_of = datetime.fromisoformat("2022-04-05T12:00:00+08:00")
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        assert con.sql("SELECT count(*) FROM register").fetchall() == [(reg["people_registered"],)]
        assert con.sql("SELECT count(*) FROM audit WHERE entity = 'register'").fetchall() == [(reg["conflicting_duplicates"],)]
        # the update files come later and win: every amended person holds the new address
        assert con.sql("SELECT count(*) FROM register WHERE address LIKE '%(新)'").fetchall() == [(reg["conflicting_duplicates"],)]
        status = dict(con.execute("SELECT status, count(*) FROM person_status('R20220404', ?) GROUP BY 1", [as_of]).fetchall())
        anomalies = dict(con.execute(
            "SELECT kind, count(*) FROM (SELECT kind FROM tube_anomalies UNION ALL"
            " SELECT kind FROM custody_anomalies(?)) GROUP BY 1", [as_of]).fetchall())
        boxes = dict(con.execute("SELECT kind, list(box_id ORDER BY box_id) FROM custody_anomalies(?)"
                                 " WHERE kind IN ('wrong_lab', 'box_lost') GROUP BY 1", [as_of]).fetchall())
        tubes = dict(con.execute("SELECT kind, list(tube_barcode ORDER BY tube_barcode) FROM custody_anomalies(?)"
                                 " WHERE kind = 'not_on_manifest' GROUP BY 1", [as_of]).fetchall())
        refused = dict(con.sql("SELECT condition, count(*) FROM custody WHERE refused GROUP BY 1").fetchall())
        visitors = con.sql("SELECT count(DISTINCT person_key) FROM tube_members ANTI JOIN register USING (person_key)").fetchall()
        orders = dict(con.execute("SELECT reason, count(DISTINCT person_key) FROM resample_orders(?) GROUP BY 1", [as_of]).fetchall())
    scans, custody = truth["scans"], truth["custody"]
    assert status["untested"] == reg["people_registered"] - scans["registered_sampled_people"]
    assert sum(status.get(s, 0) for s in ("sampled", "negative", "positive", "pool_positive", "resample")) == \
        scans["registered_sampled_people"]
    assert anomalies["over_capacity"] == scans["over_full_tubes"]
    assert anomalies["above_zone_policy"] == scans["over_policy_tubes"]
    assert anomalies["add_after_seal"] == scans["adds_after_seal_tubes"]
    assert anomalies["unsealed_at_round_end"] == scans["unsealed_tubes"]
    assert anomalies["tube_lost"] == custody["lost_tubes"] + scans["unsealed_tubes"]
    assert anomalies["received_not_collected"] == len(custody["received_not_collected_tubes"])
    assert boxes["wrong_lab"] == custody["wrong_lab_box_ids"]
    assert boxes["box_lost"] == sorted(custody["lost_box_ids"])  # every box the city lost, and no other
    assert tubes["not_on_manifest"] == custody["not_on_manifest_tubes"]
    assert refused == custody["refused_tubes_by_condition"]
    assert visitors == [(scans["visitors_outside_register"],)]
    assert orders["tube_refused"] + orders["tube_lost"] == (
        truth["resamples"]["by_reason"]["tube_refused"] + truth["resamples"]["by_reason"]["tube_lost"])


def test_a_scan_file_in_50_parts_gives_the_same_tubes(city, tmp_path):
    """Sites upload every few minutes: 50 small files must give what one big file gives."""
    big = max((city / "scans").rglob("*.csv"), key=lambda p: p.stat().st_size)
    lines = big.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    assert len(rows) >= 50

    def snapshot(parts: int) -> tuple:
        root = tmp_path / f"parts{parts}"
        for kind in ("sites", "labs", "zones", "register"):
            for p in (city / kind).rglob("*.csv"):
                target = root / p.relative_to(city)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(p.read_bytes())
        size = -(-len(rows) // parts)
        for n in range(parts):
            chunk = rows[n * size:(n + 1) * size]
            if chunk:
                (root / "scans").mkdir(parents=True, exist_ok=True)
                (root / "scans" / f"part{n:02d}.csv").write_text("\n".join([header, *chunk]) + "\n", encoding="utf-8")
        cfg = Config().with_warehouse(tmp_path / f"parts{parts}.duckdb")
        open_simulated_round(cfg, json.loads((city / "_truth.json").read_text()), pool_size=10)
        taken = [take_file(f, cfg) for f in discover(root)]
        assert sum(o.kind == "scans" and o.status == "accepted" for o in taken) == min(parts, len(rows))
        with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
            define_views(con, cfg)
            return (con.sql("SELECT * EXCLUDE (person_key) FROM tube_members ORDER BY ALL").fetchall(),
                    con.sql("SELECT * FROM tubes ORDER BY ALL").fetchall(),
                    con.sql("SELECT * FROM tube_anomalies ORDER BY ALL").fetchall())

    one = snapshot(1)
    assert one[0] and one[1]
    assert snapshot(50) == one


def test_results_are_taken_as_facts(city, ingested):
    from lab.instruments import parse_export

    cfg, outcomes = ingested
    taken = [o for o in outcomes if o.kind == "results"]
    assert taken and all(o.status == "accepted" and o.rows_quarantined == 0 for o in taken)
    expected = sum(parse_export(p).records.height for p in (city / "results").rglob("*") if p.is_file())
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        rows = con.sql("SELECT count(*), count(DISTINCT lab_id), count(*) FILTER (WHERE ct IS NULL) FROM results").fetchall()[0]
        formats = {r[0] for r in con.sql("SELECT DISTINCT source_format FROM results").fetchall()}
    assert rows[0] == expected and rows[1] >= 3 and 0 < rows[2] < rows[0]
    assert formats == {"generic_csv", "quantstudio", "cfx_maestro"}


def test_every_simulated_results_file_parses(city):
    from lab.instruments import parse_export

    formats = set()
    for path in sorted((city / "results").rglob("*")):
        if path.is_file():
            parsed = parse_export(path)
            formats.add(parsed.format)
            assert parsed.rejects.height == 0, path.name
            assert parsed.records.height > 0
    assert formats == {"generic_csv", "quantstudio", "cfx_maestro"}


def test_calls_pools_and_resamples_match_what_the_city_injected(city, ingested):
    """Every positive pool, invalid plate, grey-zone re-run, single target and twice-invalid tube
    the simulator injected is found by calling, and the single re-samples resolve the people."""
    truth = json.loads((city / "_truth.json").read_text())
    res, resamples = truth["results"], truth["resamples"]
    cfg, _ = ingested
    day_after = datetime.fromisoformat("2022-04-06T12:00:00+08:00")
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        calls = pl.from_arrow(con.sql(
            "SELECT k.tube_barcode, k.call, k.first_call, c.capacity, c.resample FROM tube_calls($as_of) k"
            " JOIN custody c USING (tube_barcode)", params={"as_of": day_after}).to_arrow_table())
        failed = sorted(r[0] for r in con.sql("SELECT plate_id FROM plate_qc WHERE NOT valid").fetchall())
        clashes = con.execute("SELECT count(*) FROM lab_anomalies(?) WHERE kind <> 'plate_invalid'", [day_after]).fetchall()
        orders = dict(con.execute("SELECT reason, count(DISTINCT person_key) FROM resample_orders(?) GROUP BY 1",
                                  [day_after]).fetchall())
        open_orders = con.execute("SELECT count(*) FROM resample_orders(?) WHERE NOT fulfilled"
                                  " AND reason IN ('pool_positive', 'single_target', 'invalid')", [day_after]).fetchall()
        status = dict(con.execute("SELECT status, count(*) FROM person_status('R20220404', ?) GROUP BY 1",
                                  [day_after]).fetchall())
    first = calls.filter(~pl.col("resample"))
    pools = first.filter((pl.col("capacity") > 1) & pl.col("call").is_in(["positive", "single_target"]))
    singles = first.filter((pl.col("capacity") == 1) & pl.col("call").is_in(["positive", "single_target"]))
    assert sorted(pools["tube_barcode"]) == res["positive_pool_tubes"]
    assert sorted(singles["tube_barcode"]) == res["positive_single_tubes"]
    assert failed == res["failed_plate_ids"]
    assert clashes == [(0,)]  # every well holds one sample, every sample was scanned
    assert first.filter(pl.col("first_call") == "grey").height == res["grey_zone_tubes"]
    single_first = first.filter(pl.col("first_call") == "single_target")
    assert single_first.filter(pl.col("call") == "single_target").height == res["single_target_tubes"]["persisting"]
    assert single_first.filter(pl.col("call") == "negative").height == res["single_target_tubes"]["resolved"]
    assert first.filter(pl.col("first_call") == "invalid").height == res["invalid_tubes"]
    assert sorted(first.filter(pl.col("call") == "invalid")["tube_barcode"]) == res["twice_invalid_tubes"]
    assert first.filter(pl.col("call") == "rerun").height == 0  # every re-run the city needed came back
    # pools to people: one urgent order per member; the single re-samples fulfil every order
    assert orders.get("pool_positive", 0) + orders.get("single_target", 0) == resamples["by_reason"]["pool_positive"]
    assert orders.get("invalid", 0) == resamples["by_reason"].get("invalid", 0)
    assert open_orders == [(0,)]
    assert calls.filter(pl.col("resample") & (pl.col("call") == "positive")).height == resamples["positive_on_resample"]
    assert status.get("pool_positive", 0) == 0
    assert status["positive"] >= resamples["positive_on_resample"] + len(res["positive_single_tubes"])


def test_report_coverage_equals_a_direct_count_from_the_inbox(city, ingested, city_report):
    """Coverage per district from the report = people counted straight from the inbox's scan and
    receipt files (last add/void per tube wins; refused tubes do not count), registered ones."""
    cfg, _ = ingested
    out = city_report
    scans = pl.concat([pl.read_csv(p, infer_schema=False) for p in (city / "scans").rglob("*.csv")], how="diagonal")
    receipts = pl.concat([pl.read_csv(p, infer_schema=False) for p in (city / "receipts").rglob("*.csv")], how="diagonal")
    refused = receipts.filter(pl.col("condition").is_in(["leaked", "unlabelled", "insufficient"]))["tube_barcode"].unique()
    at = pl.col("scanned_at").str.replace(" ", "T")
    at = pl.when(at.str.contains(r"([+-]\d\d:\d\d|Z)$")).then(at).otherwise(at + "+08:00")  # no offset: city time
    people = (scans.filter(pl.col("event").is_in(["add", "void"]))
              .with_columns(pl.col("id_number").str.to_uppercase(), at.str.to_datetime("%Y-%m-%dT%H:%M:%S%z").alias("at"))
              .sort("at", pl.col("event") == "void")
              .group_by("tube_barcode", "id_type", "id_number").agg(pl.col("event").last())
              .filter((pl.col("event") == "add") & ~pl.col("tube_barcode").is_in(refused.implode())))
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        register = pl.from_arrow(con.sql("SELECT id_type, id_number, district FROM register").to_arrow_table())
    direct = (people.join(register, on=["id_type", "id_number"]).unique(["id_type", "id_number"])
              .group_by("district").len().sort("district"))
    rollup = pl.read_parquet(out / "coverage_rollup.parquet")
    by_district = rollup.filter(pl.col("level") == "district").select("district", pl.col("sampled").cast(pl.UInt32)).sort("district")
    assert by_district.rename({"sampled": "len"}).equals(direct)
    grids = pl.read_parquet(out / "coverage.parquet")
    assert list(grids.columns) == ["round_id", "district", "subdistrict", "community", "grid", "registered", "sampled",
                                   "resulted", "untested", "coverage", "outside_register"]
    city_row = rollup.filter(pl.col("level") == "city").row(0, named=True)
    assert city_row["registered"] == grids["registered"].sum() == truth_registered(city)
    assert city_row["sampled"] == grids["sampled"].sum() == direct["len"].sum()
    assert city_row["outside_register"] == json.loads((city / "_truth.json").read_text())["scans"]["visitors_outside_register"]


def truth_registered(city: Path) -> int:
    return json.loads((city / "_truth.json").read_text())["register"]["people_registered"]


def test_boxes_and_receipts_arrive_in_files_of_the_period_they_happened(city):
    """The demo plays files by the hour they happened: each district's manifests and receipts
    are cut by packing and receiving period (four hours for a small city), so boxes follow
    the scans through the round instead of arriving all at once."""
    for kind, column in (("manifests", "packed_at"), ("receipts", "received_at")):
        files = sorted((city / kind).glob("3*/*.csv"))
        assert len(files) > len(list((city / kind).glob("3*"))), kind  # more than one file per district
        for path in files:
            district, period = path.parent.name, path.stem.removeprefix(f"{kind}_{path.parent.name}_")
            times = pl.read_csv(path, infer_schema=False)[column].str.to_datetime("%Y-%m-%dT%H:%M:%S%:z") \
                .dt.convert_time_zone("Asia/Shanghai")
            assert path.stem.startswith(f"{kind}_{district}_")
            assert set((times.dt.strftime("%m%d_") + (times.dt.hour() // 4 * 4).cast(pl.Utf8).str.zfill(2) + "00")
                       .to_list()) == {period}, path.name


def test_district_packs_partition_the_city_report(city_report):
    """Each of the city's district packs is the report's rows of that district: together they
    hold every untested person and every order once (written here without Dask: the cut is
    the same function the fan-out's tasks call)."""
    from reporting.districts import UNKNOWN_DISTRICT, report_districts, write_district_pack

    out = city_report
    districts = report_districts(out)
    registered = pl.read_parquet(out / "coverage.parquet")["district"].unique().to_list()
    assert set(districts) - {UNKNOWN_DISTRICT} == set(registered) and len(registered) > 1
    packs = [write_district_pack(out, d) for d in districts]
    untested = pl.read_csv(out / "untested.csv", infer_schema=False)
    orders = pl.read_csv(out / "resample_orders.csv", infer_schema=False)
    in_packs = {name: pl.concat([pl.read_csv(out / "districts" / d / f"{name}.csv", infer_schema=False) for d in districts])
                for name in ("untested", "resample_orders")}
    assert in_packs["untested"].sort(untested.columns).equals(untested.sort(untested.columns))
    assert in_packs["resample_orders"].sort(orders.columns, nulls_last=True).equals(
        orders.sort(orders.columns, nulls_last=True))
    assert sum(p.untested for p in packs) == untested.height and sum(sum(p.orders.values()) for p in packs) == orders.height
    city_row = pl.read_parquet(out / "coverage_rollup.parquet").filter(pl.col("level") == "city").row(0, named=True)
    assert sum(p.registered for p in packs) == city_row["registered"] and sum(p.sampled for p in packs) == city_row["sampled"]


def test_orders_scoped_to_some_peoples_tubes_equal_the_city_wide_orders_of_those_people(ingested):
    """The round rule looks orders up with ``resample_orders(as_of, tubes := [...])`` (every tube
    of its people): the same orders as the city-wide macro, for those people."""
    from kernel.sql import sql_text_list

    cfg, _ = ingested
    as_of = "TIMESTAMPTZ '2022-04-06 12:00:00+08'"
    columns = "round_id, person_key::VARCHAR AS pk, reason, source_tube, priority, due_by, home_visit, fulfilled"
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        everyone = pl.from_arrow(con.sql(f"SELECT {columns} FROM resample_orders({as_of})").to_arrow_table())
        assert set(everyone["reason"]) >= {"pool_positive", "invalid", "tube_refused"}
        # every fourth person with an order, and every tube they were ever scanned into
        people = sorted(set(everyone["pk"]))[::4]
        tubes = [r[0] for r in con.sql(
            f"SELECT DISTINCT tube_barcode FROM scans WHERE person_key::VARCHAR IN (SELECT unnest({sql_text_list(people)}))"
        ).fetchall()]
        scoped = pl.from_arrow(con.sql(
            f"SELECT {columns} FROM resample_orders({as_of}, tubes := {sql_text_list(tubes)})").to_arrow_table())
    expected = everyone.filter(pl.col("pk").is_in(people))
    assert scoped.filter(pl.col("pk").is_in(people)).sort(scoped.columns).equals(expected.sort(expected.columns))
    assert expected.height > 0


def test_zones_and_areas_for_a_hundred_and_one_seeds():
    """Issue 12.10: building the zone column crashed on 39 of 101 seeds (a numpy object array of
    zone names and None that polars cannot cast)."""
    import numpy as np

    from devtools.simcity import _areas

    for seed in range(101):
        areas = _areas(20_000, np.random.default_rng(seed))
        assert areas["zone"].dtype == pl.Utf8
        assert set(areas["zone"].drop_nulls()) <= {"sealed", "controlled", "precaution"}


@pytest.mark.parametrize("seed", range(8))
def test_a_tiny_city_for_every_seed(seed, tmp_path):
    """Issue 12.10: a small district with a single box (no other box to move a tube into) crashed
    the custody faults on seeds 0, 1, 2, 4, 6 and 7."""
    result = simulate_city(300, tmp_path / "inbox", seed=seed)
    assert {"register", "sites", "labs", "scans", "manifests", "receipts", "results"} <= set(result.files)
    truth = json.loads((tmp_path / "inbox" / "_truth.json").read_text())
    assert truth["round"]["id"]


def test_tat_is_judged_by_the_times_things_happened(ingested):
    """Issue 13.2: "called → published" read 40,818 h in a replay (the ledger's wall-clock
    ingest time) and differed between two clean ingests. A call is published when the results
    file holding it was complete: its last run end."""
    from reporting.tat import define_tat_views

    cfg, _ = ingested
    as_of = datetime.fromisoformat("2022-04-06T12:00:00+08:00")
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        define_tat_views(con, cfg.tat)
        tat = pl.from_arrow(con.sql(f"SELECT * FROM tube_tat('R20220404', '{as_of.isoformat()}'::TIMESTAMPTZ)"
                                    " WHERE called_at IS NOT NULL").to_arrow_table())
    assert tat.height > 100
    assert tat["published_at"].null_count() == 0
    assert (tat["published_at"] >= tat["called_at"]).all()
    assert tat["published_at"].max() <= as_of
    assert 0 <= tat["called_to_published"].min() and tat["called_to_published"].max() < 24


def test_the_simulated_stock_counts_a_delivery_a_bad_row_an_unknown_holder_and_one_item_short(city, ingested):
    from kernel.config import replace

    from reporting.stock import UNKNOWN_HOLDER, stock_frame

    truth = json.loads((city / "_truth.json").read_text())["stock"]
    cfg, outcomes = ingested
    stock = [o for o in outcomes if o.kind == "stock"]
    assert [o.status for o in stock] == ["accepted", "accepted"]
    assert sum(o.rows_read for o in stock) == truth["rows"] and sum(o.rows_quarantined for o in stock) == 1
    assert stock[0].quarantined_by_reason == {"quantity not a whole number of 0 or more": 1}
    # this run's configuration names no depot: the depot's six rows are unknown holders too
    assert stock[0].warnings == {UNKNOWN_HOLDER.name: 6 + len(truth["unknown_holders"])}
    cfg = replace(cfg, stock=replace(cfg.stock, depots=(truth["depot"],)))
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        frame = stock_frame(con, cfg, "R20220404", datetime.fromisoformat("2022-04-05T12:00:00+08:00"))
    under = frame.filter(pl.col("under_minimum")).select("holder", "item").rows()
    assert [list(r) for r in under] == truth["under_minimum"]
    assert frame.filter(pl.col("holder_kind") == "unknown")["holder"].unique().to_list() == truth["unknown_holders"]
    districts = frame.filter((pl.col("holder_kind") == "district") & (pl.col("item") == "swab"))
    assert districts.height == 16 and districts["counted_at"].unique().to_list() == [
        datetime.fromisoformat("2022-04-04T14:00:00+08:00")]  # the delivery is the last count
    assert (districts["used_since"] > 0).all()  # re-samples the next morning used swabs after it


# --- issue 15: bounded memory -----------------------------------------------------------------------

def test_a_report_under_a_tiny_memory_limit_spills_and_writes_the_same_files(ingested, tmp_path):
    """The report at DuckDB's default-sized limit and at a limit far below what the report's
    operators take at once (DuckDB spills into the configured temp directory as it needs):
    every file of the report (and of the district packs) is the same, byte for byte."""
    from kernel.config import replace

    from reporting.districts import report_districts, write_district_pack
    from reporting.report import write_report
    from warehouse.connection import open_configured

    cfg, _ = ingested
    as_of = datetime.fromisoformat("2022-04-06T12:00:00+08:00")
    spill = tmp_path / "spill"
    # 128 MB: about 10× this city's tables, below what the report's operators take at once (at
    # 96 MB DuckDB gives up: what it cannot spill, per thread, no longer fits)
    tiny = replace(cfg, warehouse=replace(cfg.warehouse, memory_limit="128MB", temp_directory=str(spill),
                                          max_temp_directory_size="2GB"))
    outs, spilled = {}, {}
    for name, each in (("default", cfg), ("tiny", tiny)):
        out = outs[name] = tmp_path / name
        with open_configured(each.warehouse, id_hash_key()) as con:
            assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == str(each.warehouse.spill_directory())
            con.execute("SET threads = 2")  # what a thread holds unspilled scales with the threads: as on this machine
            define_views(con, each, snapshot=True)
            write_report(con, each, "R20220404", as_of, out)
            # DuckDB deletes a spill file once its operator is done, so what is left at the end
            # says nothing; the limit the report ran under does
            spilled[name] = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        for district in report_districts(out):
            write_district_pack(out, district)
    amount, unit = spilled["tiny"].split()
    assert unit == "MiB" and float(amount) < 128, spilled  # 128 MB as DuckDB counts it: 122 MiB
    assert digest(outs["tiny"]) == digest(outs["default"])


def test_the_simulate_command_takes_its_pool_sizes_from_the_configuration(tmp_path):
    """Issue 16.3: the sizes are ``[pool_policy] allowed_sizes`` (what ``round open`` checks and
    the pool-size advice chooses among), the default ``default_size``; none is written in the CLI."""
    from typer.testing import CliRunner

    from tubetrail.cli import add_plugin_commands, app

    add_plugin_commands(app)  # `simulate` is a devtools command
    conf = tmp_path / "c.toml"
    conf.write_text("[pool_policy]\ndefault_size = 8\nallowed_sizes = [1, 4, 8]\ncontrolled_size = 4\n")
    refused = CliRunner().invoke(app, ["--config", str(conf), "simulate", "--residents", "100", "--out",
                                       str(tmp_path / "x"), "--pool-size", "10"])
    assert refused.exit_code == 2 and "--pool-size must be 1, 4 or 8" in refused.output
    assert not (tmp_path / "x").exists()
    done = CliRunner().invoke(app, ["--config", str(conf), "simulate", "--residents", "100", "--out", str(tmp_path / "in")])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "in" / "_truth.json").read_text())["round"]["pool_size"] == 8
    (tmp_path / "empty.toml").write_text("")  # the built-in policy: 1, 5, 10, 20
    default = CliRunner().invoke(app, ["--config", str(tmp_path / "empty.toml"), "simulate", "--residents", "100",
                                       "--out", str(tmp_path / "y"), "--pool-size", "7"])
    assert default.exit_code == 2 and "--pool-size must be 1, 5, 10 or 20" in default.output


def test_report_people_files_are_in_district_grid_and_id_order(ingested, city_report):
    """Person status, the untested and the door-to-door list are written by district, grid and
    ID number (the grids ranked once, then the whole city sorted by that rank and the ID)."""
    cfg, _ = ingested
    out = city_report
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        register = pl.from_arrow(con.sql("SELECT id_type, id_number, district, grid FROM register").to_arrow_table())
    status = pl.read_parquet(out / "person_status.parquet").join(register, on=["id_type", "id_number"], how="left",
                                                                   maintain_order="left")
    assert status.height == register.height and status["district"].n_unique() > 1
    for name, people in (("person_status", status), ("untested", pl.read_parquet(out / "untested.parquet")),
                         ("door_to_door", pl.read_parquet(out / "door_to_door.parquet"))):
        keys = people.select("district", "grid", "id_number")
        assert people.height and keys.equals(keys.sort(keys.columns)), name


def test_report_runs_without_insertion_order_and_puts_the_setting_back(ingested, city_report, tmp_path, monkeypatch):
    """Issue 15: the report's plans need not keep insertion order (every file has its explicit
    order; keeping it took the 25.7 M report of a wave-built warehouse out of memory). The setting
    is off while the report's tables are made, back on afterwards, and the files are the same
    bytes as the module's report."""
    import hashlib

    import reporting.report as report

    cfg, _ = ingested
    seen = []
    frames = report.report_frames

    def spy(con, *args, **kwargs):
        seen.append(con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0])
        return frames(con, *args, **kwargs)

    monkeypatch.setattr(report, "report_frames", spy)
    out = tmp_path / "report"
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        report.write_report(con, cfg, "R20220404", datetime.fromisoformat("2022-04-06T12:00:00+08:00"), out)
        after = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    assert seen == [False] and after is True

    def files(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file() and "districts" not in p.parts}

    assert files(out) == files(city_report)
