"""A simulated city (Shanghai, 4 April 2022): a complete inbox for one screening round, with
the faults real rounds have, deterministic per seed, vectorised (numpy + polars) so that a
25.7-million-person city fits on a 2-core, 24 GB machine.

``simulate_city`` writes ``OUT/<kind>/...`` for every kind of DESIGN §4 and ``OUT/_truth.json``:
what was injected, so tests can check the pipeline found it all.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from sampling.identity import ric_check_char

SH = timezone(timedelta(hours=8))
ROUND_ID = "R20220404"
ROUND_START = datetime(2022, 4, 4, 6, 0, tzinfo=SH)
ROUND_END = datetime(2022, 4, 4, 22, 0, tzinfo=SH)
RESAMPLE_DAY = datetime(2022, 4, 5, 8, 0, tzinfo=SH)
#: hours from the round's start over which a district's sites sample (06:00–21:30)
SAMPLING_HOURS = 15.5
#: the district whose sites stop sending for the round's last hours (漏报: silent from about
#: 19:30, `[alerts] silent_hours` after its last box); its people are sampled by 17:00 instead
SILENT_DISTRICT = "310151"  # 崇明区
SILENT_DISTRICT_SAMPLING_HOURS = 11.0

#: (name, code, population share) — the 16 districts of Shanghai, 2020 census shares
DISTRICTS = [
    ("浦东新区", "310115", 0.2290), ("闵行区", "310112", 0.1069), ("宝山区", "310113", 0.0902),
    ("松江区", "310117", 0.0767), ("嘉定区", "310114", 0.0738), ("徐汇区", "310104", 0.0449),
    ("青浦区", "310118", 0.0513), ("杨浦区", "310110", 0.0500), ("普陀区", "310107", 0.0501),
    ("奉贤区", "310120", 0.0461), ("静安区", "310106", 0.0393), ("金山区", "310116", 0.0333),
    ("长宁区", "310105", 0.0280), ("虹口区", "310109", 0.0307), ("黄浦区", "310101", 0.0266),
    ("崇明区", "310151", 0.0231),
]
OTHER_REGIONS = ["320102", "330106", "340102", "410102", "420102", "430102", "510104", "360102", "370102", "130102"]
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程")
GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国文斌宇浩然欣怡子涵梓轩思远雨桐佳琪晨曦")
KEY_GROUPS = ["medical", "courier", "cold_chain"]
NOT_DETECTED = ["", "Undetermined", "NaN", "No Ct"]


@dataclass(frozen=True)
class SimulationResult:
    out: Path
    files: dict[str, int]
    truth: dict


def _iso(frame_col: str) -> pl.Expr:
    return pl.col(frame_col).dt.convert_time_zone("Asia/Shanghai").dt.strftime("%Y-%m-%dT%H:%M:%S%:z")


def simulate_city(
    residents: int,
    out: Path,
    *,
    seed: int = 20220404,
    pool_size: int = 10,
    prevalence: float = 0.0005,
    file_format: str = "csv",
    progress: Callable[[str, float], None] | None = None,
) -> SimulationResult:
    out = Path(out)
    rng = np.random.default_rng(seed)
    say = progress or (lambda stage, fraction: None)
    files: dict[str, int] = {}
    truth: dict = {"round": {"id": ROUND_ID, "start": ROUND_START.isoformat(), "end": ROUND_END.isoformat(),
                             "pool_size": pool_size, "districts": None}}

    def write(kind: str, name: str, frame: pl.DataFrame, fmt: str = "csv") -> None:
        if frame.height == 0:  # no empty files: two would be one content, taken once
            return
        path = out / kind / (name + (".parquet" if fmt == "parquet" else ".csv"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            frame.write_parquet(path, statistics=False)
        else:
            frame.write_csv(path)
        files[kind] = files.get(kind, 0) + 1

    say("areas", 0.02)
    areas = _areas(residents, rng)
    sites = _sites(areas)
    write("sites", "sites", sites.drop("district_code"))
    n_tubes_expected = residents // max(pool_size, 1) + residents // 50
    n_labs = max(3, math.ceil(n_tubes_expected / 250_000))
    labs = pl.DataFrame({
        "lab_id": [f"L{i + 1:02d}" for i in range(n_labs)],
        "name": [f"第{i + 1}检测实验室" for i in range(n_labs)],
        "daily_capacity_tubes": [int(n_tubes_expected / n_labs * 1.3) + 1000] * n_labs,
    })
    write("labs", "labs", labs)
    truth["labs"] = dict(zip(labs["lab_id"].to_list(), labs["daily_capacity_tubes"].to_list()))
    silent_name = next(name for name, code, _ in DISTRICTS if code == SILENT_DISTRICT)
    truth["silent_district"] = {
        "district": silent_name, "code": SILENT_DISTRICT,
        "sampling_ends": (ROUND_START + timedelta(hours=SILENT_DISTRICT_SAMPLING_HOURS)).isoformat()}
    zones = areas.select("grid", "zone").filter(pl.col("zone").is_not_null()).with_columns(
        pl.lit("2022-04-01T00:00:00+08:00").alias("since"))
    write("zones", "zones", zones)
    truth["zones"] = dict(zones.group_by("zone").len().sort("zone").iter_rows())

    # District by district: each is independent (its people, sites, boxes), which bounds memory.
    weights = areas.group_by("district_code", maintain_order=True).agg(pl.col("weight").sum())
    shares = weights["weight"].to_numpy() / weights["weight"].sum()
    counts = np.floor(shares * residents).astype(int)
    counts[0] += residents - counts.sum()
    offset = 0
    hours_per_file = 1 if residents >= 100_000 else 4
    needs: dict[str, dict[str, int]] = {}  # per district: one whole-population round (the stock counts)
    for d_idx, (code, n_d) in enumerate(zip(weights["district_code"].to_list(), counts)):
        base = 0.05 + 0.9 * offset / max(residents, 1)
        say(f"district {code}: register", base)
        d_rng = np.random.default_rng([seed, d_idx])
        d_areas = areas.filter(pl.col("district_code") == code)
        d_sites = sites.filter(pl.col("district_code") == code)
        part: dict = {}
        people = _people(int(n_d), d_areas, d_rng, offset, d_idx)
        register, part["register"], valid = _register_files(people, d_rng, d_idx)
        people = people.with_columns(pl.col("i").is_in(valid["i"].implode()).alias("registered"))
        needs[code] = _stock_need(people, pool_size)
        for name, frame in register:
            write("register", f"{name}_{code}", frame, file_format)
        say(f"district {code}: scans", base + 0.3 * n_d / residents)
        hours = SILENT_DISTRICT_SAMPLING_HOURS if code == SILENT_DISTRICT else SAMPLING_HOURS
        tubes, members, part["scans"] = _sampling(people, d_areas, d_sites, pool_size, prevalence, d_rng, d_idx,
                                                  sampling_hours=hours)
        del people
        events = _scan_events(tubes, members, d_rng, hours_per_file)
        for (hour,), chunk in events.partition_by("hour", as_dict=True, maintain_order=True).items():
            write("scans", f"{code}/scans_{code}_{hour:02d}00", chunk.drop("district_code", "hour"), file_format)
        del events
        say(f"district {code}: boxes, results, re-samples", base + 0.6 * n_d / residents)
        (manifests, receipts), part["custody"], tubes = _custody(tubes, labs, d_rng, d_idx)
        needs[code]["boxes_packed"] = manifests["box_id"].n_unique()
        # boxes and receipts reach the inbox as they happen: one file per district and period
        for kind, frame, column in (("manifests", manifests, "packed_at"), ("receipts", receipts, "received_at")):
            for (period,), chunk in _by_period(frame, column, hours_per_file).items():
                write(kind, f"{code}/{kind}_{code}_{period}", chunk.drop("period"))
        results, part["results"], needs_resample = _results(tubes, members, d_rng, code, d_idx)
        _write_results(out, results, files, district=code)
        resample_files, part["resamples"] = _resamples(needs_resample, members, d_rng, d_idx, labs)
        for kind, name, frame in resample_files:
            if kind == "results":
                _write_results(out, frame, files, prefix="resample_", district=code)
            else:
                write(kind, f"{name}_{code}", frame)
        _merge_truth(truth, part)
        offset += int(n_d)

    truth["stock"] = _write_stock(write, needs, labs, areas)
    truth["files"] = files
    (out / "_truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    say("done", 1.0)
    return SimulationResult(out, files, truth)


def _merge_truth(total: dict, part: dict) -> None:
    """Add one district's truth to the city's: counts add up, lists concatenate."""
    for key, value in part.items():
        if isinstance(value, dict):
            _merge_truth(total.setdefault(key, {}), value)
        elif isinstance(value, list):
            total[key] = sorted(total.get(key, []) + value)
        else:
            total[key] = total.get(key, 0) + value


def _pick(n: int, rate: float, rng: np.random.Generator, minimum: int = 1, eligible: np.ndarray | None = None) -> np.ndarray:
    """A mask with exactly max(minimum, rate × n) true entries among the eligible ones."""
    pool = np.flatnonzero(eligible) if eligible is not None else np.arange(n)
    k = min(len(pool), max(minimum, round(rate * n)))
    mask = np.zeros(n, dtype=bool)
    if k:
        mask[rng.choice(pool, k, replace=False)] = True
    return mask


# --- stock: reagents and consumables (the stock/ feed) -----------------------------------------

#: the depot the simulated city counts (``[stock] depots`` must name it; the demo's configuration does)
STOCK_DEPOT = "市物资储备库"
#: a holder the warehouse does not know: kept with a warning
STOCK_UNKNOWN_HOLDER = "L99"
STOCK_COUNTED_AT = datetime(2022, 4, 4, 5, 30, tzinfo=SH)
STOCK_DELIVERED_AT = datetime(2022, 4, 4, 14, 0, tzinfo=SH)
#: reactions per kit
KIT_TESTS = {"reagent_kit": 48, "extraction_kit": 32}


def _stock_need(people: pl.DataFrame, pool_size: int) -> dict[str, int]:
    """One whole-population round of a district's registered people at DESIGN §8's pool sizes
    (key groups single, a sealed household one tube, controlled 5, else the round's): what the
    stock counts are sized against. No random draw: the city's other files stay as they were."""
    reg = people.filter(pl.col("registered"))
    size = (pl.when(pl.col("key_group").is_not_null()).then(1)
            .when(pl.col("zone") == "sealed").then(None)
            .when(pl.col("zone") == "controlled").then(5)
            .otherwise(pool_size))
    groups = reg.group_by(pl.col("grid"), size.alias("size"),
                          pl.when(pl.col("zone") == "sealed").then(pl.col("household_id")).alias("household")).len()
    groups = groups.with_columns(
        pl.when(pl.col("size").is_null()).then(1).otherwise((pl.col("len") + pl.col("size") - 1) // pl.col("size")).alias("tubes"),
        (pl.col("size").fill_null(pl.col("len")) > 1).alias("pooled"))
    return {"swab": reg.height, "tube_pooled": int(groups.filter(pl.col("pooled"))["tubes"].sum()),
            "tube_single": int(groups.filter(~pl.col("pooled"))["tubes"].sum())}


def _write_stock(write: Callable[[str, str, pl.DataFrame], None], needs: dict[str, dict[str, int]],
                 labs: pl.DataFrame, areas: pl.DataFrame) -> dict:
    """Counts before the sites open (05:30) and a delivery during the round (14:00): each
    district's swabs and tubes for 12 days of its people and boxes for 12 days of its packing
    (the delivery brings swabs and tubes to 16 days), each lab's kits for 9 days of its capacity,
    and the depot 10 days of the city. Lab L02's extraction kits last only one day of its
    capacity: clearly under the minimum (the stock alert; ``tubetrail plan`` exits 1). One row of
    an unknown lab (a warning) and one negative count (quarantined)."""
    names = dict(areas.select("district_code", "district").unique().iter_rows())
    at, delivered = STOCK_COUNTED_AT.isoformat(), STOCK_DELIVERED_AT.isoformat()
    rows: list[tuple] = []
    delivery: list[tuple] = []
    city = {item: 0 for item in ("swab", "tube_pooled", "tube_single", "box")}
    for code, need in needs.items():
        # the simulated sites pack a box per site and hour, far more than tubes ÷ 100
        boxes = max(need["boxes_packed"], math.ceil((need["tube_pooled"] + need["tube_single"]) / 100))
        need = {"swab": need["swab"], "tube_pooled": need["tube_pooled"], "tube_single": need["tube_single"],
                "box": boxes}
        for item, n in need.items():
            rows.append((at, names[code], item, 12 * n, 1))
            city[item] += n
        delivery += [(delivered, names[code], item, 16 * need[item], 1) for item in ("swab", "tube_pooled", "tube_single")]
    for lab, capacity in labs.select("lab_id", "daily_capacity_tubes").iter_rows():
        reactions = capacity + 2 * math.ceil(capacity / 94)
        for item, per_kit in KIT_TESTS.items():
            days = 1 if (lab, item) == ("L02", "extraction_kit") else 9
            rows.append((at, lab, item, math.ceil(days * reactions / per_kit), per_kit))
    tubes = city["tube_pooled"] + city["tube_single"]
    city_reactions = tubes + 2 * math.ceil(tubes / 94)
    for item, n in {**city, "reagent_kit": city_reactions, "extraction_kit": city_reactions}.items():
        per_kit = KIT_TESTS.get(item, 1)
        rows.append((at, STOCK_DEPOT, item, math.ceil(10 * n / per_kit), per_kit))
    rows.append((at, STOCK_UNKNOWN_HOLDER, "reagent_kit", 20, 48))
    rows.append((at, labs["lab_id"][0], "swab", -40, 1))  # a count cannot be negative: quarantined
    schema = {"at": pl.Utf8, "holder": pl.Utf8, "item": pl.Utf8, "quantity": pl.Int64, "tests_per_unit": pl.Int64}
    write("stock", "stock_0530", pl.DataFrame(rows, schema=schema, orient="row"))
    write("stock", "stock_1400_delivery", pl.DataFrame(delivery, schema=schema, orient="row"))
    return {"rows": len(rows) + len(delivery), "quarantined": 1, "unknown_holders": [STOCK_UNKNOWN_HOLDER],
            "depot": STOCK_DEPOT, "under_minimum": [["L02", "extraction_kit"]], "sized_per_round": city}


# --- the city ---------------------------------------------------------------------------------

def _areas(residents: int, rng: np.random.Generator) -> pl.DataFrame:
    """Grids (about 1,500 residents each) in communities, subdistricts and districts, with zones."""
    n_grids = max(64, round(residents / 1500))
    shares = np.array([d[2] for d in DISTRICTS])
    per_district = np.maximum(4, np.round(shares / shares.sum() * n_grids)).astype(int)
    rows = []
    for (name, code, _), count in zip(DISTRICTS, per_district):
        for g in range(count):
            community = g // 4
            sub = community // 6
            rows.append((name, code, f"{name[:-1]}第{sub + 1}街道", f"{name[:-1]}第{sub + 1}街道第{community + 1}居委",
                         f"G{code}-{g + 1:04d}"))
    areas = pl.DataFrame(rows, schema=["district", "district_code", "subdistrict", "community", "grid"], orient="row")
    n = areas.height
    draw = rng.random(n)
    # a list, not np.where's array: a mix of str and None is an object array polars cannot cast
    zone = [("sealed" if d < 0.05 else "controlled" if d < 0.15 else "precaution" if d < 0.65 else None) for d in draw]
    # about 10% of grids lag far behind (sealed buildings, far-out towns): the untested skew
    sampling_rate = np.where(rng.random(n) < 0.10, 0.55, 0.94)
    return areas.with_columns(pl.Series("zone", zone, dtype=pl.Utf8), pl.Series("sampling_rate", sampling_rate),
                              pl.Series("weight", rng.uniform(0.6, 1.4, n)))


def _people(n: int, areas: pl.DataFrame, rng: np.random.Generator, offset: int = 0, d_idx: int = 0) -> pl.DataFrame:
    weights = areas["weight"].to_numpy()
    grid_index = np.sort(rng.choice(areas.height, size=n, p=weights / weights.sum()))
    household_break = rng.random(n) < 0.38
    household = np.cumsum(household_break | np.r_[True, grid_index[1:] != grid_index[:-1]])
    kind_draw = rng.random(n)
    id_type = np.where(kind_draw < 0.98, "RIC", np.where(kind_draw < 0.99, "PASSPORT", np.where(kind_draw < 0.997, "HKMO", "OTHER")))
    born = rng.integers(0, (date(2021, 12, 31) - date(1935, 1, 1)).days, n)
    migrant = rng.random(n) < 0.15
    frame = pl.DataFrame({
        "i": np.arange(offset, offset + n, dtype=np.int64),
        "grid_index": grid_index,
        "household": household,
        "id_type": id_type,
        "born": born,
        "other_region": rng.integers(0, len(OTHER_REGIONS), n),
        "migrant": migrant,
        "surname": rng.integers(0, len(SURNAMES), n),
        "given1": rng.integers(0, len(GIVEN), n),
        "given2": np.where(rng.random(n) < 0.7, rng.integers(0, len(GIVEN), n), -1),
        "phone_n": rng.integers(0, 10**8, n),
        "phone_prefix": rng.choice(np.array(["138", "139", "137", "136", "150", "151", "158", "186", "188", "177", "199"]), n),
        "phone_style": rng.random(n),
        "mobility": rng.random(n) < 0.015,
        "key_draw": rng.random(n),
        "key_kind": rng.integers(0, len(KEY_GROUPS), n),
        "door": rng.integers(1, 300, n),
        "room": rng.integers(101, 2405, n),
        "infected": rng.random(n),
    })
    frame = frame.join(areas.with_row_index("grid_index").with_columns(pl.col("grid_index").cast(pl.Int64)),
                       on="grid_index", how="left").sort("i")
    region = pl.when(pl.col("migrant")).then(
        pl.col("other_region").replace_strict(list(range(len(OTHER_REGIONS))), OTHER_REGIONS, return_dtype=pl.Utf8)
    ).otherwise(pl.col("district_code"))
    birth = (pl.lit(date(1935, 1, 1)) + pl.duration(days=pl.col("born"))).dt.strftime("%Y%m%d")
    frame = frame.with_columns(region.alias("region"), birth.alias("birth"))
    # the 3-digit order code: unique within region and birth date; migrants' codes are shared by
    # every district, so their order codes are interleaved by district
    rank = pl.int_range(pl.len()).over("region", "birth")
    frame = frame.with_columns(pl.when(pl.col("migrant")).then(rank * 16 + d_idx).otherwise(rank).alias("seq"))
    first17 = pl.col("region") + pl.col("birth") + pl.col("seq").cast(pl.Utf8).str.zfill(3)
    frame = frame.with_columns(
        pl.when(pl.col("id_type") == "RIC").then(first17 + ric_check_char(first17 + "0"))
        .when(pl.col("id_type") == "PASSPORT").then(pl.format("E{}", pl.col("i").cast(pl.Utf8).str.zfill(8)))
        .when(pl.col("id_type") == "HKMO").then(pl.format("H{}", pl.col("i").cast(pl.Utf8).str.zfill(10)))
        .otherwise(pl.format("X{}", pl.col("i").cast(pl.Utf8).str.zfill(9))).alias("id_number"),
        (pl.col("surname").replace_strict(list(range(len(SURNAMES))), SURNAMES, return_dtype=pl.Utf8)
         + pl.col("given1").replace_strict(list(range(len(GIVEN))), GIVEN, return_dtype=pl.Utf8)
         + pl.col("given2").replace_strict(list(range(-1, len(GIVEN))), [""] + GIVEN, return_dtype=pl.Utf8)).alias("name"),
        (pl.col("phone_prefix") + pl.col("phone_n").cast(pl.Utf8).str.zfill(8)).alias("mobile"),
        pl.when(pl.col("key_draw") < 0.02).then(
            pl.col("key_kind").replace_strict([0, 1, 2], KEY_GROUPS, return_dtype=pl.Utf8)).alias("key_group"),
        pl.format("{}{}号{}室", pl.col("community"), pl.col("door"), pl.col("room")).alias("home_address"),
        pl.format("HH{}{}", pl.lit(f"{d_idx:02d}"), pl.col("household").cast(pl.Utf8).str.zfill(8)).alias("household_id"),
    )
    # a household shares the address of its first member
    frame = frame.with_columns(pl.col("home_address").first().over("household").alias("address"))
    return frame.drop("grid_index", "born", "other_region", "surname", "given1", "given2", "phone_prefix",
                      "key_draw", "key_kind", "home_address", "weight", "region", "birth", "seq")


def _register_files(people: pl.DataFrame, rng: np.random.Generator, d_idx: int = 0):
    n = people.height
    style = pl.col("phone_style")
    mobile = pl.col("mobile")
    phone = (pl.when(style < 0.03).then(pl.lit(""))
             .when(style < 0.13).then(pl.format("+86 {} {} {}", mobile.str.slice(0, 3), mobile.str.slice(3, 4), mobile.str.slice(7, 4)))
             .when(style < 0.23).then(pl.format("{}-{}-{}", mobile.str.slice(0, 3), mobile.str.slice(3, 4), mobile.str.slice(7, 4)))
             .when(style < 0.30).then(pl.lit("0086") + mobile)
             .otherwise(mobile))
    least = 1 if d_idx == 0 else 0
    is_ric = people["id_type"].to_numpy() == "RIC"
    bad_check_mask = _pick(n, 0.001, rng, 2 * least, is_ric)
    bad_birth_mask = _pick(n, 0.0001, rng, least, is_ric & ~bad_check_mask)
    missing_mask = _pick(n, 0.0002, rng, least, ~bad_check_mask & ~bad_birth_mask)
    clean = ~bad_check_mask & ~bad_birth_mask & ~missing_mask
    dup_mask = _pick(n, 0.0005, rng, least, clean)
    update_mask = _pick(n, 0.0005, rng, least, clean & ~dup_mask)
    frame = people.with_columns(phone.alias("phone"), pl.Series("fault", rng.random(n)),
                                pl.Series("dup", dup_mask), pl.Series("update", update_mask))
    bad_check = pl.Series(bad_check_mask)
    bad_birth = pl.Series(bad_birth_mask)
    missing_area = pl.Series(missing_mask)
    wrong_digit = ((pl.col("id_number").str.slice(17, 1).replace({"X": "10"}).cast(pl.Int32, strict=False) + 1) % 10).cast(pl.Utf8)
    lower_x = pl.col("id_number").str.ends_with("X") & (pl.col("fault") > 0.5)
    frame = frame.with_columns(
        pl.when(bad_check).then(pl.col("id_number").str.slice(0, 17) + wrong_digit)
        .when(bad_birth).then(  # month 13, with a check character that fits: only the date is wrong
            pl.col("id_number").str.slice(0, 10) + "13" + pl.col("id_number").str.slice(12, 5)
            + ric_check_char(pl.col("id_number").str.slice(0, 10) + "13" + pl.col("id_number").str.slice(12, 5) + "0"))
        .when(lower_x).then(pl.col("id_number").str.to_lowercase())
        .otherwise(pl.col("id_number")).alias("id_number_written"),
        pl.when(missing_area).then(pl.lit("")).otherwise(pl.col("grid")).alias("grid_written"),
        bad_check.alias("bad_check"), bad_birth.alias("bad_birth"), missing_area.alias("missing_area"),
    )
    cols = {
        "id_type": pl.col("id_type"), "id_number": pl.col("id_number_written"), "name": pl.col("name"),
        "phone": pl.col("phone"), "district": pl.col("district"), "subdistrict": pl.col("subdistrict"),
        "community": pl.col("community"), "grid": pl.col("grid_written"), "address": pl.col("address"),
        "household_id": pl.col("household_id"),
        "mobility_limited": pl.when(pl.col("mobility")).then(pl.lit("true")).otherwise(pl.lit("false")),
        "key_group": pl.col("key_group").fill_null(""),
    }
    main = frame.select(**cols)
    dup_rows = frame.filter(pl.col("dup"))
    duplicates = dup_rows.select(**cols)
    main = pl.concat([main, duplicates])
    order = rng.permutation(main.height)
    main = main[order]
    updates_src = frame.filter(pl.col("update"))
    updates = updates_src.with_columns(
        pl.format("{}号{}室(新)", pl.col("door") + 1, pl.col("room")).alias("address"),
        ("139" + pl.col("phone_n").cast(pl.Utf8).str.zfill(8)).alias("phone"),
    ).select(**{**cols, "address": pl.col("address"), "phone": pl.col("phone")})
    valid = frame.filter(~bad_check & ~bad_birth & ~missing_area)
    truth = {
        "rows_written": {"register": main.height, "register_updates": updates.height},
        "people_registered": valid.height,
        "bad_check_digits": frame.filter(bad_check).height,
        "bad_birth_dates": frame.filter(bad_birth).height,
        "missing_area": frame.filter(missing_area).height,
        "exact_duplicates": duplicates.height,
        "conflicting_duplicates": updates.height,
        "missing_phones": valid.filter(pl.col("phone") == "").height,
    }
    # "register_updates_…" sorts after "register_3…": the later file, which wins
    return [("register", main), ("register_updates", updates)], truth, valid.select("i")


def _sites(areas: pl.DataFrame) -> pl.DataFrame:
    fixed = areas.group_by("district", "district_code", "subdistrict", "community", maintain_order=True).agg().with_row_index("n").select(
        pl.format("S{}", pl.col("n").cast(pl.Utf8).str.zfill(6)).alias("site_id"),
        (pl.col("community") + "核酸采样点").alias("name"), "district", "district_code", "subdistrict", "community",
        pl.lit("fixed").alias("kind"), pl.lit("07:00").alias("opens"), pl.lit("21:00").alias("closes"))
    home = areas.group_by("district", "district_code", "subdistrict", maintain_order=True).agg().with_row_index("n").select(
        pl.format("H{}", pl.col("n").cast(pl.Utf8).str.zfill(5)).alias("site_id"),
        (pl.col("subdistrict") + "上门采样队").alias("name"), "district", "district_code", "subdistrict",
        pl.lit(None, dtype=pl.Utf8).alias("community"), pl.lit("home").alias("kind"), pl.lit("08:00").alias("opens"),
        pl.lit("20:00").alias("closes"))
    mobile = fixed.filter(pl.int_range(pl.len()) % 50 == 0).with_columns(
        pl.col("site_id").str.replace("^S", "M"), (pl.col("community") + "流动采样车").alias("name"),
        pl.lit("mobile").alias("kind"))
    return pl.concat([fixed, mobile, home])


# --- collect: who is swabbed into which tube ---------------------------------------------------

def _sampling(people: pl.DataFrame, areas: pl.DataFrame, sites: pl.DataFrame, pool_size: int,
              prevalence: float, rng: np.random.Generator, d_idx: int = 0, sampling_hours: float = SAMPLING_HOURS):
    n = people.height
    fixed = sites.filter(pl.col("kind") == "fixed").select("community", pl.col("site_id").alias("fixed_site"))
    home = sites.filter(pl.col("kind") == "home").select("subdistrict", pl.col("site_id").alias("home_site"))
    draw = rng.random(n)
    sampled = people.with_columns(pl.Series("draw", draw)).filter(
        pl.col("registered") & (pl.col("draw") < pl.col("sampling_rate")))
    sampled = sampled.select(
        "i", "id_type", "id_number", "name", "mobile", "community", "subdistrict", "district_code", "zone",
        "household_id", "key_group", "mobility", (pl.col("infected") < prevalence).alias("infected"),
        pl.lit(False).alias("visitor"))
    # visitors and floating population: sampled, not on the register
    n_visitors = max(1, n // 100)
    visitor_area = areas[rng.integers(0, areas.height, n_visitors)]
    visitors = pl.DataFrame({
        "i": np.arange(10**10 + d_idx * 10**8, 10**10 + d_idx * 10**8 + n_visitors, dtype=np.int64),
        "id_type": ["PASSPORT"] * n_visitors,
        "id_number": pl.select(pl.format("G{}{}", pl.lit(f"{d_idx:02d}"), pl.int_range(n_visitors).cast(pl.Utf8).str.zfill(7))).to_series(),
        "name": ["访客"] * n_visitors,
        "mobile": ["13700000000"] * n_visitors,
    }).with_columns(
        visitor_area["community"], visitor_area["subdistrict"], visitor_area["district_code"],
        pl.lit(None, dtype=pl.Utf8).alias("zone"), pl.lit(None, dtype=pl.Utf8).alias("household_id"),
        pl.lit(None, dtype=pl.Utf8).alias("key_group"), pl.lit(False).alias("mobility"),
        pl.Series("infected", rng.random(n_visitors) < prevalence), pl.lit(True).alias("visitor"))
    members = pl.concat([sampled, visitors.select(sampled.columns)])
    members = members.join(fixed, on="community", how="left").join(home, on="subdistrict", how="left").sort("i")
    misuse_sites = set(fixed["fixed_site"].gather_every(33, offset=min(16, max(fixed.height - 1, 0))).to_list())
    least = 1 if d_idx == 0 else 0
    members = members.with_columns(
        pl.when(pl.col("mobility")).then(pl.col("home_site")).otherwise(pl.col("fixed_site")).alias("site_id"),
        pl.when(pl.col("key_group").is_not_null()).then(pl.lit("single"))
        .when(pl.col("zone") == "sealed").then(pl.lit("household"))
        .when(pl.col("zone") == "controlled").then(pl.lit("controlled"))
        .otherwise(pl.lit("default")).alias("policy"),
        pl.Series("order", rng.random(members.height)),
    ).with_columns(
        pl.when(pl.col("policy") == "single").then(1)
        .when(pl.col("policy") == "controlled").then(
            pl.when(pl.col("site_id").is_in(list(misuse_sites))).then(10).otherwise(5))
        .otherwise(pool_size).alias("capacity"),
        pl.when(pl.col("policy") == "household").then(pl.col("household_id")).otherwise(pl.lit("")).alias("group_extra"),
    )
    members = members.sort("site_id", "policy", "group_extra", "order").with_columns(
        (pl.int_range(pl.len()).over("site_id", "policy", "group_extra") // pl.col("capacity")).alias("local"))
    members = members.with_columns(
        pl.struct("site_id", "policy", "group_extra", "local").rank("dense").cast(pl.Int64).alias("tube"))
    tube_order = rng.permutation(int(members["tube"].max()) + 1) + 1_000_000
    members = members.with_columns(pl.Series("tube_code", tube_order[members["tube"].to_numpy()]))
    members = members.with_columns(
        pl.format("T{}{}", pl.lit(f"{d_idx:02d}"), pl.col("tube_code").cast(pl.Utf8).str.zfill(8)).alias("tube_barcode"))
    members = members.with_columns(pl.int_range(pl.len()).over("tube").alias("position"),
                                   pl.len().over("tube").alias("size"), pl.lit(False).alias("extra"),
                                   pl.lit(False).alias("voided"))
    tubes = members.group_by("tube", maintain_order=True).agg(
        pl.col("tube_barcode").first(), pl.col("site_id").first(), pl.col("district_code").first(),
        pl.col("capacity").first(), pl.col("policy").first(), pl.len().alias("members"))
    n_tubes = tubes.height
    # over-full tubes: one more person, already swabbed elsewhere (sampled twice)
    full = tubes.filter((pl.col("members") == pl.col("capacity")) & (pl.col("capacity") >= 5))
    over = full.sample(n=min(full.height, max(2 * least, n_tubes // 1000)), seed=int(rng.integers(1 << 31)))
    donors = members.filter(~pl.col("visitor") & (pl.col("capacity") > 1) & ~pl.col("tube").is_in(over["tube"].implode())).sample(
        n=over.height, seed=int(rng.integers(1 << 31)))
    extra = donors.with_columns(over["tube"].alias("tube"), over["tube_barcode"].alias("tube_barcode"),
                                over["site_id"].alias("site_id"), over["capacity"].alias("capacity"),
                                (over["capacity"]).alias("position"), pl.lit(True).alias("extra"))
    members = pl.concat([members, extra.select(members.columns)], how="vertical_relaxed")
    # voided scans: the add is voided; that person is not in that tube
    members = members.with_columns(pl.Series("voided", _pick(members.height, 0.002, rng, 2 * least, ~members["extra"].to_numpy())))
    tubes = tubes.with_columns(pl.col("tube").is_in(over["tube"].implode()).alias("over_full"))
    # tube times: a morning peak between 06:00 and 21:30; an add each 40 s; seal a minute later
    start_s = (rng.beta(2, 4, n_tubes) * sampling_hours * 3600).astype(np.int64)
    after_seal = _pick(n_tubes, 0.0005, rng, least)
    unsealed = _pick(n_tubes, 0.0002, rng, least, eligible=~after_seal)
    tubes = tubes.with_columns(pl.Series("start_s", start_s), pl.Series("add_after_seal", after_seal),
                               pl.Series("unsealed", unsealed))
    # the zone policy (DESIGN §8) per member, and per tube the smallest: what the warehouse must find
    allowed = (pl.when(pl.col("key_group").is_not_null()).then(1)
               .when((pl.col("zone") == "sealed") & pl.col("household_id").is_null()).then(1)
               .when(pl.col("zone") == "controlled").then(5)
               .when(pl.col("zone") == "sealed").then(None)
               .otherwise(pool_size))
    real = members.filter(~pl.col("voided")).group_by("tube").agg(
        pl.len().alias("real_members"), allowed.min().alias("allowed"),
        pl.col("household_id").filter(pl.col("zone") == "sealed").n_unique().alias("sealed_households"))
    tubes = tubes.join(real, on="tube", how="left").with_columns(pl.col("real_members").fill_null(0)).sort("tube")
    over_policy = tubes.filter((pl.col("real_members") > pl.col("allowed")) | (pl.col("sealed_households") > 1))
    twice = members.filter(~pl.col("voided")).group_by("i").agg(pl.col("tube").n_unique().alias("tubes")).filter(
        pl.col("tubes") > 1)
    truth = {
        "registered_sampled_people": int(members.filter(~pl.col("visitor") & ~pl.col("voided"))["i"].n_unique()),
        "visitors_outside_register": int(members.filter(pl.col("visitor") & ~pl.col("voided"))["i"].n_unique()),
        "member_rows": members.height,
        "voided_scans": int(members["voided"].sum()),
        "tubes": n_tubes,
        "tubes_by_capacity": {str(k): v for k, v in tubes.group_by("capacity").len().sort("capacity").iter_rows()},
        "tubes_sealed_early": int(tubes.filter(pl.col("members") < pl.col("capacity")).height),
        "over_full_tubes": tubes.filter(pl.col("real_members") > pl.col("capacity")).height,
        "over_policy_tubes": over_policy.height,
        "adds_after_seal_tubes": int(after_seal.sum()),
        "unsealed_tubes": int(unsealed.sum()),
        "people_sampled_twice": twice.height,
        "infected_sampled": int(members.filter(pl.col("infected") & ~pl.col("voided"))["i"].n_unique()),
    }
    return tubes, members, truth


def _scan_events(tubes: pl.DataFrame, members: pl.DataFrame, rng: np.random.Generator,
                 hours_per_file: int = 1) -> pl.DataFrame:
    base = pl.lit(ROUND_START)
    adds = members.join(tubes.select("tube", "start_s", "add_after_seal", "members"), on="tube").with_columns(
        (base + pl.duration(seconds=pl.col("start_s") + 40 * pl.col("position"))).alias("at"))
    voids = adds.filter(pl.col("voided")).with_columns((pl.col("at") + pl.duration(seconds=15)).alias("at"),
                                                       pl.lit("void").alias("event"))
    last_add = adds.group_by("tube").agg(pl.col("at").max().alias("last_at"))
    seals = tubes.filter(~pl.col("unsealed")).join(last_add, on="tube").with_columns(
        pl.when(pl.col("add_after_seal")).then(pl.col("last_at") - pl.duration(seconds=20))
        .otherwise(pl.col("last_at") + pl.duration(seconds=60)).alias("at"))
    person_cols = ["id_type", "id_number", "name", "mobile", "capacity"]
    events = pl.concat([
        adds.with_columns(pl.lit("add").alias("event")).select("at", "site_id", "tube_barcode", "event", "district_code", *person_cols),
        voids.select("at", "site_id", "tube_barcode", "event", "district_code", *person_cols),
        seals.select("at", "site_id", "tube_barcode", pl.lit("seal").alias("event"), "district_code",
                     *(pl.lit(None, dtype=pl.Utf8).alias(c) for c in person_cols[:-1]), pl.lit(None, dtype=pl.Int32).alias("capacity")),
    ], how="vertical_relaxed")
    local = pl.col("at").dt.convert_time_zone("Asia/Shanghai")
    events = events.sort("at", "tube_barcode", "event", "id_number", nulls_last=True)
    events = events.with_columns(pl.Series("no_offset", rng.random(events.height) < 0.1))
    return events.select(
        pl.when(pl.col("no_offset")).then(local.dt.strftime("%Y-%m-%d %H:%M:%S"))
        .otherwise(local.dt.strftime("%Y-%m-%dT%H:%M:%S%:z")).alias("scanned_at"),
        "site_id",
        pl.format("C{}", pl.col("site_id").str.slice(1)).alias("collector_id"),
        "tube_barcode", "event", "id_type", "id_number", "name",
        pl.col("mobile").alias("phone"), pl.col("capacity").cast(pl.Utf8).alias("capacity"),
        "district_code", (local.dt.hour() // hours_per_file * hours_per_file).alias("hour"))


# --- deliver: boxes and receipts -----------------------------------------------------------------

def _by_period(frame: pl.DataFrame, column: str, hours_per_file: int) -> dict[tuple[str], pl.DataFrame]:
    """Rows cut by the city-time period of ``column`` (an ISO text with offset), named MMDD_HH00."""
    local = pl.col(column).str.to_datetime("%Y-%m-%dT%H:%M:%S%:z").dt.convert_time_zone("Asia/Shanghai")
    start = local.dt.hour() // hours_per_file * hours_per_file
    period = pl.format("{}_{}00", local.dt.strftime("%m%d"), start.cast(pl.Utf8).str.zfill(2))
    return frame.with_columns(period.alias("period")).partition_by("period", as_dict=True, maintain_order=True)


def _custody(tubes: pl.DataFrame, labs: pl.DataFrame, rng: np.random.Generator, d_idx: int = 0):
    n_labs = labs.height
    lab_ids = labs["lab_id"].to_list()
    seal_at = pl.lit(ROUND_START) + pl.duration(seconds=pl.col("start_s") + 40 * pl.col("members") + 60)
    packed = tubes.filter(~pl.col("unsealed")).with_columns(seal_at.alias("sealed_at")).sort("site_id", "sealed_at")
    # a box leaves each site every hour, 80 tubes at most
    hour = (pl.col("sealed_at") - pl.lit(ROUND_START)).dt.total_hours()
    packed = packed.with_columns(hour.alias("seal_hour")).with_columns(
        (pl.col("seal_hour") * 100 + pl.int_range(pl.len()).over("site_id", "seal_hour") // 80).alias("box_local"))
    packed = packed.with_columns(
        pl.format("B{}-{}", pl.col("site_id"), pl.col("box_local").cast(pl.Utf8).str.zfill(4)).alias("box_id"),
        pl.lit(lab_ids[d_idx % n_labs]).alias("planned_lab"))
    boxes = packed.group_by("box_id", maintain_order=True).agg(
        pl.col("sealed_at").max().alias("last_seal"), pl.col("planned_lab").first(), pl.col("site_id").first())
    nb = boxes.height
    delay_h = rng.uniform(1.0, 3.0, nb)
    least = 1 if d_idx == 0 else 0
    late = _pick(nb, 0.01, rng, least)
    delay_h = np.where(late, delay_h + 4.0, delay_h)
    lost = np.zeros(nb, dtype=bool)
    wrong = np.zeros(nb, dtype=bool)
    if nb > 10 and (d_idx == 0 or rng.random() < 0.25):
        pick = rng.choice(nb, 2, replace=False)
        lost[pick[0]] = True
        wrong[pick[1]] = True
    boxes = boxes.with_columns(
        (pl.col("last_seal") + pl.duration(minutes=10)).alias("packed_at"),
        (pl.col("last_seal") + pl.duration(minutes=30)).alias("departed_at"),
        pl.Series("lost", lost), pl.Series("wrong_lab", wrong),
        pl.format("K{}", pl.int_range(pl.len()) % 500).alias("courier_id"),
    ).with_columns((pl.col("departed_at") + pl.duration(seconds=pl.Series(delay_h * 3600).cast(pl.Int64))).alias("received_at"))
    boxes = boxes.with_columns(
        pl.when(pl.col("wrong_lab")).then(
            pl.col("planned_lab").replace_strict(lab_ids, lab_ids[1:] + lab_ids[:1], return_dtype=pl.Utf8))
        .otherwise(pl.col("planned_lab")).alias("lab_id"))
    packed = packed.join(boxes.select("box_id", "packed_at", "departed_at", "courier_id", "received_at", "lab_id", "lost"),
                         on="box_id").sort("box_id", "tube_barcode")
    manifests = packed.select("box_id", "tube_barcode", "site_id", _iso("packed_at").alias("packed_at"), "courier_id",
                              _iso("departed_at").alias("departed_at"), pl.col("planned_lab").alias("lab_id"))
    received = packed.filter(~pl.col("lost"))
    nr = received.height
    leaked = _pick(nr, 0.0002, rng, least)
    unlabelled = _pick(nr, 0.0002, rng, least, eligible=~leaked)
    insufficient = _pick(nr, 0.0001, rng, least, eligible=~leaked & ~unlabelled)
    condition = np.where(leaked, "leaked", np.where(unlabelled, "unlabelled", np.where(
        insufficient, "insufficient", np.where(rng.random(nr) < 0.3, "", "ok"))))
    received = received.with_columns(pl.Series("condition", condition))
    # one tube found in a box other than the one on its manifest; one tube received, never collected
    # (a small district may have a single box, or none received: then nothing is moved or stray)
    moved = received.filter(pl.col("condition").is_in(["ok", ""])).head(1)
    other_box = received.filter(~pl.col("box_id").is_in(moved["box_id"].implode())).head(1)
    if other_box.height == 0:
        moved = moved.head(0)
    else:
        received = received.with_columns(
            pl.when(pl.col("tube_barcode") == moved["tube_barcode"][0]).then(pl.lit(other_box["box_id"][0]))
            .otherwise(pl.col("box_id")).alias("box_id"))
    stray_code = f"T{d_idx:02d}99999999"
    stray = (other_box if other_box.height else received.head(1)).with_columns(
        pl.lit(stray_code).alias("tube_barcode"), pl.lit("ok").alias("condition"))
    receipts = pl.concat([received, stray.select(received.columns)]).sort("received_at").select(
        "lab_id", "box_id", "tube_barcode", _iso("received_at").alias("received_at"), "condition")
    tubes = tubes.join(received.select("tube_barcode", "received_at", "lab_id", "condition", "box_id"),
                       on="tube_barcode", how="left").join(
        packed.select("tube_barcode", "sealed_at", "lost"), on="tube_barcode", how="left")
    tubes = tubes.with_columns(pl.col("lost").fill_null(False) | pl.col("unsealed"))
    late_tubes = tubes.filter((pl.col("received_at") - pl.col("sealed_at")) > pl.duration(hours=4))
    refused = tubes.filter(pl.col("condition").is_in(["leaked", "unlabelled", "insufficient"]))
    truth = {
        "boxes": nb,
        "lost_box_ids": boxes.filter(pl.col("lost"))["box_id"].to_list(),
        "lost_tubes": int(packed.filter(pl.col("lost")).height),
        "wrong_lab_box_ids": boxes.filter(pl.col("wrong_lab"))["box_id"].to_list(),
        "not_on_manifest_tubes": moved["tube_barcode"].to_list(),
        "received_not_collected_tubes": [stray_code] if stray.height else [],
        "refused_tubes_by_condition": dict(refused.group_by("condition").len().sort("condition").iter_rows()),
        "late_received_tubes": late_tubes.height,
    }
    return (manifests, receipts), truth, tubes


# --- test: plates, wells, Ct values ----------------------------------------------------------------

WELLS = [f"{r}{c}" for r in "ABCDEFGH" for c in range(1, 13)]


def _plate_layout(tubes: pl.DataFrame, run_prefix: str, finish_after_h: float) -> pl.DataFrame:
    """Tubes (``tube_barcode``, ``lab_id``, ``ready_at``) onto 96-well plates of 94 tubes + PC + NC."""
    placed = tubes.sort("lab_id", "ready_at", "tube_barcode").with_columns(
        (pl.int_range(pl.len()).over("lab_id") // 94).alias("plate_local"),
        (pl.int_range(pl.len()).over("lab_id") % 94).alias("slot"))
    placed = placed.with_columns(
        pl.format("{}{}-{}", pl.lit(run_prefix), pl.col("lab_id"), pl.col("plate_local").cast(pl.Utf8).str.zfill(5)).alias("plate_id"))
    finish = placed.group_by("plate_id").agg(
        (pl.col("ready_at").max() + pl.duration(minutes=int(finish_after_h * 60))).alias("finished_at"))
    return placed.join(finish, on="plate_id").sort("lab_id", "plate_id", "slot")


def _ct_rows(placed: pl.DataFrame, outcome: str, rng: np.random.Generator) -> pl.DataFrame:
    """Long rows (plate, well, sample, target, ct text) for tubes whose ``outcome`` column says
    positive, negative, grey, single or invalid; plus the controls of every plate."""
    n = placed.height
    u = lambda lo, hi: pl.Series(rng.uniform(lo, hi, n)).round(2).cast(pl.Utf8)  # noqa: E731
    nd = pl.Series(np.array(NOT_DETECTED)[rng.integers(0, len(NOT_DETECTED), n)])
    o = pl.col(outcome)
    orf = (pl.when(o == "positive").then(u(18, 34)).when(o == "grey").then(u(37.2, 39.8)).otherwise(nd))
    ngene = (pl.when(o.is_in(["positive", "single"])).then(u(20, 35)).otherwise(nd))
    ic = pl.when(o == "invalid").then(nd).otherwise(u(24, 32))
    wells = placed.with_columns(pl.col("slot").replace_strict(list(range(96)), WELLS, return_dtype=pl.Utf8).alias("well"),
                                orf.alias("ORF1ab"), ngene.alias("N"), ic.alias("IC"))
    long = wells.unpivot(index=["lab_id", "plate_id", "finished_at", "well", "tube_barcode"], on=["ORF1ab", "N", "IC"],
                         variable_name="target", value_name="ct").rename({"tube_barcode": "sample"})
    plates = placed.group_by("lab_id", "plate_id", maintain_order=True).agg(
        pl.col("finished_at").first(), pl.col("plate_failed").first() if "plate_failed" in placed.columns else pl.lit(False).alias("plate_failed"))
    controls = []
    for sample, well in (("PC", "H11"), ("NC", "H12")):  # wells 95 and 96: tubes take 1 to 94
        for target in ("ORF1ab", "N", "IC"):
            ct = (pl.lit("30.1") if sample == "PC" else
                  pl.when(pl.col("plate_failed") & (target == "ORF1ab")).then(pl.lit("31.4")).otherwise(pl.lit("")))
            if sample == "NC" and target == "IC":
                ct = pl.lit("")
            controls.append(plates.select("lab_id", "plate_id", "finished_at", pl.lit(well).alias("well"),
                                          pl.lit(sample).alias("sample"), pl.lit(target).alias("target"), ct.alias("ct")))
    return pl.concat([long, *controls], how="vertical_relaxed")


def _results(tubes: pl.DataFrame, members: pl.DataFrame, rng: np.random.Generator, code: str = "", d_idx: int = 0):
    least = 2 if d_idx == 0 else 0
    infected = members.filter(pl.col("infected") & ~pl.col("voided")).select("tube").unique().with_columns(
        pl.lit(True).alias("has_infected"))
    tested = tubes.filter(pl.col("condition").is_in(["ok", ""]) & ~pl.col("lost")).join(
        infected, on="tube", how="left").with_columns(pl.col("has_infected").fill_null(False)).sort("tube_barcode")
    nt = tested.height
    clean = ~tested["has_infected"].to_numpy()
    grey = _pick(nt, 0.0005, rng, least, clean)
    single = _pick(nt, 0.0003, rng, least, clean & ~grey)
    invalid = _pick(nt, 0.0005, rng, least, clean & ~grey & ~single)
    # on the re-run: half the single-target tubes persist, a tenth of the invalid ones stay invalid
    persist = _pick(nt, 0.00015, rng, least // 2, single)
    still_invalid = _pick(nt, 0.00005, rng, least // 2, invalid)
    first = (pl.when(pl.col("has_infected")).then(pl.lit("positive"))
             .when(pl.Series(grey)).then(pl.lit("grey"))
             .when(pl.Series(single)).then(pl.lit("single"))
             .when(pl.Series(invalid)).then(pl.lit("invalid"))
             .otherwise(pl.lit("negative")))
    tested = tested.with_columns(first.alias("first"), pl.col("received_at").alias("ready_at"),
                                 pl.Series("persist", persist | still_invalid))
    run1 = _plate_layout(tested, f"P{code}-", 3.0)
    plate_ids = run1["plate_id"].unique().sort()
    # a failed plate holds only tubes that are plainly positive or negative, so every grey,
    # single-target and invalid first reading is seen on a valid plate
    eligible = run1.group_by("plate_id").agg(pl.col("first").is_in(["positive", "negative"]).all().alias("plain")).filter(
        pl.col("plain"))["plate_id"].sort()
    n_failed = min(eligible.len(), max(1 if d_idx == 0 else 0, plate_ids.len() // 200))
    failed = set(eligible.sample(n=n_failed, seed=int(rng.integers(1 << 31))).to_list())
    run1 = run1.with_columns(pl.col("plate_id").is_in(list(failed)).alias("plate_failed"))
    rows1 = _ct_rows(run1, "first", rng)
    # second runs: tubes of failed plates (same outcome again), grey, single and invalid tubes
    rerun = run1.filter(pl.col("plate_failed") | pl.col("first").is_in(["grey", "single", "invalid"])).with_columns(
        pl.when(pl.col("plate_failed") & pl.col("first").is_in(["positive", "negative"])).then(pl.col("first"))
        .when(pl.col("first") == "grey").then(pl.lit("negative"))
        .when(pl.col("first") == "single").then(pl.when(pl.col("persist")).then(pl.lit("single")).otherwise(pl.lit("negative")))
        .when(pl.col("first") == "invalid").then(pl.when(pl.col("persist")).then(pl.lit("invalid")).otherwise(pl.lit("negative")))
        .otherwise(pl.col("first")).alias("second"),
        pl.col("finished_at").alias("ready_at")).drop("plate_id", "plate_local", "slot", "finished_at", "plate_failed")
    run2 = _plate_layout(rerun, f"RR{code}-", 3.0).with_columns(pl.lit(False).alias("plate_failed"))
    rows2 = _ct_rows(run2, "second", rng) if run2.height else rows1.clear()
    results = pl.concat([rows1, rows2])
    final = tested.join(run2.select("tube", "second"), on="tube", how="left").with_columns(
        pl.coalesce("second", "first").alias("final"))
    positive_pools = final.filter(pl.col("final").is_in(["positive", "single"]) & (pl.col("capacity") > 1))
    positive_singles = final.filter(pl.col("final").is_in(["positive", "single"]) & (pl.col("capacity") == 1))
    twice_invalid = final.filter((pl.col("first") == "invalid") & (pl.col("final") == "invalid"))
    single_first = final.filter(pl.col("first") == "single")
    truth = {
        "plates_first_run": int(run1["plate_id"].n_unique()),
        "plates_rerun": int(run2["plate_id"].n_unique()) if run2.height else 0,
        "failed_plate_ids": sorted(failed),
        "grey_zone_tubes": int(final.filter(pl.col("first") == "grey").height),
        "single_target_tubes": {"persisting": int(single_first.filter(pl.col("final") == "single").height),
                                "resolved": int(single_first.filter(pl.col("final") == "negative").height)},
        "invalid_tubes": int(final.filter(pl.col("first") == "invalid").height),
        "twice_invalid_tubes": sorted(twice_invalid["tube_barcode"].to_list()),
        "positive_pool_tubes": sorted(positive_pools["tube_barcode"].to_list()),
        "positive_single_tubes": sorted(positive_singles["tube_barcode"].to_list()),
    }
    need = pl.concat([
        positive_pools.select("tube", pl.lit("pool_positive").alias("reason")),
        twice_invalid.select("tube", pl.lit("invalid").alias("reason")),
        tubes.filter(pl.col("condition").is_in(["leaked", "unlabelled", "insufficient"])).select("tube", pl.lit("tube_refused").alias("reason")),
        tubes.filter(pl.col("lost")).select("tube", pl.lit("tube_lost").alias("reason")),
    ])
    return results, truth, need


def _write_results(out: Path, results: pl.DataFrame, files: dict[str, int], prefix: str = "", district: str = "") -> None:
    """Most plates as the generic CSV (per lab and hour); per lab a few plates as QuantStudio and
    CFX Maestro exports laid out like the instruments' own files."""
    plates = results.select("lab_id", "plate_id").unique(maintain_order=True)
    instrument: dict[str, str] = {}
    if not prefix:
        for (lab,), part in plates.partition_by("lab_id", as_dict=True, maintain_order=True).items():
            ids = part["plate_id"].to_list()
            if len(ids) >= 2:
                instrument[ids[0]] = "quantstudio"
            if len(ids) >= 3:
                instrument[ids[1]] = "cfx"
    generic = results.filter(~pl.col("plate_id").is_in(list(instrument)))
    generic = generic.with_columns(
        pl.col("finished_at").dt.convert_time_zone("Asia/Shanghai").dt.hour().alias("hour"),
        pl.col("plate_id").alias("run_id"))
    for (lab, hour), part in generic.partition_by("lab_id", "hour", as_dict=True, maintain_order=True).items():
        path = out / "results" / lab / f"{prefix}results_{lab}_{district}_{hour:02d}00.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.select("lab_id", "run_id", "plate_id", "well", "sample", "target", "ct",
                    _iso("finished_at").alias("finished_at")).write_csv(path)
        files["results"] = files.get("results", 0) + 1
    for plate, layout in instrument.items():
        part = results.filter(pl.col("plate_id") == plate)
        lab = part["lab_id"][0]
        path = out / "results" / lab / f"{plate}.{'txt' if layout == 'quantstudio' else 'csv'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _quantstudio(part, plate) if layout == "quantstudio" else _cfx(part)
        path.write_text(text, encoding="utf-8")
        # the instrument software writes its export when the run ends: a CFX export carries no
        # run time of its own, so the file's modification time is when it landed in the inbox
        landed = part["finished_at"].max().timestamp()
        os.utime(path, (landed, landed))
        files["results"] = files.get("results", 0) + 1


def _quantstudio(part: pl.DataFrame, plate: str) -> str:
    finished = part["finished_at"][0].astimezone(SH)
    head = [
        "* Block Type = 96-Well Block (0.2mL)", "* Chemistry = TAQMAN",
        f"* Experiment Barcode = {plate}", "* Experiment Comment = NA",
        f"* Experiment File Name = D:\\\\runs\\\\{plate}.eds", f"* Experiment Name = {plate}",
        f"* Experiment Run End Time = {finished.strftime('%Y-%m-%d %I:%M:%S %p')} CST",
        "* Experiment Type = Standard Curve", "* Instrument Type = QuantStudio(TM) 7 Flex System",
        "* Passive Reference = ROX", "", "[Results]",
        "Well\tWell Position\tOmit\tSample Name\tTarget Name\tTask\tReporter\tQuencher\tCT\tCt Mean\tCt SD",
    ]
    body = []
    for row in part.sort("well", "target").iter_rows(named=True):
        number = WELLS.index(row["well"]) + 1
        ct = row["ct"] if row["ct"] not in ("", "NaN", "No Ct", None) else "Undetermined"
        body.append(f"{number}\t{row['well']}\tfalse\t{row['sample']}\t{row['target']}\tUNKNOWN\tFAM\tNFQ-MGB\t{ct}\t\t")
    return "\n".join(head + body) + "\n"


def _cfx(part: pl.DataFrame) -> str:
    head = ",Well,Fluor,Target,Content,Sample,Biological Set Name,Cq,Cq Mean,Cq Std. Dev,Starting Quantity (SQ),Log Starting Quantity,SQ Mean,SQ Std. Dev,Set Point,Well Note"
    fluor = {"ORF1ab": "FAM", "N": "VIC", "IC": "Cy5"}
    body = []
    for row in part.sort("well", "target").iter_rows(named=True):
        well = row["well"][0] + row["well"][1:].zfill(2)
        ct = row["ct"] if row["ct"] not in ("", "Undetermined", "No Ct", None) else "NaN"
        content = {"PC": "Pos Ctrl", "NC": "Neg Ctrl"}.get(row["sample"], "Unkn")
        body.append(f",{well},{fluor[row['target']]},{row['target']},{content},{row['sample']},,{ct},{ct},0,NaN,NaN,NaN,0,60,")
    return "\n".join([head] + body) + "\n"


# --- re-samples: single tubes, at home, the next morning -----------------------------------------

def _resamples(need: pl.DataFrame, members: pl.DataFrame, rng: np.random.Generator, d_idx: int,
               labs: pl.DataFrame):
    who = members.filter(~pl.col("voided")).join(need.unique("tube"), on="tube").unique("i", keep="first")
    who = who.sort("i").with_columns(pl.int_range(pl.len()).alias("k"))
    lab = labs["lab_id"][d_idx % labs.height]
    n = who.height
    truth = {"resample_people": n, "by_reason": dict(who.group_by("reason").len().sort("reason").iter_rows()),
             "positive_on_resample": int(who["infected"].sum())}
    if n == 0:
        return [], truth
    who = who.with_columns(
        pl.format("R{}{}", pl.lit(f"{d_idx:02d}"), (pl.col("k") + 1).cast(pl.Utf8).str.zfill(8)).alias("tube_barcode"),
        pl.col("home_site").alias("site_id"),
        (pl.lit(RESAMPLE_DAY) + pl.duration(seconds=pl.col("k") * 7 % 14400)).alias("at"))
    scans = pl.concat([
        who.select(_iso("at").alias("scanned_at"), "site_id", pl.format("C{}", pl.col("site_id")).alias("collector_id"),
                   "tube_barcode", pl.lit("add").alias("event"), "id_type", "id_number", "name",
                   pl.col("mobile").alias("phone"), pl.lit("1").alias("capacity")),
        who.with_columns((pl.col("at") + pl.duration(seconds=30)).alias("at")).select(
                   _iso("at").alias("scanned_at"),
                   "site_id", pl.format("C{}", pl.col("site_id")).alias("collector_id"), "tube_barcode",
                   pl.lit("seal").alias("event"), *(pl.lit("").alias(c) for c in ("id_type", "id_number", "name", "phone", "capacity"))),
    ])
    who = who.with_columns(pl.format("BR-{}", pl.col("site_id")).alias("box_id"),
                           (pl.col("at").max().over("site_id") + pl.duration(minutes=20)).alias("packed_at"))
    manifests = who.select("box_id", "tube_barcode", "site_id", _iso("packed_at").alias("packed_at"),
                           pl.lit("K-home").alias("courier_id"), _iso("packed_at").alias("departed_at"),
                           pl.lit(lab).alias("lab_id"))
    who = who.with_columns((pl.col("packed_at") + pl.duration(hours=1)).alias("received_at"), pl.lit(lab).alias("lab_id"))
    receipts = who.select("lab_id", "box_id", "tube_barcode", _iso("received_at").alias("received_at"), pl.lit("ok").alias("condition"))
    placed = _plate_layout(who.select("tube_barcode", "lab_id", pl.col("received_at").alias("ready_at"),
                                      pl.when(pl.col("infected")).then(pl.lit("positive")).otherwise(pl.lit("negative")).alias("outcome")),
                           f"RS{d_idx:02d}-", 2.0).with_columns(pl.lit(False).alias("plate_failed"))
    results = _ct_rows(placed, "outcome", rng)
    return [("scans", "resample/scans_resample", scans), ("manifests", "manifests_resample", manifests),
            ("receipts", "receipts_resample", receipts), ("results", "", results)], truth
