"""The live round dashboard on a tiny round taken through the real ingest: every section, lists to
chase with real values (invalid plate, lost box, late tube by masked collector, refused tube),
and no personal data."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import write
from tests.builders import CONTROLS, ND, REGISTER_HEADER, ingest, open_test_round, register_row, results_csv, ric
from kernel.secrets import id_hash_key
from warehouse.views import define_views
from warehouse.connection import open_warehouse

SH = ZoneInfo("Asia/Shanghai")
AS_OF = datetime(2022, 4, 5, 12, tzinfo=SH)
P = {i: ric(f"31010119750101{i:03d}") for i in range(1, 9)}
COLLECTORS = {"S1": "COL-778899", "S2": "COL-112233"}
#: tube -> (site, people, capacity)
TUBES = {"TA": ("S1", (1, 2, 3), 10),  # positive pool (plate P1)
         "TB": ("S1", (4,), 10),  # on the invalid plate P2 only: waits for its re-run
         "TC": ("S1", (5,), 10),  # in box BX, which never arrives
         "TD": ("S1", (6, 7), 1),  # two people in a single tube; refused (leaked)
         "TE": ("S2", (8,), 10)}  # a sealed-zone resident at a fixed site; sealed, never packed
MANIFESTS = """box_id,tube_barcode,site_id,packed_at,courier_id,departed_at,lab_id
BA,TA,S1,2022-04-04T12:00:00+08:00,K1,2022-04-04T12:20:00+08:00,L1
BA,TB,S1,2022-04-04T12:00:00+08:00,K1,2022-04-04T12:20:00+08:00,L1
BA,TD,S1,2022-04-04T12:00:00+08:00,K1,2022-04-04T12:20:00+08:00,L1
BX,TC,S1,2022-04-04T12:00:00+08:00,K2,2022-04-04T12:30:00+08:00,L1
"""
RECEIPTS = """lab_id,box_id,tube_barcode,received_at,condition
L1,BA,TA,2022-04-04T14:00:00+08:00,ok
L1,BA,TB,2022-04-04T14:00:00+08:00,ok
L1,BA,TD,2022-04-04T14:00:00+08:00,leaked
"""
SECRETS = [*P.values(), "张三", "13800138000", "+8613800138000", "1 Road", "138****", *COLLECTORS.values()]


def build(root, *, chain: bool = True, lab: bool = True):
    """The reference data and scans; with ``lab`` the boxes, receipts and results files too."""
    if chain:
        write(root / "sites/s.csv", "site_id,name,district,kind\nS1,One,黄浦区,fixed\nS2,Two,黄浦区,fixed\n")
        write(root / "labs/l.csv", "lab_id,name,daily_capacity_tubes\nL1,Lab1,100\n")
        write(root / "zones/z.csv", "grid,zone\nG3,sealed\n")
        write(root / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(
            register_row(n, grid="G3" if i == 8 else "G1").replace(",H1,", f",H{i},") for i, n in P.items()) + "\n")
        scans = ["scanned_at,site_id,collector_id,tube_barcode,event,id_type,id_number,name,phone,capacity"]
        for tube, (site, people, capacity) in TUBES.items():
            scans += [f"2022-04-04T11:00:00+08:00,{site},{COLLECTORS[site]},{tube},add,RIC,{P[i]},,,{capacity}"
                      for i in people]
            scans.append(f"2022-04-04T11:30:00+08:00,{site},{COLLECTORS[site]},{tube},seal,,,,,")
        write(root / "scans/s.csv", "\n".join(scans) + "\n")
    if lab:
        write(root / "manifests/m.csv", MANIFESTS)
        write(root / "receipts/r.csv", RECEIPTS)
        write(root / "results/L1/P1.csv", results_csv("P1", "16:00", {**CONTROLS, "TA": ("25", "26", "30")}))
        write(root / "results/L1/P2.csv", results_csv(
            "P2", "16:30", {"PC": CONTROLS["PC"], "NC": ("35.5", ND, ND), "TB": (ND, ND, "30")}))
    return root


@pytest.fixture
def taken(tmp_path, cfg):
    open_test_round(cfg)
    ingest(build(tmp_path / "in"), cfg)
    return cfg


def dashboard(cfg, as_of=AS_OF):
    from reporting.dashboard import dashboard_rounds, positive_pool_rows, round_dashboard

    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        return round_dashboard(con, cfg, "R1", as_of), positive_pool_rows(con, cfg, "R1", as_of), \
            dashboard_rounds(con, as_of)


def test_the_dashboard_lists_what_to_chase_without_personal_data(taken):
    text, pools, live = dashboard(taken)
    assert live == ["R1"]
    assert text.startswith("# Live dashboard: round R1\n")
    assert "As of **2022-04-05 12:00 +08:00**" in text and ": **closed**." in text
    # headline: 5 tubes, 3 received (TD refused), TA called; TB waits for its re-run
    assert "| 5 | 5 | 3 | 1 | 1 | 1 |" in text
    # 8 registered, 6 sampled (TD's two people are in a refused tube), none resulted but TA's three
    assert "| 8 | 6 | 3 | 75.00 % |" in text
    # one positive pool of 3 people, all overdue (due 22:00); TD's 2 and TC's, TE's people re-sampled
    assert "| 1 | 3 | 3 | 3 | 0 | 4 |" in text
    assert "| L1 | Lab1 | 100 | 3 | 1 | 1 | 1 | 1 | 1 |" in text
    # the invalid plate to chase: which, where, why, how many tubes re-run and still waiting
    assert "## Invalid plates to chase: 1 plate(s), 1 tube(s) sent to re-run" in text
    assert "| P2 | L1 | P2 | 2022-04-04 16:30 +08:00 | negative control shows a target | 1 | 1 |" in text
    assert "### Boxes lost: 1 tube(s) in 1 group(s)" in text
    assert "| BX | S1 | 黄浦区 | L1 | 2022-04-04 12:30 +08:00 | 1 | 1 |" in text
    # TE: sealed at S2 by COL-112233, never packed: late, then lost; the collector masked like an id
    assert "| not boxed | S2 | C*******33 | 2022-04-04 11:30 +08:00 | 0 | 1 |" in text
    assert "| over_capacity | S1 | 黄浦区 | C*******99 | 1 | 2 |" in text
    assert "| sealed_at_site | S2 | 黄浦区 | C*******33 | 1 | 1 |" in text
    assert "| L1 | BA | S1 | leaked | 1 | 2 |" in text
    # the pool alert TA's results file recorded (nothing published it here: pending)
    assert "| 2022-04-04 16:00 +08:00 | pool_positive | Positive pool TA: 3 people to re-sample (lab L1) | pending |" in text
    assert "pool_positive 1 (1 pending)" in text
    for heading in ("## Labs", "## Anomalies to chase", "### Tubes refused at the lab", "### Other anomalies by kind",
                    "## Alerts pending, or raised since 2022-04-05 06:00 +08:00", "## Where to look next",
                    "`positive-pools-r1`"):
        assert heading in text
    for secret in SECRETS:
        assert secret not in text
    assert pools == [{"tube": "TA", "call": "positive", "lab": "L1", "run": "P1", "plate": "P1",
                      "called at": "2022-04-04 16:00 +08:00", "due by": "2022-04-04 22:00 +08:00", "people": 3,
                      "grids": 1, "still to re-sample": 3, "overdue": 3}]
    assert not {s for s in SECRETS if s in str(pools)}


def test_judged_at_as_of(taken):
    """Earlier the same day: nothing lost yet, the pool not called, the late tube still waits."""
    text, pools, live = dashboard(taken, datetime(2022, 4, 4, 15, 45, tzinfo=SH))
    assert live == ["R1"] and pools == []
    assert ": **open**." in text and "### Boxes lost: none" in text
    assert "## Invalid plates: none" in text
    # TC (box BX, sealed 11:30) and TE are late at 15:45: sealed 4 h ago, not received
    assert "| BX | S1 | C*******99 | 2022-04-04 11:30 +08:00 | 1 | 0 |" in text
    assert "| not boxed | S2 | C*******33 | 2022-04-04 11:30 +08:00 | 1 | 0 |" in text
    assert "| 5 | 5 | 3 | 1 | 0 | 2 |" in text


def test_sections_are_an_ordered_list_of_functions():
    from reporting.dashboard import DASHBOARD_SECTIONS, headline_lines, link_lines

    assert DASHBOARD_SECTIONS[0] is headline_lines and DASHBOARD_SECTIONS[-1] is link_lines
