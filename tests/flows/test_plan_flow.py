"""`tubetrail plan` (flow capacity-plan) through the CLI on the tiny called round with stock
counts, against the real Prefect server: exit 0 above the minimum, 1 under it, the --json
figures, and the stock_low alerts recorded once in the outbox however often it runs; a stock
file taken alone raises the timed stock alert too."""

import json

import duckdb
import pytest
from typer.testing import CliRunner

from tests.conftest import write
from tests.reporting.test_stock import COUNTS, DEPOT, HEADER, HP, stocked
from tubetrail.cli import app

pytestmark = pytest.mark.usefixtures("prefect_server")

AS_OF = "2022-04-05T14:00:00+08:00"


def plan(cfg, tmp_path, *args: str, min_days: float = 7.0):
    conf = write(tmp_path / f"plan-{min_days}.toml", f'[stock]\ndepots = ["{DEPOT}"]\nmin_days = {min_days}\n')
    return CliRunner().invoke(app, ["--config", str(conf), "--warehouse", str(cfg.warehouse.path), "plan", *args])


def outbox(cfg) -> list[tuple]:
    con = duckdb.connect(str(cfg.warehouse.path), read_only=True)
    try:
        return con.sql("SELECT subject, state, payload->>'$.facts.days_in_hand' FROM alert_outbox"
                       " WHERE kind = 'stock_low' ORDER BY subject").fetchall()
    finally:
        con.close()


def test_plan_exits_1_under_the_minimum_and_records_each_alert_once(called, tmp_path):  # noqa: F811
    cfg = stocked(called, tmp_path / "stock", COUNTS)
    first = plan(cfg, tmp_path, "--as-of", AS_OF, "--json")
    assert first.exit_code == 1, first.output
    figures = json.loads(first.stdout)
    assert (figures["round_id"], figures["round_choice"]) == ("R1", "the latest round (none open at as_of)")
    assert (figures["registered"], figures["tubes"], figures["tubes_pooled"], figures["tubes_single"]) == (16, 2, 2, 0)
    assert (figures["daily_capacity_tubes"], figures["hours_to_test"]) == (400, 0.1)
    swab = next(s for s in figures["stock"] if s["item"] == "swab")
    assert (swab["in_hand"], swab["days_in_hand"], swab["worst_holder"], swab["worst_days_in_hand"],
            swab["worst_under_minimum"]) == (1085, 67.81, HP, 5.31, True)
    assert swab["counted_at"] == "2022-04-04T10:00+08:00"
    assert [(u["holder"], u["item"]) for u in figures["under_minimum"]] == [
        ("city", "extraction_kit"), ("city", "box"), (HP, "swab"), (HP, "box")]
    assert figures["pool_advice"][0]["district"] == HP and figures["pool_advice"][0]["best_size"] == 20
    alerts = outbox(cfg)
    assert len(alerts) == 4 and {state for _, state, _ in alerts} == {"published"}
    assert sorted(days for *_, days in alerts) == ["4.0", "4.0", "5.31", "6.0"]

    again = plan(cfg, tmp_path, "--round", "R1", "--as-of", AS_OF)
    assert again.exit_code == 1
    assert "Days of whole-population testing in hand" in again.stdout and "under the minimum" in again.output
    assert outbox(cfg) == alerts  # the same counts: nothing recorded again


def test_plan_exits_0_above_the_minimum_and_2_for_an_unknown_round(called, tmp_path):  # noqa: F811
    cfg = stocked(called, tmp_path / "stock", COUNTS)
    fine = plan(cfg, tmp_path, "--as-of", AS_OF, "--json", min_days=1.0)
    assert fine.exit_code == 0, fine.output
    assert json.loads(fine.stdout)["under_minimum"] == [] and outbox(cfg) == []
    unknown = plan(cfg, tmp_path, "--round", "R9", "--as-of", AS_OF)
    assert unknown.exit_code == 2 and "round R9 is not open" in unknown.output


def test_a_stock_file_taken_alone_raises_the_stock_alert(called, tmp_path):  # noqa: F811
    from flows.ingest import ingest_inbox

    cfg = stocked(called, tmp_path / "stock", COUNTS)
    write(tmp_path / "late/stock/s.csv", f"{HEADER}\n2022-04-05T12:00:00+08:00,L1,extraction_kit,0,\n")
    outcomes = ingest_inbox(str(tmp_path / "late"), None, str(cfg.warehouse.path))
    assert [(o.kind, o.status) for o in outcomes] == [("stock", "accepted")]
    subjects = [s for s, *_ in outbox(cfg)]
    # judged at the latest fact (the count at 12:00): L1 has no extraction reactions left; the
    # depot is not configured in this run's (default) configuration, so it is no holder
    assert "L1:extraction_kit:20220405T0400Z" in subjects and all(state == "published" for _, state, _ in outbox(cfg))
