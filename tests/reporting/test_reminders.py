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
