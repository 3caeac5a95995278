"""The register's set-based upsert (issue 15): an update file touches only its own people, found
through the person key's unique index (small files) or one hash join (big files); the meaning
stays: later file wins, each amendment audited with before and after, exact repeats untouched."""

import json
from pathlib import Path

import duckdb
import pytest

import warehouse.writer as writer
from ingest.take import take_file
from tests.conftest import write
from tests.builders import REGISTER_HEADER, register_row, ric, query
from warehouse.connection import open_warehouse
from ingest.discover import InboxFile
from kernel.sql import sql_key_lookup

PEOPLE = [ric(f"31011519800101{i:03d}") for i in range(6)]
KEY = b"test-key"


def take(path: Path, cfg):
    return take_file(InboxFile("register", str(path), f"register/{path.name}"), cfg)



def rows(*lines: str) -> str:
    return REGISTER_HEADER + "\n" + "\n".join(lines) + "\n"


@pytest.fixture(params=["index", "hash join"])
def lookup(request, monkeypatch):
    """Both ways of finding the file's people: through the index (a small file) and by a hash
    join over the register's key column (a file bigger than the look-up limit)."""
    if request.param == "hash join":
        monkeypatch.setattr(writer, "INDEX_LOOKUP_MAX_KEYS", 1)
    return request.param


def test_update_file_audits_each_changed_row_and_inserts_the_new_one(tmp_path, cfg, lookup):
    first = write(tmp_path / "in/register/1.csv", rows(*(register_row(p, phone=f"1380013800{i}")
                                                         for i, p in enumerate(PEOPLE[:5]))))
    assert take(first, cfg).status == "accepted"
    before = dict(query(cfg, "SELECT id_number, (source_hash, updated_at) FROM register"))
    update = write(tmp_path / "in/register/2.csv", rows(
        register_row(PEOPLE[0], phone="13900139000"),       # changed: phone
        register_row(PEOPLE[1], phone="13800138001", address="9 New Road"),  # changed: address
        register_row(PEOPLE[2], phone="13800138002", key_group="courier"),  # changed: key group
        register_row(PEOPLE[3], phone="13800138003"),       # the same
        register_row(PEOPLE[4], phone="13800138004"),       # the same
        register_row(PEOPLE[5], phone="13700137000"),       # new
    ))
    outcome = take(update, cfg)
    assert (outcome.status, outcome.rows_read, outcome.rows_accepted) == ("accepted", 6, 6)

    audit = query(cfg, "SELECT entity, action, before, after FROM audit ORDER BY audit_id")
    assert len(audit) == 3
    changes = {}
    for entity, action, before_json, after_json in audit:
        assert (entity, action) == ("register", "amend")
        old, new = json.loads(before_json), json.loads(after_json)
        changes[new["id_number"]] = {c: (old[c], new[c]) for c in new if old[c] != new[c]}
    assert changes == {
        PEOPLE[0]: {"phone": ("+8613800138000", "+8613900139000")},
        PEOPLE[1]: {"address": ("1 Road", "9 New Road")},
        PEOPLE[2]: {"key_group": (None, "courier")},
    }
    assert query(cfg, "SELECT count(*), count(DISTINCT person_key) FROM register") == [(6, 6)]
    update_hash = outcome.content_hash
    after = dict(query(cfg, "SELECT id_number, (source_hash, updated_at) FROM register"))
    for person in PEOPLE[3:5]:  # exact repeats: untouched
        assert after[person] == before[person]
    for person in (*PEOPLE[:3], PEOPLE[5]):  # amended and new rows: from the update file
        assert after[person][0] == update_hash
    assert query(cfg, "SELECT phone, source_line FROM register WHERE id_number = ?", [PEOPLE[5]]) \
        == [("+8613700137000", 7)]


