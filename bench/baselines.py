"""The baselines of ``make bench`` (issue 6): the same coverage and pool logic as tubetrail's
views, once in plain (vectorised) pandas and once in SQL on PostgreSQL 15, over the facts the
pipeline accepted from the same input files.

What both compute, as tubetrail's rules do (``tube_members``, ``custody``, ``tube_calls``,
``coverage``, ``resample_orders``):

* **coverage per grid**: registered people, people sampled (member of a tube of the round, last
  add/void an add, tube not refused as of ``as_of``) and coverage = sampled / registered,
  rounded to 4 places;
* **pools to people**: the current call of every tube (current reading per run, plate, well and
  target; plate QC by controls; first valid run decides positive/negative, else the re-run's
  call), the pooled tubes (capacity > 1) called ``positive`` or persisting ``single_target``,
  and every member of them: the urgent re-sampling orders (person, source tube, reason).

The facts are the rows the feeds accepted (their row checks, quarantine and round rule are not
re-implemented here), exported once by the bench. Persons are joined by the low 63 bits of the
person key (``pk``, BIGINT), on both sides of each comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Assay:
    detected: float = 37.0
    grey: float = 40.0
    orf1ab: str = "orf1ab"
    n: str = "n"
    ic: str = "ic"
    pc: str = "PC"
    nc: str = "NC"


# --- pandas -------------------------------------------------------------------------------------

def pandas_members(scans: pd.DataFrame, round_id: str) -> pd.DataFrame:
    """tube_members of one round: (tube_barcode, pk, added_at); the last add/void wins, at the same
    instant a void beats an add."""
    ev = scans.loc[(scans["round_id"] == round_id) & scans["event"].isin(["add", "void"]),
                   ["tube_barcode", "pk", "event", "scanned_at"]]
    ev = ev.assign(is_void=ev["event"] == "void")
    last = (ev.sort_values(["scanned_at", "is_void"], kind="stable")
              .drop_duplicates(["tube_barcode", "pk"], keep="last"))
    kept = last.loc[~last["is_void"], ["tube_barcode", "pk"]]
    added = (ev.loc[~ev["is_void"]].groupby(["tube_barcode", "pk"], as_index=False, observed=True)["scanned_at"].min()
               .rename(columns={"scanned_at": "added_at"}))
    return kept.merge(added, on=["tube_barcode", "pk"], how="left")


def pandas_coverage(register: pd.DataFrame, scans: pd.DataFrame, receipts: pd.DataFrame, round_id: str,
                    as_of: datetime) -> pd.DataFrame:
    """(grid, registered, sampled, coverage) per grid."""
    members = pandas_members(scans, round_id)
    rec = receipts.sort_values("received_at", kind="stable")
    first = rec.drop_duplicates("tube_barcode", keep="first")[["tube_barcode", "received_at"]]
    # the condition that counts: arg_min(condition, (condition = 'ok', at)): a refusal if there is one
    rec = rec.assign(not_ok=rec["condition"] != "ok")
    cond = rec.sort_values(["not_ok", "received_at"], ascending=[False, True], kind="stable").drop_duplicates(
        "tube_barcode", keep="first")[["tube_barcode", "not_ok"]]
    custody = first.merge(cond, on="tube_barcode")
    refused = custody.loc[custody["not_ok"] & (custody["received_at"] <= as_of), "tube_barcode"]
    ok = members.loc[(members["added_at"] <= as_of) & ~members["tube_barcode"].isin(refused)]
    sampled_people = ok["pk"].drop_duplicates()
    people = register[["pk", "grid"]].assign(sampled=register["pk"].isin(sampled_people))
    out = people.groupby("grid", as_index=False, observed=True).agg(registered=("pk", "size"), sampled=("sampled", "sum"))
    out["coverage"] = (out["sampled"] / out["registered"]).round(4)
    return out.sort_values("grid", ignore_index=True)


def pandas_calls(readings: pd.DataFrame, as_of: datetime, assay: Assay = Assay()) -> pd.DataFrame:
    """The current call per tube: (tube_barcode, call, lab_id, run_id, plate_id)."""
    key = ["lab_id", "run_id", "plate_id", "well", "target"]
    r = (readings.sort_values(["ingested_at", "source_line"], kind="stable")
                 .drop_duplicates(key, keep="last"))
    sample = r["sample"].str.strip()
    upper = sample.str.upper()
    target = r["target"].str.strip().str.lower()
    role = pd.Series(pd.NA, index=r.index, dtype="string")
    role[target == assay.orf1ab.lower()] = "orf1ab"
    role[target == assay.n.lower()] = "n"
    role[target == assay.ic.lower()] = "ic"
    r = r.assign(sample=sample, control_name=upper, role=role,
                 finished_at=r["finished_at"].fillna(r["ingested_at"]))
    plate = ["lab_id", "run_id", "plate_id"]
    viral = r["role"].isin(["orf1ab", "n"]).fillna(False)
    pc = r["control_name"] == assay.pc.upper()
    nc = r["control_name"] == assay.nc.upper()
    qc = r[plate].assign(
        has_pc=pc, has_nc=nc,
        pc_role=r["role"].where(pc & viral & (r["ct"] < assay.detected).fillna(False)),
        nc_role=r["role"].where(nc & viral & (r["ct"] < assay.grey).fillna(False)))
    qc = qc.groupby(plate, as_index=False, observed=True).agg(
        has_pc=("has_pc", "any"), has_nc=("has_nc", "any"), pc_targets=("pc_role", "nunique"),
        nc_targets=("nc_role", "nunique"))
    qc["valid"] = qc["has_pc"] & (qc["pc_targets"] == 2) & qc["has_nc"] & (qc["nc_targets"] == 0)
    tubes = r.loc[~(pc | nc)]
    runs = (tubes.pivot_table(index=[*plate, "sample"], columns="role", values="ct", aggfunc="min", observed=True)
                 .reindex(columns=["orf1ab", "n", "ic"]))
    info = tubes.groupby([*plate, "sample"], observed=True).agg(finished_at=("finished_at", "max"))
    runs = info.join(runs, how="left").reset_index().merge(qc[[*plate, "valid"]], on=plate)
    det = lambda c: (runs[c] < assay.detected).fillna(False)  # noqa: E731
    shows = lambda c: (runs[c] < assay.grey).fillna(False)  # noqa: E731
    grey = lambda c: ((runs[c] >= assay.detected) & (runs[c] < assay.grey)).fillna(False)  # noqa: E731
    runs["first_call"] = np.select(
        [~runs["valid"], ~shows("ic"), det("orf1ab") & det("n"), grey("orf1ab") | grey("n"), det("orf1ab") | det("n")],
        ["plate_invalid", "invalid", "positive", "grey", "single_target"], "negative")
    runs["rerun_call"] = np.select(
        [~runs["valid"], ~shows("ic"), shows("orf1ab") & shows("n"), shows("orf1ab") | shows("n")],
        ["plate_invalid", "invalid", "positive", "single_target"], "negative")
    h = runs.loc[(runs["finished_at"] <= as_of) & runs["valid"]].sort_values(
        ["sample", "finished_at", "run_id", "plate_id"], kind="stable")
    h = h.assign(attempt=h.groupby("sample").cumcount() + 1)
    f = h.loc[h["attempt"] == 1].set_index("sample")
    s = h.loc[h["attempt"] == 2].set_index("sample")
    tubes_seen = pd.Index(runs.loc[runs["finished_at"] <= as_of, "sample"].unique(), name="sample")
    out = pd.DataFrame(index=tubes_seen)
    out["first_call"] = f["first_call"].reindex(tubes_seen)
    out["rerun_call"] = s["rerun_call"].reindex(tubes_seen)
    decided_first = out["first_call"].isin(["positive", "negative"])
    out["call"] = np.where(decided_first, out["first_call"], np.where(out["rerun_call"].notna(), out["rerun_call"], "rerun"))
    by = pd.concat([f.loc[f.index.isin(out.index[decided_first])], s.loc[s.index.isin(out.index[~decided_first])]])
    out = out.join(by[["lab_id", "run_id", "plate_id"]], how="left")
    return out.reset_index().rename(columns={"sample": "tube_barcode"})[["tube_barcode", "call", "lab_id", "run_id", "plate_id"]]


def pandas_capacity(scans: pd.DataFrame, pool_size: int) -> pd.DataFrame:
    """(round_id, tube_barcode, capacity): printed on the tube (first scan carrying one), else the round's."""
    printed = (scans.loc[scans["capacity"].notna(), ["round_id", "tube_barcode", "scanned_at", "capacity"]]
                    .sort_values("scanned_at", kind="stable").drop_duplicates(["round_id", "tube_barcode"], keep="first"))
    tubes = scans[["round_id", "tube_barcode"]].drop_duplicates()
    tubes = tubes.merge(printed[["round_id", "tube_barcode", "capacity"]], on=["round_id", "tube_barcode"], how="left")
    tubes["capacity"] = tubes["capacity"].fillna(pool_size).astype("int64")
    return tubes


