"""Builders shared by the tests: hand-made inbox rows (people, scans, results files), the tiny
called round of 2022-04-04 (16 people in 12 tubes, plates P1–P4, the next morning's re-samples)
and its warehouse, and reads of a test's warehouse. Tiny on purpose: every figure a test asserts
can be checked by hand against the tables below.

One module for them (issue 16): a test needing a round, a city or a called warehouse takes it from
here, not from another test file. The ``called`` fixture is offered to every test by
tests/conftest.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from stdnum.cn import ric as stdnum_ric

from ingest.discover import discover
from ingest.take import take_file
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse
from warehouse.writer import open_round


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- people: register rows ----------------------------------------------------------------------

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


def settled_task_runs(flow_run_ids: list, expected: int, timeout: float = 90.0) -> list:
    """The task runs of these flow runs, once ``expected`` of them are in a final state. Task runs
    and their states reach the Prefect server as events that its recorder writes asynchronously
    (a busy SQLite makes it retry them: "database is locked"), so they may lag the flow's
    return; waited for, up to ``timeout`` seconds (a bound on waiting, not a timing assertion),
    like the events of the alert tests. After the bound, whatever is there is returned."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": list(flow_run_ids)}))
            settled = len(tasks) == expected and all(t.state is not None and t.state.is_final() for t in tasks)
            if settled or time.monotonic() > deadline:
                return tasks
            time.sleep(0.5)


def query(cfg, sql: str, params=()) -> list[tuple]:
    """A read of a test's warehouse (read only, closed at once): the rows of ``sql``."""
    con = duckdb.connect(cfg.warehouse.path, read_only=True)
    try:
        return con.execute(sql, list(params or [])).fetchall()
    finally:
        con.close()


# --- the tiny round ------------------------------------------------------------------------------

SH = ZoneInfo("Asia/Shanghai")
#: the round every hand-made city samples in: 2022-04-04, 06:00 to 22:00 city time
ROUND_STARTS = datetime(2022, 4, 4, 6, tzinfo=SH)
ROUND_ENDS = datetime(2022, 4, 4, 22, tzinfo=SH)
#: the called round is judged here: the next day, 14:00 (after the morning's re-samples)
AS_OF = datetime(2022, 4, 5, 14, 0, tzinfo=SH)
SCAN_HEADER = "scanned_at,site_id,collector_id,tube_barcode,event,id_type,id_number,name,phone,capacity"
RESULT_HEADER = "lab_id,run_id,plate_id,well,sample,target,ct,finished_at"


def open_test_round(cfg, round_id: str = "R1", *, districts: list[str] | None = None, pool_size: int = 10):
    """Opens ``round_id`` over the test day (:data:`ROUND_STARTS` to :data:`ROUND_ENDS`) in the
    test's warehouse; returns ``cfg``."""
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        open_round(con, round_id=round_id, starts_at=ROUND_STARTS, ends_at=ROUND_ENDS, districts=districts,
                   pool_size=pool_size, run_id=None)
    return cfg


def open_simulated_round(cfg, truth: dict, *, pool_size: int | None = None):
    """Opens the round of a simulated city (``truth``: its ``_truth.json``) in the test's
    warehouse, with the city's pool size unless ``pool_size`` is given; returns ``cfg``."""
    rnd = truth["round"]
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        open_round(con, round_id=rnd["id"], starts_at=datetime.fromisoformat(rnd["start"]),
                   ends_at=datetime.fromisoformat(rnd["end"]), districts=None,
                   pool_size=rnd["pool_size"] if pool_size is None else pool_size, run_id=None)
    return cfg


def take_all(root: Path, cfg) -> list:
    """Takes every file of the inbox ``root`` as the ingest would (in its order); the outcomes."""
    return [take_file(f, cfg) for f in discover(root)]


def ingest(root: Path, cfg) -> list:
    """Takes every file of ``root``; each must be accepted with no row quarantined."""
    outcomes = take_all(root, cfg)
    assert all(o.status == "accepted" and o.rows_quarantined == 0 for o in outcomes), outcomes
    return outcomes


# --- the called round: calling, plate QC and pools to people (DESIGN §8) ---------------------------

P = {i: ric(f"31010119900101{i:03d}") for i in range(1, 17)}

#: tube -> (people, capacity)
TUBES = {
    "TA": ((1, 2, 3), 10),  # positive pool
    "TB": ((4, 5), 10),  # negative
    "TC": ((6,), 10),  # grey on the first run, Ct < 40 on both targets on the re-run: positive pool
    "TD": ((7,), 10),  # single target, persists on the re-run: treated as positive
    "TE": ((8,), 10),  # single target, negative on the re-run
    "TF": ((9,), 10),  # internal control fails twice: invalid, re-sample
    "TG": ((10,), 10),  # internal control fails once, negative on the re-run
    "TS1": ((11,), 1),  # single tube, positive: the person is positive
    "TS2": ((12,), 1),  # single tube, single target twice: the person is positive
    "TH": ((13,), 10),  # on an invalid plate (NC shows a target): no call; negative on the re-run
    "TI": ((14,), 10),  # on the invalid plate only: waits for its re-run
    "TJ": ((15,), 10),  # on a plate without negative control
}
ND = ""
#: plate -> (finished, {sample: (orf1ab, n, ic)})
CONTROLS = {"PC": ("30.1", "29.5", "28"), "NC": (ND, ND, ND)}
PLATES = {
    "P1": ("16:00", {**CONTROLS, "TA": ("25.2", "26.0", "30"), "TB": (ND, ND, "30"), "TC": ("38.0", ND, "30"),
                     "TD": (ND, "31", "30"), "TE": ("33", ND, "29"), "TF": (ND, ND, ND), "TG": (ND, ND, "Undetermined"),
                     "TS1": ("20", "21", "30"), "TS2": ("30", ND, "30")}),
    "P2": ("16:30", {"PC": CONTROLS["PC"], "nc": ("35.5", ND, ND), "TH": ("22", "23", "30"), "TI": (ND, ND, "30")}),
    "P4": ("16:40", {"PC": CONTROLS["PC"], "TJ": (ND, ND, "30")}),
    "P3": ("20:00", {**CONTROLS, "TC": ("38.5", "39.2", "30"), "TD": (ND, "32", "30"), "TE": (ND, ND, "30"),
                     "TF": ("40.5", ND, "41"), "TG": (ND, ND, "30"), "TS2": ("31", ND, "30"), "TH": (ND, ND, "30")}),
}


