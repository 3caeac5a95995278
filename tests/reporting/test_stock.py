"""Reagents and consumables (reporting/stock.py): the stock/ feed's rules on tiny frames and through
the real ingest (quarantine, the unknown-holder warning, a re-sent count and its audit), what is
used since a count, in hand, one round's need and days in hand on a tiny warehouse with known
numbers, the need of a scope at its zones' pool sizes, the stock_low rule, and stock.parquet in
the report."""

from kernel.config import replace
from datetime import datetime, timedelta

import polars as pl

from ingest.take import take_file
from reporting.stock import (ITEMS, STOCK_FRAME_COLUMNS, UNKNOWN_HOLDER, check_stock, stock_dashboard_lines,
                             stock_frame, stock_low_alerts)
from tests.conftest import write
from tests.builders import AS_OF, REGISTER_HEADER, SH, ingest, query, register_row, ric
from kernel.config import Config
from kernel.rules import LINE
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse
from ingest.discover import discover
from warehouse.writer import open_round

HEADER = "at,holder,item,quantity,tests_per_unit"
DEPOT = "市仓库"
HP = "黄浦区"


def frame(*rows: tuple) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(HEADER.split(","), r), **{LINE: i + 2}) for i, r in enumerate(rows)],
                        schema={**{c: pl.Utf8 for c in HEADER.split(",")}, LINE: pl.Int64})


def test_every_row_rule_of_the_stock_feed():
    checked = check_stock(frame(
        ("2022-04-04T10:00:00", "L1", "Reagent_Kit ", " 20", "48"),     # 2 accepted: naive = city time
        ("2022-04-04T10:00:00+00:00", HP, "swab", "0", ""),             # 3 accepted: 0 is a count, default 1
        ("", "L1", "swab", "1", ""),                                     # 4 missing at
        ("yesterday", "L1", "swab", "1", ""),                            # 5 not a time
        ("2022-04-04T10:00", " ", "swab", "1", ""),                      # 6 missing holder
        ("2022-04-04T10:00", "L1", "pipette", "1", ""),                  # 7 unknown item
        ("2022-04-04T10:00", "L1", "swab", "-3", ""),                    # 8 negative
        ("2022-04-04T10:00", "L1", "swab", "2.5", ""),                   # 9 not whole
        ("2022-04-04T10:00", "L1", "swab", "", ""),                      # 10 missing quantity
        ("2022-04-04T10:00", "L1", "reagent_kit", "3", "0"),             # 11 tests_per_unit 0
        ("2022-04-04T10:00", "L1", "reagent_kit", "3", "many"),          # 12 tests_per_unit text
        ("2022-04-04T10:00", "City", "swab", "3", ""),                   # 13 the total's name
        ("2022-04-04T10:00", "L\u200b1", "swab", "3", ""),               # 14 invisible character
    ), timezone="Asia/Shanghai")
    reasons = dict(checked.quarantined.select(LINE, "reason").iter_rows())
    assert reasons == {
        4: "missing at", 5: "at not an ISO 8601 time", 6: "missing holder",
        7: "item not one of box, extraction_kit, reagent_kit, swab, tube_pooled, tube_single",
        8: "quantity not a whole number of 0 or more", 9: "quantity not a whole number of 0 or more",
        10: "missing quantity", 11: "tests_per_unit not a whole number of 1 or more",
        12: "tests_per_unit not a whole number of 1 or more", 13: "holder 'city' names the city's total, not a holder",
        14: "holder holds a control or invisible character",
    }
    good = checked.accepted.to_dicts()
    assert [(r["holder"], r["item"], r["quantity"], r["tests_per_unit"], r[LINE]) for r in good] == [
        ("L1", "reagent_kit", 20, 48, 2), (HP, "swab", 0, 1, 3)]
    assert good[0]["at"] == datetime(2022, 4, 4, 10, tzinfo=SH) and good[1]["at"] == datetime(2022, 4, 4, 18, tzinfo=SH)