def pandas_pool_orders(readings: pd.DataFrame, scans: pd.DataFrame, pool_size: int, as_of: datetime) -> pd.DataFrame:
    """The urgent orders: (pk, source_tube, reason) for every member of a pooled tube called
    positive (pool_positive) or persisting single target (single_target)."""
    calls = pandas_calls(readings, as_of)
    called = calls.loc[calls["call"].isin(["positive", "single_target"])]
    tubes = pandas_capacity(scans, pool_size)
    pools = called.merge(tubes, on="tube_barcode")
    pools = pools.loc[pools["capacity"] > 1]
    pools = pools.assign(reason=np.where(pools["call"] == "positive", "pool_positive", "single_target"))
    orders = []
    for round_id in pools["round_id"].unique():
        m = pandas_members(scans, round_id)
        orders.append(m.merge(pools.loc[pools["round_id"] == round_id, ["tube_barcode", "reason"]], on="tube_barcode"))
    if not orders:
        return pd.DataFrame({"pk": pd.Series(dtype="int64"), "source_tube": pd.Series(dtype="str"),
                             "reason": pd.Series(dtype="str")})
    out = pd.concat(orders).rename(columns={"tube_barcode": "source_tube"})
    return out[["pk", "source_tube", "reason"]].sort_values(["source_tube", "pk"], ignore_index=True)



