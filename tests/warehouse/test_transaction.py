"""``warehouse.connection.transaction``: the one begin / commit / rollback of every write (issue 16)."""

import duckdb
import pytest

from warehouse.connection import registered, transaction


@pytest.fixture
def con():
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    yield con
    con.close()


def rows(con):
    return [a for (a,) in con.execute("SELECT a FROM t ORDER BY a").fetchall()]


def test_the_block_commits_when_it_ends(con):
    with transaction(con):
        con.execute("INSERT INTO t VALUES (1), (2)")
    assert rows(con) == [1, 2]
    con.begin()  # no transaction is left open
    con.rollback()


def test_an_error_rolls_everything_back_and_goes_on_up(con):
    with pytest.raises(ZeroDivisionError):
        with transaction(con):
            con.execute("INSERT INTO t VALUES (1)")
            1 / 0
    with pytest.raises(duckdb.ConstraintException):
        with transaction(con):
            con.execute("INSERT INTO t VALUES (2)")
            con.execute("INSERT INTO t VALUES (2)")
    assert rows(con) == []
    with transaction(con):  # the connection is usable again
        con.execute("INSERT INTO t VALUES (3)")
    assert rows(con) == [3]


def test_the_block_may_end_it_with_nothing_kept(con):
    def first_or_nothing():
        with transaction(con) as tx:
            con.execute("INSERT INTO t VALUES (7)")
            tx.rollback()
            return "nothing"

    assert first_or_nothing() == "nothing" and rows(con) == []


def test_a_failed_commit_raises_its_own_error(tmp_path):
    path = tmp_path / "w.duckdb"
    first = duckdb.connect(str(path))
    first.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    second = first.cursor()
    with pytest.raises(duckdb.TransactionException, match="Failed to commit"):  # not "no transaction is active"
        with transaction(second):
            second.execute("INSERT INTO t VALUES (1)")
            with transaction(first):  # another connection takes key 1 first
                first.execute("INSERT INTO t VALUES (1), (9)")
    assert rows(first) == [1, 9]
    first.close()


def test_registered_frames_are_gone_after_the_block(con):
    import pyarrow as pa

    with pytest.raises(RuntimeError):
        with registered(con, "incoming", pa.table({"a": [5, 6]})), transaction(con):
            con.execute("INSERT INTO t SELECT a FROM incoming")
            raise RuntimeError("after the insert")
    assert rows(con) == []
    assert "incoming" not in {name for (name,) in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