def test_the_feed_quarantines_warns_and_takes_a_re_sent_count_once(tmp_path, cfg):
    cfg = replace(cfg, stock=replace(cfg.stock, depots=(DEPOT,)))
    inbox = tmp_path / "in"
    write(inbox / "sites/s.csv", f"site_id,name,district\nS1,One,{HP}\n")
    write(inbox / "labs/l.csv", "lab_id,name,daily_capacity_tubes\nL1,Lab1,100\n")
    write(inbox / "stock/a.csv", "\n".join([
        HEADER,
        f"2022-04-04T06:00:00+08:00,{HP},swab,100,",      # 2
        "2022-04-04T06:00:00+08:00,L1,reagent_kit,2,48",   # 3
        f"2022-04-04T06:00:00+08:00,{DEPOT},swab,500,",   # 4 a configured depot
        "2022-04-04T06:00:00+08:00,L7,reagent_kit,9,",     # 5 kept with a warning: no such lab
        "2022-04-04T06:00:00+08:00,L1,reagent_kit,2,48",   # 6 the same as 3: a duplicate row
        "2022-04-04T06:00:00+08:00,L1,swab,-1,",           # 7 negative
    ]) + "\n")
    outcomes = [take_file(f, cfg) for f in discover(inbox)]
    stock = outcomes[-1]
    assert (stock.kind, stock.status, stock.rows_read, stock.rows_accepted, stock.rows_quarantined) == (
        "stock", "accepted", 6, 4, 2)
    assert stock.warnings == {UNKNOWN_HOLDER.name: 1}
    assert query(cfg, "SELECT line, reason FROM quarantine ORDER BY line") == [
        (3, "duplicate row (same as line 6)"), (7, "quantity not a whole number of 0 or more")]
    assert query(cfg, "SELECT warnings FROM ingest_ledger WHERE kind = 'stock'") == [(f'{{"{UNKNOWN_HOLDER.name}": 1}}',)]
    # the count sent again by a later file: taken once, the later quantity wins, the change audited
    write(inbox / "stock/b.csv", f"{HEADER}\n2022-04-04T06:00:00+08:00,{HP},swab,90,\n"
                                 "2022-04-04T06:00:00+08:00,L1,reagent_kit,2,48\n")
    again = take_file(discover(inbox)[-1], cfg)
    assert (again.status, again.rows_accepted, again.warnings) == ("accepted", 2, {})
    assert query(cfg, "SELECT holder, item, quantity, tests_per_unit, source_line FROM stock_counts ORDER BY holder") == [
        ("L1", "reagent_kit", 2, 48, 6), ("L7", "reagent_kit", 9, 1, 5), (DEPOT, "swab", 500, 1, 4), (HP, "swab", 90, 1, 2)]
    audit = query(cfg, "SELECT entity, action, before->>'quantity', after->>'quantity' FROM audit WHERE entity = 'stock_counts'")
    assert audit == [("stock_counts", "amend", "100", "90")]  # the unchanged reagent count is not amended
    assert query(cfg, "SELECT count(*) FROM stock_counts") == [(4,)]


def stocked(cfg, root, counts: str, min_days: float = 7.0) -> Config:
    """The called round (tests/builders.py) with lab capacities and a stock file."""
    cfg = replace(cfg, stock=replace(cfg.stock, depots=(DEPOT,), min_days=min_days))
    write(root / "labs/l.csv", "lab_id,name,daily_capacity_tubes\nL1,Lab1,100\nL2,Lab2,300\n")
    write(root / "stock/s.csv", HEADER + "\n" + counts)
    ingest(root, cfg)
    return cfg


COUNTS = "\n".join([
    f"2022-04-04T10:00:00,{HP},swab,100,", f"2022-04-04T10:00:00,{HP},tube_pooled,50,",
    f"2022-04-04T10:00:00,{HP},tube_single,20,", f"2022-04-04T10:00:00,{HP},box,5,",
    "2022-04-04T10:00:00,L1,reagent_kit,2,48", "2022-04-04T10:00:00,L1,extraction_kit,1,50",
    f"2022-04-04T10:00:00,{DEPOT},swab,1000,"]) + "\n"


def frame_at(cfg, as_of, round_id="R1"):
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        return stock_frame(con, cfg, round_id, as_of)


