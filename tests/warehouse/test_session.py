"""``warehouse.session.WarehouseSession``: the flows' one way into the warehouse. From the flows'
two parameters to the config with its warehouse path; the key checked before any work; reads
without the writer slot, writes inside it; the views defined when asked (live or as a snapshot)."""

from contextlib import contextmanager
from datetime import datetime, timezone

import duckdb
import pytest

from kernel.secrets import ID_HASH_KEY_ENV, MissingSecret
from warehouse.connection import WrongIdHashKey
from warehouse.session import WarehouseSession


def views_of(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def temp_tables_of(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()}


@pytest.fixture
def configured(tmp_path):
    conf = tmp_path / "tubetrail.toml"
    conf.write_text('[city]\ntimezone = "Europe/Berlin"\n[warehouse]\npath = "elsewhere.duckdb"\n', encoding="utf-8")
    held: list[str] = []

    def guard_of(cfg):
        @contextmanager
        def guard():
            held.append(cfg.warehouse.path)
            yield
            held.append("released")
        return guard

    session = WarehouseSession.configured(str(conf), str(tmp_path / "wh.duckdb"), write_guard=guard_of)
    return session, held


def test_the_parameters_make_the_config_and_the_warehouse_path_wins(configured, tmp_path):
    session, _ = configured
    assert session.cfg.city.timezone == "Europe/Berlin"  # the config file was read
    assert session.cfg.warehouse.path == str(tmp_path / "wh.duckdb")  # the flow's warehouse parameter wins
    assert repr(session.key) not in repr(session)  # the key never in a repr (logs, exceptions)


def test_a_read_takes_no_writer_slot_and_a_write_does(configured):
    session, held = configured
    with session.read() as con:
        assert held == []
        assert "tubes" not in views_of(con)  # no views unless asked
    with session.write() as con:
        assert held == [session.cfg.warehouse.path]
        con.execute("INSERT INTO warehouse_settings VALUES ('a test', 'written')")
    assert held[-1] == "released"
    with session.read() as con:
        assert con.execute("SELECT value FROM warehouse_settings WHERE name = 'a test'").fetchone() == ("written",)


def test_views_live_or_as_a_snapshot(configured):
    session, _ = configured
    with session.write(views=True) as con:
        assert {"tubes", "custody", "tube_members"} <= views_of(con)
        assert not {t for t in temp_tables_of(con) if t.endswith("_snapshot")}
    with session.read(views=True) as con:
        assert "tubes" in views_of(con) and not temp_tables_of(con)
    with session.read(snapshot=True) as con:
        assert {"tube_members_snapshot", "tubes_snapshot", "custody_snapshot", "tube_runs_snapshot"} <= temp_tables_of(con)
        assert con.execute("SELECT count(*) FROM tubes").fetchone() == (0,)
    with session.read() as con:  # views later in the same session, after a first look
        assert con.execute("SELECT count(*) FROM rounds").fetchone() == (0,)
        session.define_views(con, snapshot=True)
        assert "tubes_snapshot" in temp_tables_of(con)


def test_the_key_is_checked_before_any_work(tmp_path, monkeypatch):
    conf, warehouse = tmp_path / "tubetrail.toml", str(tmp_path / "wh.duckdb")
    conf.write_text("", encoding="utf-8")
    with WarehouseSession.configured(conf, warehouse).write() as con:  # made with the test key
        con.execute("SELECT 1")
    monkeypatch.delenv(ID_HASH_KEY_ENV)
    with pytest.raises(MissingSecret):
        WarehouseSession.configured(conf, warehouse)  # before any file is opened
    monkeypatch.setenv(ID_HASH_KEY_ENV, "another-key-of-enough-length")
    other = WarehouseSession.configured(conf, warehouse)
    with pytest.raises(WrongIdHashKey):
        with other.read():
            pass


def test_one_session_at_a_time_holds_the_file(configured):
    """Each read or write opens and closes: nothing stays open between them, so another process
    (here a plain connection) can open the file once the session is done."""
    session, _ = configured
    with session.write() as con:
        con.execute("INSERT INTO warehouse_settings VALUES ('at', ?)", [datetime(2022, 4, 4, tzinfo=timezone.utc)])
    other = duckdb.connect(session.cfg.warehouse.path)
    try:
        assert other.execute("SELECT count(*) FROM warehouse_settings WHERE name = 'at'").fetchone() == (1,)
    finally:
        other.close()
