"""Small rules of the reminders: quiet hours across midnight, Aliyun's percent-encoding."""

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from reporting.reminders import in_quiet_hours
from reporting.sms import AliyunProvider, aliyun_percent
from tubetrail.config import SmsConfig

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


def test_aliyun_percent_encoding_and_numbers():
    assert aliyun_percent("a b*c~d/é") == "a%20b%2Ac~d%2F%C3%A9"
    assert AliyunProvider.number("+8613800138000") == "13800138000"
    assert AliyunProvider.number("+85291234567") == "0085291234567"


def test_only_mobiles_are_planned(tmp_path, cfg):
    """Issue 13.4: a landline (021-6321 1234) became an SMS target."""
    from flows.feeds import take_file
    from reporting.reminders import plan_reminders
    from tests.conftest import write
    from tests.helpers import REGISTER_HEADER, register_row, ric
    from tubetrail.secrets import id_hash_key
    from tubetrail.views import define_views
    from warehouse.connection import open_warehouse
    from warehouse.inbox import discover
    from warehouse.writer import open_round

    phones = ["13800138000", "021-6321 1234", "+852 9123 4567", "+852 2123 4567"]
    rows = [register_row(ric(f"31010119850101{i:03d}"), phone=p) for i, p in enumerate(phones)]
    inbox = tmp_path / "inbox"
    write(inbox / "sites/s.csv", "site_id,name,district,subdistrict,community,kind,opens,closes\n"
                                 "S1,外滩小学采样点,黄浦区,外滩街道,中山居委,fixed,08:00,20:00\n")
    write(inbox / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(rows) + "\n")
    for f in discover(inbox):
        assert take_file(f, cfg).status == "accepted"
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        open_round(con, round_id="R1", starts_at=datetime(2022, 4, 4, 6, tzinfo=SH),
                   ends_at=datetime(2022, 4, 4, 22, tzinfo=SH), districts=None, pool_size=10, run_id=None)
        define_views(con, cfg)
        plan = plan_reminders(con, cfg.sms, cfg.city.timezone, "R1", datetime(2022, 4, 4, 10, tzinfo=SH))
    assert (plan.counts["due"], plan.counts["not_mobile"]) == (2, 2)
    assert sorted(plan.due["phone"].to_list()) == ["+85291234567", "+8613800138000"]