def test_used_since_in_hand_need_and_days_on_a_tiny_warehouse(called, tmp_path):  # noqa: F811
    cfg = stocked(called, tmp_path / "stock", COUNTS)
    got = frame_at(cfg, AS_OF)
    assert tuple(got.columns) == STOCK_FRAME_COLUMNS
    rows = {(r["holder"], r["item"]): r for r in got.iter_rows(named=True)}
    # the round: 15 people added at 11:00 to 12 tubes (10 pooled of 10, 2 single) at S1 (黄浦区), one
    # box packed at 12:00; lab L1 read 26 wells (4 plates, controls included)
    used = {(h, i): (r["last_count"], r["used_since"], r["in_hand"]) for (h, i), r in rows.items()}
    assert used == {
        (HP, "swab"): (100, 15, 85), (HP, "tube_pooled"): (50, 10, 40), (HP, "tube_single"): (20, 2, 18),
        (HP, "box"): (5, 1, 4), ("L1", "reagent_kit"): (96, 26, 70), ("L1", "extraction_kit"): (50, 26, 24),
        (DEPOT, "swab"): (1000, 0, 1000),
        ("city", "swab"): (1100, 15, 1085), ("city", "tube_pooled"): (50, 10, 40), ("city", "tube_single"): (20, 2, 18),
        ("city", "box"): (5, 1, 4), ("city", "reagent_kit"): (96, 26, 70), ("city", "extraction_kit"): (50, 26, 24)}
    # one round: 16 registered, unzoned, pools of 10: 2 pooled tubes; reactions 2 + 2 controls of one
    # plate = 4, one box; L1 has 100 of the labs' 300 + 100 tubes a day: a quarter of the city's need
    need = {k: r["need_per_round"] for k, r in rows.items()}
    assert need[(HP, "swab")] == 16 and need[(HP, "tube_pooled")] == 2 and need[(HP, "tube_single")] == 0
    assert need[(HP, "box")] == 1 and need[("city", "reagent_kit")] == 4 and need[("L1", "reagent_kit")] == 1.0
    assert need[(DEPOT, "swab")] == 16
    days = {k: r["days_in_hand"] for k, r in rows.items()}
    assert days[(HP, "swab")] == 85 / 16 and days[(HP, "box")] == 4.0 and days[("L1", "extraction_kit")] == 24.0
    assert days[("city", "extraction_kit")] == 6.0 and days[("city", "swab")] == 1085 / 16
    assert days[(HP, "tube_single")] is None  # no single tube needed: no days to tell
    under = sorted(k for k, r in rows.items() if r["under_minimum"])
    assert under == [("city", "box"), ("city", "extraction_kit"), (HP, "box"), (HP, "swab")]
    assert [r["holder_kind"] for r in got.iter_rows(named=True)][:6] == ["city"] * 6
    # before the round's facts nothing is used; before the count there is nothing to judge
    early = frame_at(cfg, datetime(2022, 4, 4, 10, 30, tzinfo=SH))
    assert early.filter(pl.col("holder") == HP)["used_since"].to_list() == [0, 0, 0, 0]
    assert frame_at(cfg, datetime(2022, 4, 4, 9, tzinfo=SH)).is_empty()


def test_a_later_count_restarts_what_is_used_and_an_unknown_holder_is_kept_out_of_the_total(called, tmp_path):  # noqa: F811
    cfg = stocked(called, tmp_path / "stock", COUNTS + f"2022-04-04T15:00:00,{HP},swab,400,\n"
                                                       "2022-04-04T10:00:00,L9,reagent_kit,10,\n")
    rows = {(r["holder"], r["item"]): r for r in frame_at(cfg, AS_OF).iter_rows(named=True)}
    # the delivery counted at 15:00 is the last count: the swabs used at 11:00 are before it
    assert (rows[(HP, "swab")]["last_count"], rows[(HP, "swab")]["used_since"], rows[(HP, "swab")]["in_hand"]) == (400, 0, 400)
    assert rows[(HP, "swab")]["counted_at"] == datetime(2022, 4, 4, 15, tzinfo=SH)
    assert rows[("L9", "reagent_kit")]["holder_kind"] == "unknown" and rows[("L9", "reagent_kit")]["days_in_hand"] is None
    assert rows[("city", "reagent_kit")]["in_hand"] == 70  # L9's 10 are not the city's until L9 is known


def test_the_stock_low_rule_alerts_once_per_count_and_again_for_a_new_count(called, tmp_path):  # noqa: F811
    cfg = stocked(called, tmp_path / "stock", COUNTS)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        first = stock_low_alerts(con, cfg, AS_OF)
        later = stock_low_alerts(con, cfg, AS_OF + timedelta(hours=1))
        lines = stock_dashboard_lines(con, cfg, "R1", AS_OF)
        before = stock_low_alerts(con, cfg, datetime(2022, 4, 4, 9, tzinfo=SH))
    assert before == []
    ids = [a.alert_id for a in first]
    assert ids == ["stock_low:city:extraction_kit:20220404T0200Z", "stock_low:city:box:20220404T0200Z",
                   f"stock_low:{HP}:swab:20220404T0200Z", f"stock_low:{HP}:box:20220404T0200Z"]
    assert [a.alert_id for a in later] == ids  # the same counts: the same subjects, recorded once
    swab = first[2]
    assert swab.kind == "stock_low" and swab.round_id == "R1" and swab.raised_at == AS_OF
    assert swab.payload["resource"] == f"{HP}:swab"
    assert swab.payload["facts"] == {"holder": HP, "holder_kind": "district", "item": "swab", "unit": "swabs",
                                     "counted_at": "2022-04-04T02:00:00+00:00", "in_hand": 85, "used_since": 15,
                                     "need_per_round": 16.0, "days_in_hand": 5.31, "min_days": 7.0, "round_id": "R1"}
    assert "5.3 days" in swab.payload["title"]
    assert "| swab | 67.8 | 1,085 swabs | 黄浦区 | ⚠ 5.3 |" in lines and "| box | ⚠ 4.0 | 4 boxes | 黄浦区 | ⚠ 4.0 |" in lines
    # a new count of swabs, still short: a new subject, so it alerts again
    write(tmp_path / "more/stock/t.csv", f"{HEADER}\n2022-04-05T08:00:00,{HP},swab,90,\n")
    ingest(tmp_path / "more", cfg)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        again = [a.alert_id for a in stock_low_alerts(con, cfg, AS_OF)]
    assert f"stock_low:{HP}:swab:20220405T0000Z" in again


