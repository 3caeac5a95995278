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


def test_retry_after_in_seconds_or_as_an_http_date_with_jitter_and_backoff_with_jitter():
    import random

    import httpx

    from reporting.sms import retry_delay

    rng = random.Random(7)
    seconds = httpx.Response(429, headers={"Retry-After": "3"})
    assert all(3.0 <= retry_delay(seconds, 1, rng) <= 3.35 for _ in range(50))
    # an HTTP date, read against the answer's own Date (no clock of this machine involved)
    dated = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:12 GMT",
                                         "Date": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert all(12.0 <= retry_delay(dated, 1, rng) <= 13.25 for _ in range(50))
    past = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT",
                                        "Date": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert 0.0 <= retry_delay(past, 1, rng) <= 0.05
    # no Retry-After (or one that is neither): exponential backoff, jittered, never all alike
    for attempt, cap in [(1, 0.05), (3, 0.2), (20, 5.0)]:
        delays = [retry_delay(httpx.Response(429), attempt, rng) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays) and len(set(delays)) > 1
    garbage = httpx.Response(429, headers={"Retry-After": "soon"})
    assert 0.025 <= retry_delay(garbage, 1, rng) <= 0.05


def test_which_transport_errors_prove_the_request_never_left():
    import httpx

    from reporting.sms import NEVER_LEFT

    request = httpx.Request("POST", "http://127.0.0.1/messages")
    for safe in (httpx.ConnectError("refused", request=request), httpx.ConnectTimeout("t", request=request),
                 httpx.PoolTimeout("t", request=request)):
        assert isinstance(safe, NEVER_LEFT)
    for ambiguous in (httpx.ReadTimeout("t", request=request), httpx.WriteTimeout("t", request=request),
                      httpx.RemoteProtocolError("closed", request=request), httpx.ReadError("r", request=request)):
        assert not isinstance(ambiguous, NEVER_LEFT)
