"""Small rules of the reminders: quiet hours across midnight, who is due (the sending: tests/notify)."""

from kernel.config import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from reporting.reminders import in_quiet_hours
from tests.builders import REGISTER_HEADER, open_test_round, register_row, ric
from kernel.config import SmsConfig

SH = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(("hour", "minute", "quiet"), [(20, 59, False), (21, 0, True), (23, 30, True), (0, 0, True),
                                                       (7, 59, True), (8, 0, False), (12, 0, False)])
def test_quiet_hours_across_midnight(hour, minute, quiet):
    assert in_quiet_hours(datetime(2022, 4, 4, hour, minute, tzinfo=SH), SmsConfig(), "Asia/Shanghai") is quiet


def test_quiet_hours_within_a_day_and_in_city_time():
    lunch = replace(SmsConfig(), quiet_start="12:00", quiet_end="13:00")
    assert in_quiet_hours(datetime(2022, 4, 4, 12, 30, tzinfo=SH), lunch, "Asia/Shanghai")
    assert not in_quiet_hours(datetime(2022, 4, 4, 13, 0, tzinfo=SH), lunch, "Asia/Shanghai")
    # 14:00 UTC is 22:00 in Shanghai
    assert in_quiet_hours(datetime(2022, 4, 4, 14, 0, tzinfo=ZoneInfo("UTC")), SmsConfig(), "Asia/Shanghai")


SITES = ("site_id,name,district,subdistrict,community,kind,opens,closes\n"
         "S1,外滩小学采样点,黄浦区,外滩街道,中山居委,fixed,08:00,20:00\n"
         "S2,南京东路采样点,黄浦区,南京东路街道,南京居委,fixed,08:00,20:00\n"
         "H1,上门队,黄浦区,外滩街道,中山居委,home,,\n")


def small_city(tmp_path, cfg, rows: list[str], zones: str = "grid,zone,since\n", districts=None, key_groups=None):
    """A register of ``rows`` (``tests.builders.register_row``), the sites above, the zones
    given, round R1 (04-04 06:00–22:00); returns a planner at a given time."""
    from ingest.take import take_file
    from reporting.reminders import plan_reminders
    from tests.conftest import write
    from kernel.secrets import id_hash_key
    from warehouse.views import define_views
    from warehouse.connection import open_warehouse
    from ingest.discover import discover

    inbox = tmp_path / "inbox"
    write(inbox / "sites/s.csv", SITES)
    write(inbox / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(rows) + "\n")
    if zones.count("\n") > 1:
        write(inbox / "zones/z.csv", zones)
    for f in discover(inbox):
        assert take_file(f, cfg).status == "accepted"
    open_test_round(cfg, districts=districts)

    def plan(at: datetime):
        with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
            define_views(con, cfg)
            return plan_reminders(con, cfg.sms, cfg.city.timezone, "R1", at, key_groups)

    return plan


def test_only_mobiles_are_planned(tmp_path, cfg):
    """Issue 13.4: a landline (021-6321 1234) became an SMS target."""
    phones = ["13800138000", "021-6321 1234", "+852 9123 4567", "+852 2123 4567"]
    plan = small_city(tmp_path, cfg, [register_row(ric(f"31010119850101{i:03d}"), phone=p) for i, p in enumerate(phones)])
    result = plan(datetime(2022, 4, 4, 10, tzinfo=SH))
    assert (result.counts["due"], result.counts["not_mobile"]) == (2, 2)
    assert sorted(result.due["phone"].to_list()) == ["+85291234567", "+8613800138000"]


def test_sealed_controlled_and_limited_mobility(tmp_path, cfg):
    """Issue 13.3: a sealed-zone resident got an SMS sending them to a fixed site. Sealed zone and
    limited mobility: door to door, no SMS to a site; controlled zone: a site of their own
    community only, else door to door."""

    def person(i, grid, mobility="false", community="中山居委"):
        return register_row(ric(f"31010119850101{i:03d}"), phone=f"1380013800{i}", grid=grid,
                            mobility=mobility).replace("中山居委", community)

    rows = [person(0, "G1"), person(1, "GS"), person(2, "G1", mobility="true"),
            person(3, "GC"), person(4, "GC2", community="无采样点居委"), person(5, "GP")]
    zones = ("grid,zone,since\nGS,sealed,2022-04-01T00:00:00+08:00\nGC,controlled,2022-04-01T00:00:00+08:00\n"
             "GC2,controlled,2022-04-01T00:00:00+08:00\nGP,precaution,2022-04-01T00:00:00+08:00\n"
             "G1,sealed,2022-04-05T00:00:00+08:00\n")  # G1 sealed only from the next day
    result = small_city(tmp_path, cfg, rows, zones)(datetime(2022, 4, 4, 10, tzinfo=SH))
    assert result.counts["door_to_door"] == 3  # the sealed grid, limited mobility, controlled without a site
    assert result.counts["due"] == 3  # G1 (not yet sealed at as_of), the controlled grid with a site, precaution
    assert sorted(result.due["phone"].to_list()) == ["+8613800138000", "+8613800138003", "+8613800138005"]
    assert set(result.due["body"].str.contains("外滩小学采样点").to_list()) == {True}