def test_the_scope_needs_the_tubes_of_its_zones_pool_sizes(tmp_path, cfg):
    """G1 sealed: household HA (3), HB (1), one without household; G2 controlled: 7 people; G3
    unzoned: 11 people and a key-group member. G4 is outside the round's scope."""
    people = ([("G1", "HA", "")] * 3 + [("G1", "HB", ""), ("G1", "", "")] + [("G2", "HC", "")] * 7
              + [("G3", "HD", "")] * 11 + [("G3", "HD", "medical")])
    rows = [register_row(ric(f"31010119900101{i:03d}"), grid=grid, key_group=key).replace(",H1,", f",{house},")
            for i, (grid, house, key) in enumerate(people)]
    rows.append(register_row(ric("31010119900102001"), grid="G4").replace(",黄浦区,", ",静安区,"))
    write(tmp_path / "in/register/r.csv", REGISTER_HEADER + "\n" + "\n".join(rows) + "\n")
    write(tmp_path / "in/zones/z.csv", "grid,zone,since\nG1,sealed,\nG2,controlled,\nG3,controlled,2022-04-10T00:00\n")
    ingest(tmp_path / "in", cfg)

    def need(pool_size, as_of=AS_OF, sealed="household"):
        cfg2 = replace(cfg, pool_policy=replace(cfg.pool_policy, sealed=sealed))
        with open_warehouse(cfg2.warehouse.path, id_hash_key()) as con:
            con.execute("DELETE FROM rounds")
            open_round(con, round_id="R", starts_at=AS_OF - timedelta(hours=6), ends_at=AS_OF + timedelta(hours=6),
                       districts=[HP], pool_size=pool_size, run_id=None)
            define_views(con, cfg2)
            return con.execute("SELECT district, registered, tubes_pooled, tubes_single FROM scope_need('R', ?)",
                               [as_of]).fetchall()

    # sealed: HA one pooled tube, HB and the one without a household single; controlled: 7 in
    # tubes of 5 = 2 pooled; unzoned: 11 in tubes of 10 = 2 pooled, the key-group member single
    assert need(10) == [(HP, 24, 5, 3)]
    assert need(20) == [(HP, 24, 4, 3)]
    assert need(10, sealed="single") == [(HP, 24, 4, 6)]  # the five of G1 each a single tube
    # from 10 April G3 is controlled too: 11 in tubes of 5 = 3
    assert need(10, as_of=datetime(2022, 4, 11, tzinfo=SH)) == [(HP, 24, 6, 3)]


def test_the_report_writes_stock_and_pool_advice(called, tmp_path):  # noqa: F811
    from reporting.html import SECTIONS
    from reporting.report import write_report
    from sampling.pool_advice import ADVICE_COLUMNS

    cfg = stocked(called, tmp_path / "stock", COUNTS)
    out = tmp_path / "out"
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        figures = write_report(con, cfg, "R1", AS_OF, out)
    assert {"stock.parquet", "pool_advice.parquet"} <= set(figures.files)
    stock = pl.read_parquet(out / "stock.parquet")
    assert tuple(stock.columns) == STOCK_FRAME_COLUMNS
    assert str(stock.schema["counted_at"]) == "Datetime(time_unit='us', time_zone='Asia/Shanghai')"
    hp = stock.filter((pl.col("holder") == HP) & (pl.col("item") == "swab")).row(0, named=True)
    assert (hp["in_hand"], hp["need_per_round"], hp["under_minimum"]) == (85, 16.0, True)
    assert sorted(stock.filter(pl.col("holder") == "city")["item"].to_list()) == sorted(ITEMS)
    advice = pl.read_parquet(out / "pool_advice.parquet")
    assert tuple(advice.columns) == ADVICE_COLUMNS and advice["district"].to_list() == [HP]
    assert figures.plan["tubes"] == 2 and figures.plan["hours_to_test"] == 0.1  # 2 tubes at 400 a day
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Stock and capacity" in SECTIONS and "Pool-size advice" in SECTIONS
    assert "<h2>Stock and capacity</h2>" in html and "<h2>Pool-size advice</h2>" in html
    assert "Under the minimum: extraction_kit at city (6.0 days)" in html
    assert 'swab at <span lang="zh">黄浦区</span> (5.3 days)' in html