def test_a_file_of_people_not_yet_known_is_appended(tmp_path, cfg, lookup):
    take(write(tmp_path / "in/register/1.csv", rows(register_row(PEOPLE[0]))), cfg)
    outcome = take(write(tmp_path / "in/register/2.csv", rows(*(register_row(p) for p in PEOPLE[1:]))), cfg)
    assert outcome.rows_accepted == 5
    assert query(cfg, "SELECT count(*) FROM audit") == [(0,)]
    assert query(cfg, "SELECT count(*) FROM register WHERE source_hash = ?", [outcome.content_hash]) \
        == [(5,)]


def test_the_same_person_twice_in_one_file_then_amended(tmp_path, cfg, lookup):
    """Within a file the later line wins (quarantined duplicate); across files the later file."""
    take(write(tmp_path / "in/register/1.csv", rows(register_row(PEOPLE[0], address="1 Road"),
                                                    register_row(PEOPLE[0], address="2 Road"))), cfg)
    take(write(tmp_path / "in/register/2.csv", rows(register_row(PEOPLE[0], address="3 Road"))), cfg)
    assert query(cfg, "SELECT address FROM register") == [("3 Road",)]
    assert query(cfg, "SELECT before ->> 'address', after ->> 'address' FROM audit") == [("2 Road", "3 Road")]


def test_migration_10_indexes_the_person_key_and_a_small_file_uses_it(tmp_path):
    with open_warehouse(tmp_path / "wh.duckdb", KEY) as con:
        assert con.sql("SELECT index_name, is_unique FROM duckdb_indexes() WHERE table_name = 'register'").fetchall() \
            == [("register_person_key", True)]
        con.execute(
            """INSERT INTO register SELECT person_key('RIC', i::VARCHAR), 'RIC', i::VARCHAR, 'n', NULL, 'd', 's', 'c',
                   'g', NULL, NULL, FALSE, NULL, 'h', i, now() FROM range(5000) t(i)""")
        con.execute("CREATE TEMP TABLE upsert_source AS SELECT person_key('RIC', i::VARCHAR) AS person_key"
                    " FROM range(10, 13) t(i)")
        lookup = sql_key_lookup(con, "register", "person_key", "upsert_source")
        plan = con.sql(f"EXPLAIN ANALYZE SELECT * FROM register t WHERE {lookup}").fetchall()[0][1]
        assert "Index Scan" in plan
        assert con.sql(f"SELECT id_number FROM register t WHERE {lookup} ORDER BY 1").fetchall() \
            == [("10",), ("11",), ("12",)]
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO register SELECT * FROM register LIMIT 1")


def test_reference_rows_are_amended_the_same_way(tmp_path, cfg, lookup):
    """Sites (a text key with a quote in it: the index look-up quotes its literals) and zones (a
    key with a null ``since``, no index) go through the same upsert."""
    def take_kind(kind, name, text):
        path = write(tmp_path / f"in/{kind}/{name}", text)
        return take_file(InboxFile(kind, str(path), f"{kind}/{name}"), cfg)

    take_kind("sites", "1.csv", "site_id,name,district,kind\nS1,One,黄浦区,fixed\nS'2,Two,黄浦区,fixed\n")
    take_kind("sites", "2.csv", "site_id,name,district,kind\nS1,Uno,黄浦区,fixed\nS'2,Two,黄浦区,fixed\nS3,Three,黄浦区,home\n")
    take_kind("zones", "1.csv", "grid,zone,since\nG1,sealed,\nG2,controlled,\n")
    take_kind("zones", "2.csv", "grid,zone,since\nG1,controlled,\nG2,controlled,\n")
    assert query(cfg, "SELECT site_id, name FROM sites ORDER BY site_id") == [("S'2", "Two"), ("S1", "Uno"), ("S3", "Three")]
    assert query(cfg, "SELECT grid, zone FROM zones ORDER BY grid") == [("G1", "controlled"), ("G2", "controlled")]
    assert query(cfg, "SELECT entity, entity_key, before ->> 'name', after ->> 'name', before ->> 'zone', after ->> 'zone'"
                      " FROM audit ORDER BY audit_id") == [
        ("sites", "S1", "One", "Uno", None, None), ("zones", "G1|", None, None, "sealed", "controlled")]