# --- PostgreSQL -----------------------------------------------------------------------------------

PG_TABLES = {
    "register": "pk BIGINT NOT NULL, district TEXT NOT NULL, grid TEXT NOT NULL",
    "scans": "round_id TEXT NOT NULL, tube_barcode TEXT NOT NULL, pk BIGINT, event TEXT NOT NULL, "
             "scanned_at TIMESTAMPTZ NOT NULL, capacity INTEGER",
    "receipts": "tube_barcode TEXT NOT NULL, received_at TIMESTAMPTZ NOT NULL, condition TEXT NOT NULL",
    "readings": "lab_id TEXT NOT NULL, run_id TEXT NOT NULL, plate_id TEXT NOT NULL, well TEXT NOT NULL, "
                "sample TEXT NOT NULL, target TEXT NOT NULL, ct DOUBLE PRECISION, finished_at TIMESTAMPTZ, "
                "ingested_at TIMESTAMPTZ NOT NULL, source_line BIGINT NOT NULL",
}

PG_MEMBERS = """
    members AS (
        SELECT tube_barcode, pk, added_at FROM (
            SELECT DISTINCT ON (tube_barcode, pk) tube_barcode, pk, event,
                   min(scanned_at) FILTER (WHERE event = 'add') OVER (PARTITION BY tube_barcode, pk) AS added_at
            FROM scans WHERE round_id = %(rid)s AND event IN ('add', 'void')
            ORDER BY tube_barcode, pk, scanned_at DESC, (event = 'void') DESC
        ) last WHERE event = 'add'
    )"""

PG_COVERAGE = f"""
    WITH {PG_MEMBERS.strip()},
    custody AS (
        SELECT tube_barcode, min(received_at) AS received_at, bool_or(condition <> 'ok') AS refused
        FROM receipts GROUP BY tube_barcode
    ), sampled AS (
        SELECT DISTINCT m.pk FROM members m LEFT JOIN custody c USING (tube_barcode)
        WHERE m.added_at <= %(as_of)s AND NOT coalesce(c.refused AND c.received_at <= %(as_of)s, FALSE)
    )
    SELECT r.grid, count(*) AS registered, count(s.pk) AS sampled,
           round(count(s.pk)::numeric / count(*), 4)::float8 AS coverage
    FROM register r LEFT JOIN sampled s USING (pk)
    GROUP BY r.grid ORDER BY r.grid
"""

