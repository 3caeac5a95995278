"""The notify room (issue 16.3): SMS providers behind one protocol, found by name in one
registry (``notify.PROVIDERS``) that the configuration checks against; the sender's retry and
transport rules; Aliyun's encoding. The providers against a real HTTP gateway on loopback:
tests/flows/test_sms_flow.py and tests/faults/test_sms_exactly_once.py."""

from __future__ import annotations

import random
from kernel.config import replace

import httpx
import pytest

from notify import PROVIDERS, Message, MissingCredentials, SendResult, SmsProvider, provider_for
from notify.aliyun import AliyunProvider, aliyun_percent
from notify.sending import NEVER_LEFT, retry_delay, send_messages
from notify.twilio import TwilioProvider
from notify.webhook import WebhookProvider
from kernel.config import ConfigError, SmsConfig, load_config
from tests.conftest import write

CREDENTIALS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "ALIBABA_CLOUD_ACCESS_KEY_ID",
               "ALIBABA_CLOUD_ACCESS_KEY_SECRET")


def test_the_registry_names_each_provider_once_and_each_follows_the_protocol(monkeypatch):
    for name in CREDENTIALS:
        monkeypatch.setenv(name, "test-value")
    assert PROVIDERS == {"webhook": WebhookProvider, "twilio": TwilioProvider, "aliyun": AliyunProvider}
    for name in PROVIDERS:
        provider = provider_for(replace(SmsConfig(), provider=name))
        assert isinstance(provider, SmsProvider) and provider.name == name


def test_a_provider_without_its_credentials_is_refused_naming_the_variables(monkeypatch):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    assert isinstance(provider_for(SmsConfig()), WebhookProvider)  # the webhook needs none
    with pytest.raises(MissingCredentials, match=r"\$TWILIO_ACCOUNT_SID and \$TWILIO_AUTH_TOKEN"):
        provider_for(replace(SmsConfig(), provider="twilio"))
    with pytest.raises(MissingCredentials, match=r"\$ALIBABA_CLOUD_ACCESS_KEY_ID"):
        provider_for(replace(SmsConfig(), provider="aliyun"))
    with pytest.raises(ConfigError, match=r"sms\.provider: expected webhook, twilio or aliyun, got 'pigeon'"):
        provider_for(replace(SmsConfig(), provider="pigeon"))


def test_the_configuration_allows_exactly_the_registrys_names(tmp_path, monkeypatch):
    from notify import check_provider

    for name in PROVIDERS:
        check_provider(load_config(write(tmp_path / f"{name}.toml", f'[sms]\nprovider = "{name}"\n')).sms)
    bad = write(tmp_path / "pigeon.toml", '[sms]\nprovider = "pigeon"\n')
    with pytest.raises(ConfigError, match=r"sms\.provider: expected webhook, twilio or aliyun, got 'pigeon'"):
        check_provider(load_config(bad).sms)
    monkeypatch.setitem(PROVIDERS, "pigeon", PigeonProvider)  # the one line a new provider adds
    check_provider(load_config(bad).sms)


def test_the_cli_refuses_an_unknown_provider_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = write(tmp_path / "pigeon.toml", '[sms]\nprovider = "pigeon"\n')
    done = subprocess.run([sys.executable, "-m", "tubetrail.cli", "--config", str(bad), "--warehouse",
                           str(tmp_path / "w.duckdb"), "sms", "send", "--round", "R1", "--dry-run"],
                          capture_output=True, text=True, env={**__import__("os").environ,
                                                                "TUBETRAIL_ID_HASH_KEY": "k" * 32})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["tubetrail: configuration error: sms.provider: expected webhook, twilio or aliyun, got 'pigeon'"]


class PigeonProvider:
    """A toy provider: takes every message but numbers ending in 0, never touches the network."""

    name = "pigeon"

    def __init__(self, sms) -> None:
        self.sms = sms

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        status = 400 if message.phone.endswith("0") else 201
        return httpx.Response(status, json={"ring": f"p-{message.message_id}"},
                              request=httpx.Request("POST", "pigeon://loft"))

    def verdict(self, response: httpx.Response):
        if response.is_success:
            return "sent", response.json()["ring"], None, False
        return "failed", None, "invalid_number (pigeon)", False

    def lookup(self, client: httpx.Client, message: Message):
        return None, None


def test_a_registered_provider_is_made_by_name_and_sent_through(monkeypatch):
    monkeypatch.setitem(PROVIDERS, "pigeon", PigeonProvider)
    sms = replace(SmsConfig(), provider="pigeon", rate_per_second=1000.0)
    provider = provider_for(sms)
    assert isinstance(provider, PigeonProvider) and isinstance(provider, SmsProvider)
    results = send_messages([Message("m1", "+8613800138001", "hi"), Message("m2", "+8613800138000", "hi")],
                            provider, sms, sleep=lambda _: None, rng=random.Random(1))
    assert results == [SendResult("m1", "sent", 1, "p-m1", None, False),
                       SendResult("m2", "failed", 1, None, "invalid_number (pigeon)", False)]


def test_aliyun_percent_encoding_and_numbers():
    assert aliyun_percent("a b*c~d/é") == "a%20b%2Ac~d%2F%C3%A9"
    assert AliyunProvider.number("+8613800138000") == "13800138000"
    assert AliyunProvider.number("+85291234567") == "0085291234567"


def test_retry_after_in_seconds_or_as_an_http_date_with_jitter_and_backoff_with_jitter():
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
    request = httpx.Request("POST", "http://127.0.0.1/messages")
    for safe in (httpx.ConnectError("refused", request=request), httpx.ConnectTimeout("t", request=request),
                 httpx.PoolTimeout("t", request=request)):
        assert isinstance(safe, NEVER_LEFT)
    for ambiguous in (httpx.ReadTimeout("t", request=request), httpx.WriteTimeout("t", request=request),
                      httpx.RemoteProtocolError("closed", request=request), httpx.ReadError("r", request=request)):
        assert not isinstance(ambiguous, NEVER_LEFT)
