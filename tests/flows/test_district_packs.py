"""The report's per-district fan-out on real Dask clusters (prefect-dask), under the session's
Prefect server: every district's pack is exactly the city-wide rows of that district, nothing
lost and nothing twice, and the packs are written by Dask workers (a LocalCluster started by the
flow, or a running scheduler named in ``[scale] dask_address``)."""


import polars as pl
import pytest

from tests.conftest import write
from tests.builders import AS_OF, P, REGISTER_HEADER, build, ingest, open_test_round, ric, settled_task_runs

pytestmark = pytest.mark.usefixtures("prefect_server")

#: people registered in two more districts, never sampled: (district, grid, mobility limited)
OTHERS = {ric(f"31010419800101{i:03d}"): d for i, d in enumerate(
    [("徐汇区", "X1", "true"), ("徐汇区", "X1", "false"), ("徐汇区", "X2", "true"),
     ("静安区", "J1", "true"), ("静安区", "J1", "false")], start=1)}
#: a visitor outside the register, in the positive pool TA: their order goes to the district of
#: the site that sampled them (S1, 黄浦区), not to a pack without an owner (issue 13.7)
VISITOR = ric("11010119850505001")
DISTRICT_OF = {**{p: "黄浦区" for p in P.values()}, **{p: d for p, (d, _g, _m) in OTHERS.items()},
               VISITOR: "黄浦区"}


def city_round(tmp_path, cfg):
    root = build(tmp_path / "in")
    write(root / "register/r2.csv", REGISTER_HEADER + "\n" + "".join(
        f"RIC,{p},李四,13900139{n:03d},{d},某街道,某居委,{g},{n} Lane,Q{n},{m},\n"
        for n, (p, (d, g, m)) in enumerate(OTHERS.items())))
    write(root / "scans/visitor.csv", "scanned_at,site_id,collector_id,tube_barcode,event,id_type,id_number,name,phone,"
          f"capacity\n2022-04-04T11:05:00+08:00,S1,C1,TA,add,RIC,{VISITOR},王五,13700137000,10\n")
    open_test_round(cfg)
    ingest(root, cfg)


def config(tmp_path, scale: str):
    path = tmp_path / "tubetrail.toml"
    path.write_text(f"[scale]\n{scale}\n", encoding="utf-8")
    return str(path)


def read_csv(path):
    return pl.read_csv(path, infer_schema=False)


def sorted_rows(frame):
    return frame.sort(frame.columns, nulls_last=True)


def district_task_runs(folder, expected: int):
    """The task runs of the ``district-packs`` subflow run that wrote ``folder``'s packs, once
    ``expected`` of them are in a final state (``tests.builders.settled_task_runs``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter

    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(flow_filter=FlowFilter(name={"any_": ["district-packs"]}))
                if r.parameters.get("report") == str(folder)]
    assert len(runs) == 1 and runs[0].state.is_completed(), runs
    return settled_task_runs([runs[0].id], expected)


def test_the_report_fans_out_one_pack_per_district_on_a_local_dask_cluster(tmp_path, cfg):
    from flows.report import round_report

    city_round(tmp_path, cfg)
    folder = tmp_path / "report"
    result = round_report("R1", str(folder), AS_OF, config(tmp_path, "n_workers = 2\nthreads_per_worker = 1"),
                          cfg.warehouse.path)
    districts = ["徐汇区", "静安区", "黄浦区"]
    assert sorted(p["district"] for p in result["districts"]) == sorted(districts)
    assert sorted(p.name for p in (folder / "districts").iterdir()) == sorted(districts)  # no temporary folder left

    # untested: each pack is the city-wide list filtered to its district, in the same order
    city_untested = read_csv(folder / "untested.csv")
    for district in districts:
        pack = read_csv(folder / "districts" / district / "untested.csv")
        assert pack.equals(city_untested.filter(pl.col("district") == district)), district
    assert sum(p["untested"] for p in result["districts"]) == city_untested.height == 1 + len(OTHERS)

    # orders: every order in exactly one pack, the pack of its person's district
    city_orders = read_csv(folder / "resample_orders.csv")
    packs = {d: read_csv(folder / "districts" / d / "resample_orders.csv") for d in districts}
    assert sorted_rows(pl.concat(packs.values())).equals(sorted_rows(city_orders))
    for district, orders in packs.items():
        assert {DISTRICT_OF[p] for p in orders["id_number"]} <= {district}, district
    assert VISITOR in packs["黄浦区"]["id_number"].to_list()

    # worklists: the door-to-door rule per district and grid, each person once
    work = pl.concat([read_csv(f).with_columns(pl.lit(d).alias("pack"), pl.lit(f.stem).alias("file"))
                      for d in districts for f in (folder / "districts" / d / "worklists").glob("*.csv")])
    assert work.filter(pl.col("grid") != pl.col("file")).is_empty()
    assert sorted(zip(work["pack"], work["grid"], work["id_number"])) == sorted(
        [("黄浦区", "G1", P[i]) for i in (1, 2, 3, 6, 7, 9)] + [("黄浦区", "unknown-grid", VISITOR)]
        + [(d, g, p) for p, (d, g, m) in OTHERS.items() if m == "true"])
    assert result["worklists"] == sum(p["worklists"] for p in result["districts"]) == 5  # G1, X1, X2, J1, unknown-grid
    xuhui = next(p for p in result["districts"] if p["district"] == "徐汇区")
    assert (xuhui["registered"], xuhui["sampled"], xuhui["untested"], xuhui["worklist_rows"]) == (3, 0, 3, 2)

    # one task run per district, each on a Dask worker of the flow's LocalCluster (2 processes)
    runs = district_task_runs(folder, len(districts))
    assert sorted(r.name for r in runs) == sorted(f"district pack {d}" for d in districts)
    assert all(r.state.is_completed() for r in runs)
    workers = {p["dask_worker"] for p in result["districts"]}
    assert None not in workers and 1 <= len(workers) <= 2, workers

    # nothing personal in what the Prefect API holds: task results, run names
    for secret in [*DISTRICT_OF, "李四", "王五", "13700137000"]:
        assert secret not in str(result["districts"]) and all(secret not in r.name for r in runs)


def test_a_configured_scheduler_address_is_used(tmp_path, cfg):
    from distributed import LocalCluster

    from flows.report import round_report

    city_round(tmp_path, cfg)
    folder = tmp_path / "report"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        ours = set(cluster.scheduler_info["workers"])
        result = round_report("R1", str(folder), AS_OF,
                              config(tmp_path, f'dask_address = "{cluster.scheduler_address}"'), cfg.warehouse.path)
    workers = {p["dask_worker"] for p in result["districts"]}
    assert workers and workers <= ours, (workers, ours)
    assert len(district_task_runs(folder, 3)) == 3