def _temp(name: str, query: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS {name}", f"CREATE TEMP TABLE {name} AS {query}", f"ANALYZE {name}"]


#: the pool logic as PostgreSQL is usually fed: steps into analysed temp tables (as one query with
#: CTEs the planner misjudges the row counts of the CTEs and nests loops: 41 s at 200,000 people)
PG_POOL_ORDERS_STEPS = [
    *_temp("readings_now", """
        SELECT DISTINCT ON (lab_id, run_id, plate_id, well, target)
               lab_id, run_id, plate_id, well, btrim(sample) AS sample, upper(btrim(sample)) AS control_name,
               CASE lower(btrim(target)) WHEN 'orf1ab' THEN 'orf1ab' WHEN 'n' THEN 'n' WHEN 'ic' THEN 'ic' END AS role,
               ct, coalesce(finished_at, ingested_at) AS finished_at
        FROM readings ORDER BY lab_id, run_id, plate_id, well, target, ingested_at DESC, source_line DESC"""),
    *_temp("qc", """
        SELECT lab_id, run_id, plate_id,
               coalesce(bool_or(control_name = 'PC'), FALSE)
               AND count(DISTINCT role) FILTER (WHERE control_name = 'PC' AND role IN ('orf1ab', 'n') AND ct < 37) = 2
               AND coalesce(bool_or(control_name = 'NC'), FALSE)
               AND count(DISTINCT role) FILTER (WHERE control_name = 'NC' AND role IN ('orf1ab', 'n') AND ct < 40) = 0
               AS valid
        FROM readings_now GROUP BY lab_id, run_id, plate_id"""),
    *_temp("called", """
        WITH runs AS (
            SELECT lab_id, run_id, plate_id, sample AS tube_barcode, max(finished_at) AS finished_at,
                   min(ct) FILTER (WHERE role = 'orf1ab') AS o, min(ct) FILTER (WHERE role = 'n') AS n,
                   min(ct) FILTER (WHERE role = 'ic') AS ic
            FROM readings_now WHERE control_name NOT IN ('PC', 'NC')
            GROUP BY lab_id, run_id, plate_id, sample
        )
        SELECT r.*, row_number() OVER (PARTITION BY tube_barcode ORDER BY finished_at, run_id, plate_id) AS attempt,
               CASE WHEN NOT coalesce(ic < 40, FALSE) THEN 'invalid'
                    WHEN coalesce(o < 37, FALSE) AND coalesce(n < 37, FALSE) THEN 'positive'
                    WHEN coalesce(o >= 37 AND o < 40, FALSE) OR coalesce(n >= 37 AND n < 40, FALSE) THEN 'grey'
                    WHEN coalesce(o < 37, FALSE) OR coalesce(n < 37, FALSE) THEN 'single_target'
                    ELSE 'negative' END AS first_call,
               CASE WHEN NOT coalesce(ic < 40, FALSE) THEN 'invalid'
                    WHEN coalesce(o < 40, FALSE) AND coalesce(n < 40, FALSE) THEN 'positive'
                    WHEN coalesce(o < 40, FALSE) OR coalesce(n < 40, FALSE) THEN 'single_target'
                    ELSE 'negative' END AS rerun_call
        FROM runs r JOIN qc q USING (lab_id, run_id, plate_id)
        WHERE q.valid AND r.finished_at <= %(as_of)s"""),
    *_temp("pools", """
        WITH calls AS (
            SELECT f.tube_barcode,
                   CASE WHEN f.first_call IN ('positive', 'negative') THEN f.first_call
                        WHEN s.tube_barcode IS NOT NULL THEN s.rerun_call ELSE 'rerun' END AS call
            FROM called f LEFT JOIN called s ON s.tube_barcode = f.tube_barcode AND s.attempt = 2
            WHERE f.attempt = 1
        ), capacity AS (
            SELECT DISTINCT ON (round_id, tube_barcode) round_id, tube_barcode, capacity
            FROM scans WHERE capacity IS NOT NULL ORDER BY round_id, tube_barcode, scanned_at
        )
        SELECT k.tube_barcode, CASE k.call WHEN 'positive' THEN 'pool_positive' ELSE 'single_target' END AS reason
        FROM calls k JOIN (SELECT DISTINCT round_id, tube_barcode FROM scans) t USING (tube_barcode)
        LEFT JOIN capacity c USING (round_id, tube_barcode)
        WHERE t.round_id = %(rid)s AND coalesce(c.capacity, %(pool_size)s) > 1 AND k.call IN ('positive', 'single_target')"""),
    f"""WITH {PG_MEMBERS.strip()}
    SELECT m.pk, m.tube_barcode AS source_tube, p.reason
    FROM pools p JOIN members m USING (tube_barcode) ORDER BY source_tube, pk""",
]
