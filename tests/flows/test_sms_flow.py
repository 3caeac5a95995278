"""SMS reminders end to end against the real Prefect server and a real HTTP gateway on loopback
that answers like each provider: due counts, quiet hours, 429 and 500 retried, exactly one
message per person across re-runs and a sender killed halfway, 10,000 reminders with none lost,
and Twilio requests valid against Twilio's own OpenAPI description."""

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from ingest.take import take_file
from tests.conftest import REPO, write
from tests.builders import REGISTER_HEADER, open_test_round, register_row, ric
from kernel.secrets import id_hash_key
from devtools.sms_gateway import LoopbackGateway
from warehouse.connection import open_warehouse
from ingest.discover import discover

pytestmark = pytest.mark.usefixtures("prefect_server")
SH = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")
MORNING = datetime(2022, 4, 4, 10, 0, tzinfo=SH)


def phone(i: int) -> str:
    return f"+86138{i:08d}"


def city(tmp_path: Path, cfg, people: int, *, no_phone: int = 0) -> list[str]:
    """``people`` registered, all untested in round R1; the last ``no_phone`` have no phone."""
    born = [date(1985, 1, 1) + timedelta(days=i // 1000) for i in range(people)]
    numbers = [ric(f"310101{b:%Y%m%d}{i % 1000:03d}") for i, b in zip(range(people), born)]
    rows = [register_row(n, phone="" if i >= people - no_phone else phone(i)[3:]) for i, n in enumerate(numbers)]
    inbox = tmp_path / "inbox"
    write(inbox / "sites/s.csv", "site_id,name,district,subdistrict,community,kind,opens,closes\n"
                                 "S1,外滩小学采样点,黄浦区,外滩街道,中山居委,fixed,08:00,20:00\n"
                                 "H1,上门队,黄浦区,外滩街道,中山居委,home,,\n")
    write(inbox / "register/r.csv", REGISTER_HEADER + "\n" + "\n".join(rows) + "\n")
    for f in discover(inbox):
        assert take_file(f, cfg).status == "accepted"
    open_test_round(cfg)
    return numbers


def config_file(tmp_path: Path, url: str, provider: str = "webhook", rate: float = 5000.0,
                timeout: float = 5.0, lease: float = 300.0) -> str:
    """Ambiguous answers are looked up by the next run at once (settle_seconds = 0)."""
    path = tmp_path / "tubetrail.toml"
    path.write_text(f'[sms]\nprovider = "{provider}"\nbase_url = "{url}"\nrate_per_second = {rate}\n'
                    f'max_attempts = 4\ntimeout_seconds = {timeout}\nlease_seconds = {lease}\n'
                    f'settle_seconds = 0.0\n', encoding="utf-8")
    return str(path)


def free_dead_writers_slot(cfg) -> None:
    """Do what a Prefect server's repossessor does with the write slot's lease of a killed holder
    (the test harness's ephemeral server runs no such service): every sender is dead here, so
    none holds the slot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(cfg.warehouse.write_limit, GlobalConcurrencyLimitUpdate(active_slots=0))


def outbox(cfg) -> dict[str, int]:
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        return dict(con.sql("SELECT state, count(*) FROM sms_outbox GROUP BY 1").fetchall())


def test_due_counts_quiet_hours_and_the_text(tmp_path, cfg):
    from flows.sms import sms_reminders

    city(tmp_path, cfg, 5, no_phone=1)
    with LoopbackGateway() as gateway:
        conf = config_file(tmp_path, gateway.url)
        night = sms_reminders("R1", False, datetime(2022, 4, 4, 21, 30, tzinfo=SH), conf, cfg.warehouse.path)
        assert night["counts"]["quiet_hours"] == 4 and night["sent"] == 0 and not gateway.state.deliveries
        dry = sms_reminders("R1", True, MORNING, conf, cfg.warehouse.path)
        assert (dry["counts"]["due"], dry["counts"]["no_phone"], dry["sent"]) == (4, 1, 0)
        assert outbox(cfg) == {} and not gateway.state.deliveries  # a dry run writes and sends nothing
        sent = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    assert sent["sent"] == 4 and sorted(gateway.state.per_phone()) == [phone(i) for i in range(4)]
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        body = con.sql("SELECT DISTINCT body FROM sms_outbox").fetchall()
    assert body == [("【核酸筛查】您尚未完成本轮（R1）核酸检测，请于04月04日22:00前到外滩小学采样点采样。",)]


def test_retries_errors_opt_outs_and_exactly_once_on_a_second_run(tmp_path, cfg):
    from flows.sms import sms_reminders

    city(tmp_path, cfg, 20)
    with LoopbackGateway(fail_statuses=[429, 500, 503], invalid_numbers={phone(3)},
                         opted_out_numbers={phone(4)}) as gateway:
        conf = config_file(tmp_path, gateway.url)
        first = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
        second = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    # 429 is retried at once; after 500 and 503 the message may have been taken: unknown, not re-sent
    # blindly; the second run looks both up at the gateway (not taken) and sends them
    assert (first["sent"], first["failed"], first["unknown"]) == (16, 2, 2)
    assert second["looked_up"] == {"sent": 0, "failed": 0, "pending": 2, "unknown": 0}
    assert second["sent"] == 2 and second["counts"]["cooled_down"] == 19 and second["counts"]["opted_out"] == 1
    assert gateway.state.per_phone() == {phone(i): 1 for i in range(20) if i not in (3, 4)}
    assert gateway.state.duplicates == 0
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        errors = dict(con.sql("SELECT phone, error FROM sms_outbox WHERE state = 'failed'").fetchall())
        optouts = con.sql("SELECT count(*) FROM sms_optouts").fetchall()
    assert errors == {phone(3): "invalid_number", phone(4): "opted_out"} and optouts == [(1,)]


def test_a_message_the_provider_kept_refusing_is_sent_by_the_next_run(tmp_path, cfg):
    from flows.sms import sms_reminders

    city(tmp_path, cfg, 3)
    with LoopbackGateway(fail_statuses=[429] * 4) as gateway:  # max_attempts = 4: the first message gives up
        conf = config_file(tmp_path, gateway.url)
        first = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
        assert (first["sent"], first["failed"], first["retry_next_run"]) == (2, 0, 1)
        assert outbox(cfg) == {"sent": 2, "pending": 1}
        second = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    assert (second["sent"], second["counts"]["cooled_down"]) == (1, 3)
    assert gateway.state.per_phone() == {phone(i): 1 for i in range(3)}


def test_a_sender_killed_halfway_and_run_again_sends_each_person_one_message(tmp_path, cfg, prefect_server):
    people = 300
    city(tmp_path, cfg, people)
    with LoopbackGateway(delay_seconds=0.01) as gateway:
        # the killed sender's claims are looked up once its lease (4 s) has run out
        conf = config_file(tmp_path, gateway.url, timeout=1.0, lease=4.0)
        # the session's server: without an API URL the CLI would start a temporary server of
        # its own, which the SIGKILL below would leave running after the tests
        env = {**os.environ, "PREFECT_API_URL": prefect_server}
        argv = [sys.executable, "-m", "tubetrail.cli", "--config", conf, "--warehouse", str(cfg.warehouse.path),
                "sms", "send", "--round", "R1", "--as-of", MORNING.isoformat()]
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(gateway.state.deliveries) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        halfway = len(gateway.state.deliveries)
        assert 60 <= halfway < people
        free_dead_writers_slot(cfg)
        time.sleep(5.0)  # past the dead sender's lease: the warehouse's clock decides, not this one
        again = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
    assert gateway.state.per_phone() == {phone(i): 1 for i in range(people)}
    assert outbox(cfg) == {"sent": people}


def test_ten_thousand_reminders_none_lost(tmp_path, cfg):
    from flows.sms import sms_reminders

    people = 10_000
    city(tmp_path, cfg, people)
    with LoopbackGateway(fail_statuses=[500, 429, 503]) as gateway:
        result = sms_reminders("R1", False, MORNING, config_file(tmp_path, gateway.url), cfg.warehouse.path)
        assert (result["sent"], result["failed"], result["unknown"]) == (people - 2, 0, 2)
        again = sms_reminders("R1", False, MORNING, config_file(tmp_path, gateway.url), cfg.warehouse.path)
    assert again["looked_up"]["pending"] == 2 and again["sent"] == 2
    assert len(gateway.state.per_phone()) == people and set(gateway.state.per_phone().values()) == {1}
    assert outbox(cfg) == {"sent": people}


def test_twilio_requests_validate_against_twilios_openapi_description(tmp_path, cfg, shared_dir, monkeypatch):
    from openapi_core import OpenAPI
    from openapi_core.datatypes import RequestParameters
    from werkzeug.datastructures import Headers, ImmutableMultiDict

    from flows.sms import sms_reminders

    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "test-token")
    city(tmp_path, cfg, 4)
    with LoopbackGateway(invalid_numbers={phone(1)}, opted_out_numbers={phone(2)}) as gateway:
        result = sms_reminders("R1", False, MORNING, config_file(tmp_path, gateway.url, "twilio"), cfg.warehouse.path)
    assert (result["sent"], result["failed"]) == (2, 2)
    import json

    spec = OpenAPI.from_dict(json.loads((shared_dir / "specs" / "twilio_api_v2010.json").read_text(encoding="utf-8")))

    class Raw:
        def __init__(self, raw):
            self.host_url = "https://api.twilio.com"
            self.path = raw["path"]
            self.method = "post"
            self.parameters = RequestParameters(query=ImmutableMultiDict(), header=Headers(raw["headers"]),
                                                cookie=ImmutableMultiDict(), path={})
            self.content_type = raw["headers"].get("Content-Type", "")
            self.body = raw["body"]

    assert len(gateway.state.raw_requests) == 4
    for raw in gateway.state.raw_requests:
        spec.validate_request(Raw(raw))  # raises on any mismatch with CreateMessage
    # the check bites: the same request without its required To is refused by the description
    broken = {**gateway.state.raw_requests[0], "body": b"From=tubetrail&Body=hello"}
    with pytest.raises(Exception, match="To|required|Missing"):
        spec.validate_request(Raw(broken))


def test_aliyun_send_batch_sms_signed_with_template_variables(tmp_path, cfg, monkeypatch):
    import json

    from flows.sms import sms_reminders

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-loopback")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "loopback-secret")
    city(tmp_path, cfg, 4)
    with LoopbackGateway(aliyun_throttled=2, invalid_numbers={phone(1)}, opted_out_numbers={phone(2)}) as gateway:
        result = sms_reminders("R1", False, MORNING, config_file(tmp_path, gateway.url, "aliyun"), cfg.warehouse.path)
    assert (result["sent"], result["failed"]) == (2, 2)  # throttled twice, retried; one illegal, one blacklisted
    assert gateway.state.per_phone() == {phone(0): 1, phone(3): 1}
    form = gateway.state.raw_requests[0]["form"]
    assert json.loads(form["TemplateParamJson"]) == [{"round_id": "R1", "deadline": "04月04日22:00",
                                                       "site_name": "外滩小学采样点"}]
    assert json.loads(form["PhoneNumberJson"])[0] in {"13800000000", "13800000003"}  # +86 dropped
    assert form["TemplateCode"] == "SMS_000000000" and json.loads(form["SignNameJson"]) == ["tubetrail"]
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        assert con.sql("SELECT count(*) FROM sms_optouts").fetchall() == [(1,)]


SECRET = "s3cret-token-never-shown"
ACCOUNT_REFUSALS = [  # provider, gateway options, environment, what the one line names
    ("webhook", {"account_refusal": "yes"}, {}, "webhook HTTP 401"),
    ("twilio", {"twilio_sid": "AC" + "1" * 32}, {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": SECRET},
     "Twilio 20003 (HTTP 401)"),
    ("aliyun", {}, {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-loopback", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET},
     "Aliyun SignatureDoesNotMatch"),
    ("aliyun", {"account_refusal": "isv.AMOUNT_NOT_ENOUGH"},
     {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-loopback", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "loopback-secret"},
     "Aliyun isv.AMOUNT_NOT_ENOUGH"),
    ("aliyun", {"account_refusal": "isv.DAY_LIMIT_CONTROL"},
     {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-loopback", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "loopback-secret"},
     "Aliyun isv.DAY_LIMIT_CONTROL"),
]


def assert_untouched(cfg, people: int) -> None:
    """Every message still pending, its claim released, nobody marked failed or opted out."""
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        assert con.sql("SELECT state, count(*), count(claimed_by), count(lease_until) FROM sms_outbox"
                       " GROUP BY 1").fetchall() == [("pending", people, 0, 0)]
        assert con.sql("SELECT count(*) FROM sms_optouts").fetchall() == [(0,)]


@pytest.mark.parametrize(("provider", "options", "env", "named"), ACCOUNT_REFUSALS,
                         ids=[f"{p}-{n.split()[1]}" for p, _, _, n in ACCOUNT_REFUSALS])
def test_an_account_refusal_stops_the_cli_with_exit_2_and_one_line(tmp_path, cfg, prefect_server, provider, options,
                                                                   env, named):
    people = 6
    city(tmp_path, cfg, people)
    with LoopbackGateway(**options) as gateway:
        conf = config_file(tmp_path, gateway.url, provider)
        argv = [sys.executable, "-m", "tubetrail.cli", "--config", conf, "--warehouse", str(cfg.warehouse.path),
                "sms", "send", "--round", "R1", "--as-of", MORNING.isoformat()]
        done = subprocess.run(argv, cwd=REPO, env={**os.environ, **env, "PREFECT_API_URL": prefect_server},
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if line.startswith("SMS provider")]  # the CLI's own line
    assert len(said) == 1 and said[0].startswith(f"SMS provider {provider} refused the account: {named}")
    assert "pending" in said[0]
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert "+86138" not in done.stderr + done.stdout  # no number either
    assert gateway.state.requests == 1 and not gateway.state.deliveries  # stopped at the first refusal
    assert_untouched(cfg, people)


def test_an_account_refusal_fails_the_flow_run_and_marks_nobody(tmp_path, cfg, prefect_server, monkeypatch):
    from prefect.client.orchestration import get_client

    from flows.sms import sms_reminders
    from notify import AccountRefused

    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    people = 4
    city(tmp_path, cfg, people)
    with LoopbackGateway(twilio_sid="AC" + "1" * 32) as gateway:
        conf = config_file(tmp_path, gateway.url, "twilio")
        with pytest.raises(AccountRefused, match="Twilio 20003"):
            sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
        assert_untouched(cfg, people)
        # the refusal is over (fixed credentials): the next run sends every message, once
        gateway.state.twilio_sid = None
        again = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    assert again["sent"] == people and gateway.state.per_phone() == {phone(i): 1 for i in range(people)}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    states = sorted(r.state.type.value for r in runs if r.name == "sms reminders R1" and r.state)
    assert "FAILED" in states


def test_a_sweep_acts_on_the_open_round_only_and_never_after_its_deadline(tmp_path, cfg):
    """Issue 13.1: the next morning a sweep without --round took the latest started round and
    sent "请于04月04日22:00前…", 11 h past; the served cron sweep judged a replayed round as of now."""
    from flows.sms import sms_reminders

    city(tmp_path, cfg, 3)
    with LoopbackGateway() as gateway:
        conf = config_file(tmp_path, gateway.url)
        next_morning = datetime(2022, 4, 5, 9, 0, tzinfo=SH)
        assert sms_reminders(None, False, next_morning, conf, cfg.warehouse.path)["round_id"] is None
        named = sms_reminders("R1", False, next_morning, conf, cfg.warehouse.path)
        assert named["counts"]["after_deadline"] == 3 and named["sent"] == 0
        assert sms_reminders(None, False, None, conf, cfg.warehouse.path)["round_id"] is None  # the wall clock: 2026
        assert not gateway.state.deliveries and outbox(cfg) == {}
        assert sms_reminders(None, False, MORNING, conf, cfg.warehouse.path)["sent"] == 3  # the open round