def test_no_reminder_after_the_deadline(tmp_path, cfg):
    """Issue 13.1: the next morning the sweep sent "请于04月04日22:00前…", 11 h past."""
    plan = small_city(tmp_path, cfg, [register_row(ric(f"31010119850101{i:03d}"), phone=f"1380013800{i}")
                                      for i in range(3)])
    assert plan(datetime(2022, 4, 4, 19, tzinfo=SH)).counts["due"] == 3
    late = plan(datetime(2022, 4, 5, 9, tzinfo=SH))
    assert late.due.is_empty() and late.counts["after_deadline"] == 3 and late.counts["due"] == 0


def test_the_door_to_door_people_are_on_their_grids_worklist(tmp_path, cfg):
    """Issue 13.3: an untested sealed-zone resident was on no door-to-door list. Whom the
    reminders send to no site, the grid workers' worklist holds (one rule: sampling_route)."""
    import polars as pl

    from reporting.districts import write_district_pack
    from reporting.report import write_report
    from kernel.secrets import id_hash_key
    from warehouse.views import define_views
    from warehouse.connection import open_warehouse

    def person(i, grid, mobility="false", community="中山居委"):
        return register_row(ric(f"31010119850101{i:03d}"), phone=f"1380013800{i}", grid=grid,
                            mobility=mobility).replace("中山居委", community)

    rows = [person(0, "G1"), person(1, "GS"), person(2, "G1", mobility="true"),
            person(3, "GC"), person(4, "GC2", community="无采样点居委")]
    zones = ("grid,zone,since\nGS,sealed,2022-04-01T00:00:00+08:00\nGC,controlled,2022-04-01T00:00:00+08:00\n"
             "GC2,controlled,2022-04-01T00:00:00+08:00\n")
    plan = small_city(tmp_path, cfg, rows, zones)
    at = datetime(2022, 4, 4, 10, tzinfo=SH)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        define_views(con, cfg, snapshot=True)
        write_report(con, cfg, "R1", at, tmp_path / "out")
    write_district_pack(tmp_path / "out", "黄浦区")
    work = pl.concat([pl.read_csv(f, infer_schema=False)
                      for f in (tmp_path / "out" / "districts" / "黄浦区" / "worklists").glob("*.csv")])
    listed = dict(zip(work["id_number"], work["task"]))
    assert listed == {ric("31010119850101001"): "home sampling (untested, sealed zone)",
                      ric("31010119850101002"): "home sampling (untested, limited mobility)",
                      ric("31010119850101004"): "home sampling (untested, controlled zone, no site in the community)"}
    due = set(plan(at).due["phone"])
    assert due == {"+8613800138000", "+8613800138003"}  # the others are visited, not sent


def test_the_cool_down_is_judged_in_the_sweeps_time(tmp_path, cfg):
    """Issue 13.2: a backdated sweep made every person "cooled_down" for any later --as-of (the
    outbox kept the wall-clock time of planning)."""
    from kernel.secrets import id_hash_key
    from warehouse.connection import open_warehouse
    from warehouse.writer import record_planned_reminders

    cfg = replace(cfg, sms=replace(cfg.sms, cooldown_hours=6.0))
    plan = small_city(tmp_path, cfg, [register_row(ric(f"31010119850101{i:03d}"), phone=f"1380013800{i}")
                                      for i in range(2)])
    first = plan(datetime(2022, 4, 4, 8, tzinfo=SH))
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        assert record_planned_reminders(con, first.due, "webhook", None) == 2
        (planned,) = con.sql("SELECT DISTINCT planned_at FROM sms_outbox").fetchall()[0]
    assert planned == datetime(2022, 4, 4, 8, tzinfo=SH)  # the sweep's time, not the machine's
    assert plan(datetime(2022, 4, 4, 12, tzinfo=SH)).counts["cooled_down"] == 2  # within the 6 h cool-down
    later = plan(datetime(2022, 4, 4, 14, 30, tzinfo=SH))  # 6 h 30 min after: due again
    assert later.counts["cooled_down"] == 0 and later.counts["due"] == 2


def test_key_group_members_overdue_on_their_cycle_are_reminded(tmp_path, cfg):
    """Issue 13.10: key-group members overdue on their cycle got no reminder. The round covers
    浦东新区 only; a medical worker of 黄浦区, never sampled, is overdue on their weekly cycle."""
    medic = register_row(ric("31010119850101000"), phone="13800138000", key_group="medical")
    other = register_row(ric("31010119850101001"), phone="13800138001")
    plan = small_city(tmp_path, cfg, [medic, other], districts=["浦东新区"], key_groups=cfg.key_groups)
    result = plan(datetime(2022, 4, 4, 10, tzinfo=SH))
    assert result.counts["key_group_due"] == 1 and result.due["phone"].to_list() == ["+8613800138000"]
    (body,) = result.due["body"].to_list()
    assert body == "【核酸筛查】您属于重点人群，本周期核酸检测已逾期（应检：无检测记录），请尽快到外滩小学采样点采样。"
