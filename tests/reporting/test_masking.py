"""Masking as DESIGN §7 shows it: ID 110101********1234, name 张*, phone 138****5678."""

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from reporting.masking import define_masking_macros


def mask(kind: str, value):
    con = duckdb.connect()
    define_masking_macros(con)
    return con.execute(f"SELECT mask_{kind}(?)", [value]).fetchall()[0][0]


def test_the_design_examples():
    assert mask("id", "110101199003071234") == "110101********1234"
    assert mask("name", "张三丰") == "张*"
    assert mask("phone", "+8613812345678") == "138****5678"


def test_other_ids_phones_and_blanks():
    assert mask("id", "E12345678") == "E******78"
    assert mask("id", "H12") == "***"
    assert mask("phone", "+85291234567") == "********4567"
    assert mask("name", "  ") is None and mask("phone", None) is None and mask("id", None) is None


@settings(deadline=None)  # no timing in tests: this machine is loaded
@given(st.text(alphabet="0123456789X", min_size=5, max_size=20))
def test_a_masked_id_never_shows_its_middle(value):
    masked = mask("id", value)
    assert len(masked) == len(value)
    hidden = masked.count("*")
    assert hidden >= len(value) - 6 - 4
    assert value not in masked or len(value) <= 4