def results_csv(plate: str, finished: str, wells: dict, day: str = "2022-04-04", orf: str = "ORF1ab") -> str:
    """A lab's results file of one plate: ``wells`` is {sample: (orf1ab, n, ic)} in well order A1, A2, …"""
    rows = [RESULT_HEADER]
    for n, (sample, cts) in enumerate(wells.items()):
        for target, ct in zip((orf, "N", "IC"), cts):
            rows.append(f"L1,{plate},{plate},A{n + 1},{sample},{target},{ct},{day}T{finished}:00+08:00")
    return "\n".join(rows) + "\n"


def build(root: Path) -> Path:
    """The called round's inbox at ``root``: sites, lab, register (:data:`P`), scans of
    :data:`TUBES`, one box to lab L1, the results of :data:`PLATES`."""
    write(root / "sites/s.csv", "site_id,name,district,kind\nS1,One,黄浦区,fixed\nSH,Home,黄浦区,home\n")
    write(root / "labs/l.csv", "lab_id,name\nL1,Lab1\n")
    write(root / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(
        register_row(n, mobility="true" if i == 9 else "false").replace(",H1,", f",H{i},") for i, n in P.items()) + "\n")
    scans = [SCAN_HEADER]
    manifest = ["box_id,tube_barcode,site_id,packed_at"]
    receipt = ["lab_id,box_id,tube_barcode,received_at"]
    for tube, (people, capacity) in TUBES.items():
        scans += [f"2022-04-04T11:00:00+08:00,S1,C1,{tube},add,RIC,{P[i]},,,{capacity}" for i in people]
        scans.append(f"2022-04-04T11:30:00+08:00,S1,C1,{tube},seal,,,,,")
        manifest.append(f"B1,{tube},S1,2022-04-04T12:00:00+08:00")
        receipt.append(f"L1,B1,{tube},2022-04-04T14:00:00+08:00")
    write(root / "scans/s.csv", "\n".join(scans) + "\n")
    write(root / "manifests/m.csv", "\n".join(manifest) + "\n")
    write(root / "receipts/r.csv", "\n".join(receipt) + "\n")
    for plate, (finished, wells) in PLATES.items():
        write(root / f"results/L1/{plate}.csv", results_csv(plate, finished, wells))
    return root


def resamples(root: Path) -> Path:
    """The next morning: single re-samples of P1 (negative), P2 (positive), P3 (no result yet)."""
    scans = [SCAN_HEADER]
    for n, i in enumerate((1, 2, 3)):
        scans += [f"2022-04-05T08:0{n}:00+08:00,SH,C9,RS{i},add,RIC,{P[i]},,,1",
                  f"2022-04-05T08:1{n}:00+08:00,SH,C9,RS{i},seal,,,,,"]
    write(root / "scans/rs.csv", "\n".join(scans) + "\n")
    write(root / "manifests/rs.csv", "box_id,tube_barcode,site_id,packed_at\n"
          + "".join(f"BR,RS{i},SH,2022-04-05T09:00:00+08:00\n" for i in (1, 2, 3)))
    write(root / "receipts/rs.csv", "lab_id,box_id,tube_barcode,received_at\n"
          + "".join(f"L1,BR,RS{i},2022-04-05T10:00:00+08:00\n" for i in (1, 2, 3)))
    write(root / "results/L1/P5.csv", results_csv(
        "P5", "12:00", {**CONTROLS, "RS1": (ND, ND, "30"), "RS2": ("24", "25", "31")}, day="2022-04-05"))
    return root


@pytest.fixture
def called(tmp_path, cfg):
    """A warehouse with round R1 open and the called round's inbox (:func:`build`) taken."""
    open_test_round(cfg)
    ingest(build(tmp_path / "in"), cfg)
    return cfg


def query_views(cfg, sql: str, params=(AS_OF,)) -> list[tuple]:
    """The rows of ``sql`` over the derived views (defined on a fresh session); ``params`` default to
    (:data:`AS_OF`,)."""
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg)
        return con.execute(sql, list(params)).fetchall()


def calls(cfg, as_of=AS_OF) -> dict[str, tuple]:
    """tube -> (call, pending reason) at ``as_of``."""
    return {t: (c, p) for t, c, p in query_views(
        cfg, "SELECT tube_barcode, call, pending_reason FROM tube_calls(?)", [as_of])}
