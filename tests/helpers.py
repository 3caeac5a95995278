"""Small builders for hand-made inbox files."""

from __future__ import annotations

import duckdb
from stdnum.cn import ric as stdnum_ric


def ric(first17: str) -> str:
    """A valid RIC: 17 digits plus the check character from python-stdnum."""
    return first17 + stdnum_ric.calc_check_digit(first17 + "0")


def bad_check(first17: str) -> str:
    good = ric(first17)
    wrong = "0" if good[-1] != "0" else "1"
    return first17 + wrong


REGISTER_HEADER = "id_type,id_number,name,phone,district,subdistrict,community,grid,address,household_id,mobility_limited,key_group"


def register_row(id_number: str, name: str = "张三", phone: str = "13800138000", grid: str = "G1", id_type: str = "RIC",
                 address: str = "1 Road", mobility: str = "false", key_group: str = "") -> str:
    return f"{id_type},{id_number},{name},{phone},黄浦区,外滩街道,中山居委,{grid},{address},H1,{mobility},{key_group}"


def query(cfg, sql: str, params=()) -> list[tuple]:
    """A read of a test's warehouse (read only, closed at once): the rows of ``sql``."""
    con = duckdb.connect(cfg.warehouse.path, read_only=True)
    try:
        return con.execute(sql, list(params or [])).fetchall()
    finally:
        con.close()
